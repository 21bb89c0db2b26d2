"""Which pairs share a forward pass: pure functions, testable without a model.

A forward pass costs roughly (rows x longest row) token slots plus a fixed overhead. Sorting by length and
cutting the sorted list optimally (dynamic programming over contiguous runs) keeps padding near zero while
respecting a token budget, so memory stays bounded whatever the mix of lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def plan_batches(
    lengths: Sequence[int], batch_tokens: int, *, batch_overhead_tokens: int = 64, max_batch_size: int = 512
) -> list[list[int]]:
    """Group indices into batches, longest first, each within ``batch_tokens`` padded slots.

    Minimises ``sum(rows * longest + batch_overhead_tokens)`` over contiguous runs of the length-sorted
    order. A single item longer than the budget gets a batch of its own (it must be scored anyway). At most
    ``max_batch_size`` rows per batch, which also bounds the planning work to O(n * max_batch_size).
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    n = len(order)
    if n == 0:
        return []
    sorted_lengths = [max(1, lengths[i]) for i in order]
    best = [0.0] * (n + 1)  # best[i]: cheapest plan for order[i:]
    cut = [n] * (n + 1)
    for start in range(n - 1, -1, -1):
        longest = sorted_lengths[start]  # descending order: the first row is the longest
        max_rows = max(1, min(batch_tokens // longest, max_batch_size))
        best[start] = float("inf")
        for end in range(start + 1, min(n, start + max_rows) + 1):
            cost = (end - start) * longest + batch_overhead_tokens + best[end]
            if cost < best[start]:
                best[start], cut[start] = cost, end
    batches, start = [], 0
    while start < n:
        batches.append(order[start : cut[start]])
        start = cut[start]
    return batches


def padded_slots(lengths: Sequence[int], batch: Sequence[int]) -> int:
    """Token slots a right-padded batch computes."""
    return len(batch) * max(lengths[i] for i in batch) if batch else 0


def run_splitting_on_oom(
    items: Sequence[T],
    run: Callable[[Sequence[T]], list[float]],
    is_oom: Callable[[BaseException], bool],
    on_oom: Callable[[], None] = lambda: None,
) -> list[float]:
    """``run(items)``, halving the batch and retrying on out-of-memory; results keep item order.

    A single item that still does not fit re-raises the original error: nothing is dropped silently.
    """
    try:
        return run(items)
    except Exception as error:
        if not is_oom(error) or len(items) <= 1:
            raise
    on_oom()
    middle = len(items) // 2
    return run_splitting_on_oom(items[:middle], run, is_oom, on_oom) + run_splitting_on_oom(
        items[middle:], run, is_oom, on_oom
    )
