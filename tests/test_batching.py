"""Batch planning and out-of-memory splitting: pure functions, no model."""

from __future__ import annotations

import random

import pytest
import torch

from zerank_integrations.base import rank_scores
from zerank_integrations.scoring.batching import (
    CostModel,
    DeviceSpeed,
    device_speed,
    padded_slots,
    plan,
    plan_batches,
    reuse_plan,
    run_splitting_on_oom,
)


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
    batches = plan_batches([1] * 1000, 1_000_000, cost=CostModel.in_tokens(10**6), max_batch_size=300)
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
    few = plan_batches(lengths, 100_000, cost=CostModel.in_tokens(100_000))
    many = plan_batches(lengths, 100_000, cost=CostModel.in_tokens(0))
    assert len(few) == 1 and len(many) == len(lengths)


def _brute_force(lengths: list[int], budget: int, cost: CostModel, context: int = 0) -> float:
    """The cheapest cut of the length-sorted rows into contiguous batches, by trying every cut."""
    ordered = sorted(lengths, reverse=True)
    best = float("inf")
    for mask in range(1 << (len(ordered) - 1)):
        batches, current = [], [ordered[0]]
        for i, length in enumerate(ordered[1:]):
            if mask >> i & 1:
                batches.append(current)
                current = []
            current.append(length)
        batches.append(current)
        slots = [sum(b) if cost.packed else len(b) * max(b) for b in batches]
        if all(s <= budget or len(b) == 1 for s, b in zip(slots, batches, strict=True)):
            best = min(best, sum(cost.seconds(b, context) for b in batches))
    return best


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_plan_is_the_cheapest_cut_under_the_cost_model(seed: int, packed: bool) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(5, 400) for _ in range(rng.randint(2, 11))]
    cost = CostModel(
        call_seconds=rng.choice([0.0, 1e-3, 5e-2]), token_seconds=1e-5, context_seconds=1e-8, packed=packed
    )
    context = rng.choice([0, 300])
    result = plan(lengths, 1500, cost=cost, context=context)
    assert sorted(i for batch in result.batches for i in batch) == list(range(len(lengths)))
    # The reported cost is the sum over its batches, and no cut of the sorted rows is cheaper.
    expected = sum(cost.seconds([lengths[i] for i in batch], context) for batch in result.batches)
    assert result.seconds == pytest.approx(expected, rel=1e-9)
    assert result.seconds == pytest.approx(_brute_force(lengths, 1500, cost, context), rel=1e-9)


def test_cost_of_a_pass() -> None:
    causal = CostModel(call_seconds=1.0, token_seconds=0.1, context_seconds=0.001)
    # Padded: 3 rows of the longest (4): 12 slots; each row attends to 2 prefix positions + 4*5/2 own pairs.
    assert causal.seconds([4, 2, 1], context=2) == pytest.approx(1.0 + 12 * 0.1 + 3 * (4 * 2 + 10) * 0.001)
    packed = CostModel(call_seconds=1.0, token_seconds=0.1, context_seconds=0.001, packed=True, causal=False)
    assert packed.seconds([4, 2]) == pytest.approx(1.0 + 6 * 0.1 + (16 + 4) * 0.001)
    assert causal.seconds([]) == 0.0 and causal.overhead_tokens == pytest.approx(10.0)


def test_estimate_from_the_model_shape() -> None:
    speed = DeviceSpeed(flops=2e9, call_seconds=1e-3, layer_seconds=1e-4, bytes_per_second=1e8, half_width=256)
    cost = CostModel.estimate(
        speed,
        parameters=5_000_000,
        weight_bytes=20_000_000,
        layers=4,
        hidden_size=256,  # half of the peak at this width: 1 GFLOP/s
        attention_width=256,
        causal=False,
    )
    assert cost.call_seconds == pytest.approx(1e-3 + 4 * 1e-4 + 0.2)
    assert cost.token_seconds == pytest.approx(2 * 5e6 / 1e9)
    assert cost.context_seconds == pytest.approx(4 * 256 * 4 / 1e9)
    assert not cost.causal and not cost.packed
    gpu = device_speed("cuda", half=True, multiprocessors=132)
    assert gpu.flops > 100 * device_speed("cpu").flops and device_speed("cuda", multiprocessors=132).flops < gpu.flops


def _shape_cost(width: int, layers: int) -> CostModel:
    """A CPU cost model of a Qwen3-like body of this width and depth (MLP 3x as wide)."""
    parameters = layers * (4 * width * width + 3 * width * 3 * width)
    return CostModel.estimate(
        device_speed("cpu"),
        parameters=parameters,
        weight_bytes=4 * parameters,
        layers=layers,
        hidden_size=width,
        attention_width=width,
    )


def test_small_models_get_fewer_larger_batches_than_large_ones() -> None:
    """On a CPU the fixed cost of a pass is worth ~150 tokens for a 64-wide 2-layer model, ~35 for a 2560-wide
    one: the same pairs are cut into fewer passes for the first and padded less for the second."""
    rng = random.Random(3)
    lengths = [rng.randint(150, 520) for _ in range(20)]
    tiny, big = _shape_cost(64, 2), _shape_cost(2560, 36)
    assert tiny.overhead_tokens > 100 and big.overhead_tokens < 50
    few, many = plan_batches(lengths, 4096, cost=tiny), plan_batches(lengths, 4096, cost=big)
    assert len(few) <= 6 and len(many) > len(few)
    padding = [sum(padded_slots(lengths, b) for b in plan_) - sum(lengths) for plan_ in (few, many)]
    assert padding[1] < padding[0]


def test_prefix_reuse_is_decided_by_estimated_cost() -> None:
    tiny, big = _shape_cost(64, 2), _shape_cost(2560, 36)
    documents = [300 - 5 * i for i in range(20)]
    # A 60-token prefix on three documents: the extra pass costs a tiny model more than the 120 tokens it
    # saves, a big one less.
    assert reuse_plan(60, documents[:3], 4096, cost=tiny) is None
    assert reuse_plan(60, documents[:3], 4096, cost=big) is not None
    # A long prefix, or many documents, pays on both; a short prefix on two documents on neither.
    for cost in (tiny, big):
        assert reuse_plan(400, documents[:4], 4096, cost=cost) is not None
        assert reuse_plan(20, documents, 4096, cost=cost) is not None
        assert reuse_plan(20, documents[:2], 4096, cost=cost) is None
    # Forced reuse, and never for a lone document.
    assert reuse_plan(20, documents[:2], 4096, cost=tiny, always=True) is not None
    assert reuse_plan(400, documents[:1], 4096, cost=big, always=True) is None
    chosen = reuse_plan(400, documents[:4], 4096, cost=big)
    assert chosen is not None and sorted(i for b in chosen.batches for i in b) == [0, 1, 2, 3]


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
