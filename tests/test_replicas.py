"""One replica per device: batches spread over the replicas of one scorer, scores as from one device.

There is no GPU here, so the scheduling is checked with two CPU replicas (``device=["cpu", "cpu"]``): two
independent copies of the weights, each with its own forward lock, run by one worker thread each.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from zerank_integrations import ZerankScorer
from zerank_integrations.scoring import loaded_models
from zerank_integrations.scoring.loading import resolve_devices

LONG_QUERY = "how does " + "very " * 150 + "long context change the answer"


@pytest.fixture(scope="module")
def pair_scorer(checkpoint_dir: Path) -> ZerankScorer:
    """Two CPU replicas; a small budget so that one call makes many batches of full prompts."""
    return ZerankScorer(
        str(checkpoint_dir), device=["cpu", "cpu"], batch_tokens=600, max_length=512, prefix_reuse=False
    )


class Spy:
    """Records which replica ran each forward call (and in which thread), then runs the real forward."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, scorer: ZerankScorer) -> None:
        self.calls: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()
        for index, replica in enumerate(scorer._replicas):
            for method in ("full", "encode_prefix", "after_prefix"):
                monkeypatch.setattr(
                    replica.forward, method, self._wrap(index, method, getattr(replica.forward, method))
                )

    def _wrap(self, index, method, real):  # type: ignore[no-untyped-def]
        def spy(*args):  # type: ignore[no-untyped-def]
            with self._lock:
                self.calls.append((index, method, threading.current_thread().name))
            return real(*args)

        return spy

    def count(self, method: str) -> Counter[int]:
        return Counter(index for index, name, _ in self.calls if name == method)


def test_replicas_are_independent_copies(pair_scorer: ZerankScorer) -> None:
    first, second = pair_scorer._replicas
    assert pair_scorer.devices == (torch.device("cpu"), torch.device("cpu")) and pair_scorer.device.type == "cpu"
    assert first is pair_scorer.loaded_model and first.key.replica == 0 and second.key.replica == 1
    assert first.forward.body is not second.forward.body and first.forward.lock is not second.forward.lock
    weight = next(first.forward.body.parameters())
    assert weight.data_ptr() != next(second.forward.body.parameters()).data_ptr()
    assert {first.key, second.key} <= set(loaded_models())


def test_batches_spread_over_replicas_with_the_scores_of_one_device(
    checkpoint_dir: Path, pair_scorer: ZerankScorer, passages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    single = ZerankScorer(str(checkpoint_dir), batch_tokens=600, max_length=512, prefix_reuse=False)
    pairs = [("What causes cancer?", doc) for doc in passages] + [("cell biology", doc) for doc in passages[:12]]
    with pytest.warns(UserWarning, match="shortened"):
        expected = single.score_pairs(pairs, raw=True)
    spy = Spy(monkeypatch, pair_scorer)
    before = pair_scorer.stats
    with pytest.warns(UserWarning, match="shortened"):
        got = pair_scorer.score_pairs(pairs, raw=True)
    assert got == expected  # the same batches on an identical copy: bit for bit
    work = pair_scorer.stats - before
    ran = spy.count("full")
    # Both replicas ran batches, from their own worker threads, and every batch ran once.
    assert ran[0] >= 1 and ran[1] >= 1 and sum(ran.values()) == work.forward_passes >= 6
    assert len({thread for _, _, thread in spy.calls}) == 2
    assert all(thread.startswith("zerank-replica") for _, _, thread in spy.calls)


def test_prefix_reuse_on_replicas_encodes_the_prefix_once_per_replica(
    checkpoint_dir: Path, pair_scorer: ZerankScorer, passages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reuse = ZerankScorer(str(checkpoint_dir), device=["cpu", "cpu"], batch_tokens=600, prefix_reuse=True)
    plain = ZerankScorer(str(checkpoint_dir), batch_tokens=600, prefix_reuse=False)
    expected = plain.score(LONG_QUERY, passages[:12], raw=True)
    spy = Spy(monkeypatch, reuse)
    before = reuse.stats
    got = reuse.score(LONG_QUERY, passages[:12], raw=True)
    assert got == pytest.approx(expected, abs=1e-4)
    encoded, continued = spy.count("encode_prefix"), spy.count("after_prefix")
    assert spy.count("full") == Counter()
    # Each replica that ran rows of the query encoded its prefix exactly once.
    assert set(encoded) == set(continued) and all(n == 1 for n in encoded.values())
    assert sum(continued.values()) >= 4 and len(continued) == 2
    assert (reuse.stats - before).forward_passes == sum(encoded.values()) + sum(continued.values())


def test_a_failing_replica_fails_the_call_and_leaves_the_scorer_usable(
    pair_scorer: ZerankScorer, passages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [doc[:300] for doc in passages]
    expected = pair_scorer.score("cell", docs)
    broken = pair_scorer._replicas[1].forward

    def fail(rows):  # type: ignore[no-untyped-def]
        raise RuntimeError("replica 1 is broken")

    monkeypatch.setattr(broken, "full", fail)
    with pytest.raises(RuntimeError, match="replica 1 is broken"):
        pair_scorer.score("cell", docs)
    monkeypatch.undo()
    assert pair_scorer.score("cell", docs) == pytest.approx(expected, abs=1e-6)


def test_out_of_memory_on_a_replica_splits_there(
    pair_scorer: ZerankScorer, passages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = [doc[:400] for doc in passages]
    expected = pair_scorer.score("cell", docs)
    small = pair_scorer._replicas[1].forward
    real = small.full
    served: list[int] = []

    def full_with_small_memory(rows):  # type: ignore[no-untyped-def]
        if len(rows) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        served.append(len(rows))
        return real(rows)

    monkeypatch.setattr(small, "full", full_with_small_memory)
    assert pair_scorer.score("cell", docs) == pytest.approx(expected, abs=1e-5)
    assert served  # replica 1 got work and scored it one row at a time


def test_device_lists_are_read_and_checked() -> None:
    assert resolve_devices(["cpu", "cpu"]) == [torch.device("cpu")] * 2
    assert resolve_devices("cpu, cpu") == [torch.device("cpu")] * 2
    assert resolve_devices("cpu") == [torch.device("cpu")]
    assert resolve_devices(None) == [torch.device("cpu")]  # this machine has no accelerator
    with pytest.raises(ValueError, match="device list is empty"):
        resolve_devices([])
    with pytest.raises(ValueError, match="one kind of device"):
        resolve_devices(["cpu", "meta"])
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_devices(["cuda:0", "cuda:1"])
