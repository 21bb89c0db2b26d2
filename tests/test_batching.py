"""Batch planning and out-of-memory splitting: pure functions, no model."""

from __future__ import annotations

import random

import pytest
import torch

from zerank_integrations.base import rank_scores
from zerank_integrations.scoring.batching import padded_slots, plan_batches, run_splitting_on_oom


@pytest.mark.parametrize("seed", range(5))
def test_plan_covers_every_item_once_within_budget(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(5, 600) for _ in range(rng.randint(1, 300))]
    budget = 4096
    batches = plan_batches(lengths, budget)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert padded_slots(lengths, batch) <= budget
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    real = sum(lengths)
    slots = sum(padded_slots(lengths, b) for b in batches)
    assert real / slots >= 0.95


def test_rows_per_batch_are_capped() -> None:
    batches = plan_batches([1] * 1000, 1_000_000, batch_overhead_tokens=10**6, max_batch_size=300)
    assert len(batches) == 4 and max(len(b) for b in batches) == 300 and sum(map(len, batches)) == 1000


def test_oversized_item_gets_its_own_batch() -> None:
    batches = plan_batches([10, 5000, 10], 1000)
    assert batches[0] == [1] and sorted(batches[1]) == [0, 2]


def test_plan_rejects_bad_budget_and_handles_empty() -> None:
    assert plan_batches([], 100) == []
    with pytest.raises(ValueError, match="batch_tokens must be >= 1"):
        plan_batches([1], 0)


def test_overhead_trades_padding_for_fewer_batches() -> None:
    lengths = list(range(100, 300))
    few = plan_batches(lengths, 100_000, batch_overhead_tokens=100_000)
    many = plan_batches(lengths, 100_000, batch_overhead_tokens=0)
    assert len(few) == 1 and len(many) == len(lengths)


def test_oom_split_keeps_order_and_reraises_single() -> None:
    calls: list[int] = []

    def run(items):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        if len(items) > 2:
            raise torch.OutOfMemoryError("out of memory")
        return [float(x) * 10 for x in items]

    def is_oom(error: BaseException) -> bool:
        return isinstance(error, torch.OutOfMemoryError)

    assert run_splitting_on_oom(list(range(7)), run, is_oom) == [float(x) * 10 for x in range(7)]
    assert calls[0] == 7

    def always(items):  # type: ignore[no-untyped-def]
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        run_splitting_on_oom([1, 2], always, is_oom)

    def broken(items):  # type: ignore[no-untyped-def]
        raise KeyError("not memory")

    with pytest.raises(KeyError):
        run_splitting_on_oom([1, 2, 3], broken, is_oom)


def test_rank_scores_threshold_then_top_n_and_nan_last() -> None:
    scores = [0.2, 0.9, float("nan"), 0.9, 0.5]
    assert [i for i, _ in rank_scores(scores)] == [1, 3, 4, 0, 2]
    assert [i for i, _ in rank_scores(scores, top_n=2)] == [1, 3]
    assert [i for i, _ in rank_scores(scores, score_threshold=0.4)] == [1, 3, 4]
    assert [i for i, _ in rank_scores(scores, top_n=1, score_threshold=0.95)] == []
    with pytest.raises(TypeError, match="top_n must be an int"):
        rank_scores(scores, top_n=True)
