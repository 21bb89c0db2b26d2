"""Cross-request micro-batching: many small HTTP requests, few large forward passes.

One request of 20 documents rarely fills a token-budget batch; 30 concurrent requests do. The batcher
collects requests for a few milliseconds (or until ``max_batch_pairs``), hands all their pairs to
``scorer.score_pairs`` in one call, which packs them into shared token-budget batches regardless of which
query each pair belongs to, and resolves each request's asyncio future with its own slice of the result.

One worker thread runs the model, so the event loop never blocks and forward passes never compete for the
device. While that thread is busy, new requests queue up and form the next batch: under load the batch
grows by itself. The ``max_wait_ms`` gathering window opens only under concurrency (several requests queued,
or the previous batch held several): a lone client is scored at once and pays no added latency.

If a combined batch fails, every request in it is retried on its own, so an error reaches only the
request that caused it, never its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class PairScorer(Protocol):
    """What the batcher needs from a scorer: raw "Yes" logits for mixed-query pairs, in input order."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, raw: bool = False) -> list[float]: ...


class BatcherClosedError(RuntimeError):
    """The batcher was shut down; the request was not (and will not be) scored."""


class BatcherBusyError(RuntimeError):
    """Too many requests are queued; the caller should retry later (HTTP 503)."""


@dataclass
class BatcherStats:
    """Cumulative counters, read by ``/health`` and the tests (cheap to copy, no locks needed to read)."""

    requests: int = 0  # requests scored (successfully or not)
    pairs: int = 0  # (query, document) pairs sent to the model
    batches: int = 0  # score_pairs calls, including per-request retries after a failed batch
    failed_batches: int = 0  # combined batches that raised and were split into single requests
    failed_requests: int = 0  # requests whose own scoring raised
    largest_batch_requests: int = 0
    largest_batch_pairs: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Pending:
    query: str
    documents: list[str]
    future: asyncio.Future[list[float]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers concurrent ``submit`` calls for ``max_wait_ms`` and scores them in one ``score_pairs`` call.

    Create it inside the event loop that will call ``submit`` (e.g. an ASGI lifespan), ``start()`` it, and
    ``await close()`` on shutdown. ``submit`` returns raw logits; converting them is the caller's business.
    """

    def __init__(
        self,
        scorer: PairScorer,
        *,
        max_wait_ms: float = 5.0,
        max_batch_pairs: int = 2048,
        max_queued_requests: int = 4096,
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_batch_pairs < 1:
            raise ValueError(f"max_batch_pairs must be >= 1, got {max_batch_pairs}")
        if max_queued_requests < 1:
            raise ValueError(f"max_queued_requests must be >= 1, got {max_queued_requests}")
        self._scorer = scorer
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_batch_pairs = max_batch_pairs
        self.max_queued_requests = max_queued_requests
        self.stats = BatcherStats()
        self._queue: deque[_Pending] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._in_flight: list[_Pending] = []
        self._last_batch_requests = 0
        self._stats_lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Requests waiting for the next batch (not counting the one being scored)."""
        return len(self._queue)

    def start(self) -> None:
        """Start the collector task on the running loop and the single model thread."""
        if self._task is not None:
            return
        if self._closed:
            raise BatcherClosedError("this batcher was closed; create a new one")
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zerank-model")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="zerank-micro-batcher")

    async def close(self) -> None:
        """Stop collecting; queued and in-flight requests fail with ``BatcherClosedError``."""
        self._closed = True
        stranded = [*self._in_flight, *self._queue]  # before cancelling: the task clears its in-flight list
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pending in stranded:
            if not pending.future.done():
                pending.future.set_exception(BatcherClosedError("the server is shutting down"))
        if self._executor is not None:
            # The model thread may still finish its batch; its results are dropped. Never block the loop.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def submit(self, query: str, documents: list[str]) -> list[float]:
        """Raw logits for ``documents`` against ``query``, in input order, scored with other requests."""
        if self._closed or self._task is None or self._wakeup is None:
            raise BatcherClosedError("the batcher is not running")
        if not documents:
            return []
        if len(self._queue) >= self.max_queued_requests:
            raise BatcherBusyError(f"{len(self._queue)} requests are already queued; retry shortly")
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(query, documents, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                # Under concurrency, give other requests a moment to arrive (from the oldest one waiting);
                # a lone client goes straight to the model.
                concurrent = len(self._queue) > 1 or self._last_batch_requests > 1
                deadline = self._queue[0].enqueued + (self.max_wait_s if concurrent else 0.0)
                while self._queued_pairs() < self.max_batch_pairs:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    self._wakeup.clear()
                batch = self._take_batch()
                self._last_batch_requests = len(batch)
                if batch:
                    await self._score(loop, batch)

    def _queued_pairs(self) -> int:
        return sum(len(p.documents) for p in self._queue)

    def _take_batch(self) -> list[_Pending]:
        """Oldest requests first, up to ``max_batch_pairs`` pairs (a larger single request goes alone)."""
        batch: list[_Pending] = []
        pairs = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # the client went away (cancelled): skip its work
                self._queue.popleft()
                continue
            if batch and pairs + len(pending.documents) > self.max_batch_pairs:
                break
            batch.append(self._queue.popleft())
            pairs += len(pending.documents)
        return batch

    async def _score(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        assert self._executor is not None
        self._in_flight = batch
        try:
            results = await loop.run_in_executor(self._executor, self._score_batch, batch)
        except Exception as error:  # the model thread itself failed (e.g. executor shut down)
            results = [error] * len(batch)
        finally:
            self._in_flight = []
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    def _score_batch(self, batch: list[_Pending]) -> list[list[float] | BaseException]:
        """Runs in the model thread: one combined call, or one call per request if the combined one fails."""
        pairs = [(p.query, doc) for p in batch for doc in p.documents]
        with self._stats_lock:
            self.stats.requests += len(batch)
            self.stats.pairs += len(pairs)
            self.stats.batches += 1
            self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(batch))
            self.stats.largest_batch_pairs = max(self.stats.largest_batch_pairs, len(pairs))
        try:
            scores = self._checked(self._scorer.score_pairs(pairs, raw=True), len(pairs))
        except Exception as error:
            if len(batch) == 1:
                with self._stats_lock:
                    self.stats.failed_requests += 1
                return [error]
            logger.warning("a batch of %d requests failed (%s); scoring them one by one", len(batch), error)
            with self._stats_lock:
                self.stats.failed_batches += 1
            return [self._score_alone(p) for p in batch]
        out: list[list[float] | BaseException] = []
        start = 0
        for pending in batch:
            out.append(scores[start : start + len(pending.documents)])
            start += len(pending.documents)
        return out

    def _score_alone(self, pending: _Pending) -> list[float] | BaseException:
        with self._stats_lock:
            self.stats.batches += 1
        try:
            pairs = [(pending.query, doc) for doc in pending.documents]
            return self._checked(self._scorer.score_pairs(pairs, raw=True), len(pairs))
        except Exception as error:
            with self._stats_lock:
                self.stats.failed_requests += 1
            return error

    @staticmethod
    def _checked(scores: Any, expected: int) -> list[float]:
        scores = [float(s) for s in scores]
        if len(scores) != expected:
            raise RuntimeError(f"the scorer returned {len(scores)} scores for {expected} pairs")
        return scores
