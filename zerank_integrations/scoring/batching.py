"""Which pairs share a forward pass, and what a pass costs: pure functions, testable without a model.

A forward pass costs a fixed amount (every layer's kernels are dispatched and its weights read, however few
tokens run) plus time per token slot (the dense layers) plus time per attended position (attention). How
large the fixed part is *relative to a token* depends on the model: for a 2-layer 64-wide test model one
pass costs as much as ~250 tokens, for a 4B model on a CPU less than one. :class:`CostModel` states all three
in seconds, from the model's shape and the device, so one planner serves every size.

Sorting by length and cutting the sorted list optimally (dynamic programming over contiguous runs) keeps
padding low while respecting a token budget, so memory stays bounded whatever the mix of lengths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CostModel:
    """Estimated seconds of one forward pass over right-padded (or packed) rows.

    ``call_seconds``: fixed per pass. ``token_seconds``: per token slot computed. ``context_seconds``: per
    (token, position it attends to). ``causal``: a row of n tokens attends to n²/2 positions (n² when
    bidirectional). ``packed``: rows are packed without padding (varlen attention), so a pass computes the
    sum of the row lengths instead of rows x longest.
    """

    call_seconds: float
    token_seconds: float
    context_seconds: float = 0.0
    causal: bool = True
    packed: bool = False

    @classmethod
    def in_tokens(cls, overhead_tokens: float) -> CostModel:
        """A model measured in token slots: each pass costs ``overhead_tokens`` slots on top of its own."""
        return cls(call_seconds=float(overhead_tokens), token_seconds=1.0)

    @property
    def overhead_tokens(self) -> float:
        """The fixed cost of a pass, in token slots: how much padding one more pass is worth."""
        return self.call_seconds / self.token_seconds if self.token_seconds else float("inf")

    def seconds(self, lengths: Sequence[int], context: int = 0) -> float:
        """One pass over rows of these lengths, each attending to ``context`` earlier positions (a prefix)."""
        if not lengths:
            return 0.0
        if self.packed:
            slots = sum(lengths)
            pairs = sum(n * context + self.attended(n) for n in lengths)
        else:
            longest = max(lengths)
            slots = len(lengths) * longest
            pairs = len(lengths) * (longest * context + self.attended(longest))
        return self.call_seconds + slots * self.token_seconds + pairs * self.context_seconds

    def attended(self, n: int) -> float:
        """(query, key) pairs a row of ``n`` tokens attends to among its own tokens."""
        return n * (n + 1) / 2 if self.causal else float(n * n)

    @classmethod
    def estimate(
        cls,
        speed: DeviceSpeed,
        *,
        parameters: int,
        weight_bytes: int,
        layers: int,
        hidden_size: int,
        attention_width: int,
        causal: bool = True,
        packed: bool = False,
    ) -> CostModel:
        """A model's pass cost from its shape: ``parameters`` used per token (embeddings excluded),
        ``attention_width`` = heads x head size.

        Dense layers cost 2 FLOPs per parameter per token; attention 4 FLOPs per (token, attended position)
        per unit of attention width per layer (q·k and the weighted sum of v). Narrow matrices run further
        from the device's peak (``speed.flops`` at width ``hidden_size``). The fixed part is dispatching every
        layer's kernels plus reading every weight once.
        """
        flops = speed.flops_at(hidden_size)
        return cls(
            call_seconds=speed.call_seconds + layers * speed.layer_seconds + weight_bytes / speed.bytes_per_second,
            token_seconds=2 * parameters / flops,
            context_seconds=4 * attention_width * layers / flops,
            causal=causal,
            packed=packed,
        )


@dataclass(frozen=True)
class DeviceSpeed:
    """What a device sustains, for :meth:`CostModel.estimate`."""

    flops: float  # dense FLOP/s in the model's dtype, for wide matrices
    call_seconds: float  # per forward pass, whatever the model (input transfer, embedding, final norm)
    layer_seconds: float  # per layer per pass: dispatching its ~25 kernels from Python
    bytes_per_second: float  # reading weights (small passes are bound by it)
    half_width: int  # the hidden size at which matmuls reach half of ``flops``

    def flops_at(self, width: int) -> float:
        return self.flops * width / (width + self.half_width)


# CPU: fitted to measured passes of five model shapes, 64 to 1024 wide (benchmarks/bench_cost_model.py, x86_64,
# fp32, one thread; BENCHMARKS.md): 90 GFLOP/s for wide matrices, half of it at width 80; 0.45 ms + 0.15 ms
# per layer of dispatch; weights read at 5 GB/s. Threads are not counted: a second thread did not speed up
# the small models, whose plans the fixed cost shapes. CUDA: per streaming multiprocessor (an H100 has 132),
# bf16/fp16 tensor cores at about 60% of peak, launches 0.1 ms per layer: estimates to check on a GPU (the
# GPU command prints measured pass times next to them).
_CPU = DeviceSpeed(flops=90e9, call_seconds=0.45e-3, layer_seconds=0.15e-3, bytes_per_second=5e9, half_width=80)
_CUDA_FLOPS_PER_SM = {"half": 2.0e12, "float32": 0.35e12}


def device_speed(kind: str, *, half: bool = False, multiprocessors: int = 0) -> DeviceSpeed:
    """Throughput figures for a device type (``cpu``, ``cuda``, ``mps``, anything else: like cpu)."""
    if kind == "cuda":
        units = max(multiprocessors, 1)
        flops = _CUDA_FLOPS_PER_SM["half" if half else "float32"] * units
        return DeviceSpeed(flops, 0.2e-3, 0.1e-3, 20e9 * units, half_width=512)
    if kind == "mps":
        return DeviceSpeed(5e12 if half else 2e12, 0.3e-3, 0.2e-3, 100e9, half_width=256)
    return _CPU


DEFAULT_COST = CostModel.in_tokens(64)


@dataclass(frozen=True)
class Plan:
    """Batches (indices into the planned lengths) and the estimated seconds to run them all."""

    batches: list[list[int]]
    seconds: float


def plan_batches(
    lengths: Sequence[int],
    batch_tokens: int,
    *,
    cost: CostModel = DEFAULT_COST,
    context: int = 0,
    max_batch_size: int = 512,
) -> list[list[int]]:
    """Group indices into batches, longest first, each within ``batch_tokens`` token slots.

    See :func:`plan`; this returns its batches only.
    """
    return plan(lengths, batch_tokens, cost=cost, context=context, max_batch_size=max_batch_size).batches


def plan(
    lengths: Sequence[int],
    batch_tokens: int,
    *,
    cost: CostModel = DEFAULT_COST,
    context: int = 0,
    max_batch_size: int = 512,
) -> Plan:
    """The cheapest cut of the length-sorted rows into contiguous batches under ``cost``.

    Each batch stays within ``batch_tokens`` slots (padded: rows x longest; packed: the sum of lengths) and
    ``max_batch_size`` rows, which also bounds the planning work to O(n * max_batch_size). A single item
    longer than the budget gets a batch of its own (it must be scored anyway). ``context``: positions every
    row attends to before its own tokens (a reused prefix).
    """
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    n = len(order)
    if n == 0:
        return Plan([], 0.0)
    sorted_lengths = [max(1, lengths[i]) for i in order]
    per_token = cost.token_seconds + cost.context_seconds * context
    best = [0.0] * (n + 1)  # best[i]: cheapest plan for order[i:]
    cut = [n] * (n + 1)
    for start in range(n - 1, -1, -1):
        longest = sorted_lengths[start]  # descending order: the first row is the longest
        best[start] = float("inf")
        slots = pairs = 0.0
        for end in range(start + 1, min(n, start + max_batch_size) + 1):
            length = sorted_lengths[end - 1] if cost.packed else longest
            slots += length
            pairs += cost.attended(length)
            if end > start + 1 and slots > batch_tokens:
                break
            seconds = cost.call_seconds + slots * per_token + pairs * cost.context_seconds + best[end]
            if seconds < best[start]:
                best[start], cut[start] = seconds, end
    batches, start = [], 0
    while start < n:
        batches.append(order[start : cut[start]])
        start = cut[start]
    return Plan(batches, best[0])


def reuse_plan(
    prefix_length: int,
    continuations: Sequence[int],
    batch_tokens: int,
    *,
    cost: CostModel = DEFAULT_COST,
    always: bool = False,
) -> Plan | None:
    """The batches for the rows after a shared prefix, when reusing the prefix pays (``None``: it does not).

    Reuse costs one pass over the prefix, then the rows' own tokens, each attending to the prefix; plain
    scoring runs every full prompt. Both are planned under ``cost`` and the cheaper wins, so a short prefix
    with few documents on a tiny model (where one more pass outweighs the tokens saved) is not reused, and a
    long one on a big model is. ``always``: reuse whenever there are two rows or more.
    """
    if len(continuations) < 2:
        return None
    reuse = plan(continuations, batch_tokens, cost=cost, context=prefix_length)
    if always:
        return reuse
    full = plan([prefix_length + n for n in continuations], batch_tokens, cost=cost)
    return reuse if cost.seconds([prefix_length]) + reuse.seconds < full.seconds else None


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
