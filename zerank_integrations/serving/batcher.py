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
request that caused it, never its neighbours. A request whose client went away is taken out of the queue
before it costs model time, or has its result dropped if it was already being scored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class PairScorer(Protocol):
    """What the batcher needs from a scorer: per-pair details for mixed-query pairs, in input order."""

    def score_pairs_details(self, pairs: Sequence[tuple[str, ...]]) -> list[Any]: ...

    def truncate_texts(self, texts: Sequence[str], max_tokens: int) -> list[str]: ...


class BatcherClosedError(RuntimeError):
    """The batcher was shut down; the request was not (and will not be) scored."""


class BatcherBusyError(RuntimeError):
    """Too many requests are queued; the caller should retry later (HTTP 429)."""


@dataclass(frozen=True)
class ScoreJob:
    """One request's work: its query, documents, optional instruction and per-request document cut."""

    query: str
    documents: list[str]
    instruction: str | None = None
    max_tokens_per_doc: int | None = None

    def pairs(self, scorer: PairScorer) -> list[tuple[str, ...]]:
        """Runs in the model thread, so the tokenizer is never used from two threads at once."""
        docs = self.documents
        if self.max_tokens_per_doc is not None:
            docs = scorer.truncate_texts(docs, self.max_tokens_per_doc)
        if self.instruction is None:
            return [(self.query, doc) for doc in docs]
        return [(self.query, doc, self.instruction) for doc in docs]


@dataclass
class JobTimes:
    """When each phase of one request happened (``time.time_ns()``), filled in by the batcher.

    queue: ``enqueued_ns`` -> ``started_ns`` (the model thread took its batch); tokenize: ``started_ns`` ->
    ``prepared_ns`` (its pairs built, per-request document cuts); model: ``model_started_ns`` ->
    ``scored_ns`` (the shared scoring call). Metrics, the log line and trace spans read them.
    """

    enqueued_ns: int = 0
    started_ns: int = 0
    prepared_ns: int = 0
    model_started_ns: int = 0
    scored_ns: int = 0
    batch_requests: int = 0
    batch_pairs: int = 0

    def seconds(self, phase: str) -> float:
        start, end = {
            "queue": (self.enqueued_ns, self.started_ns),
            "tokenize": (self.started_ns, self.prepared_ns),
            "model": (self.model_started_ns, self.scored_ns),
        }[phase]
        return max(0, end - start) / 1e9 if end else 0.0


BatchObserver = Callable[[int, int, dict[str, int]], None]
"""Called in the model thread after each scoring call: (requests, pairs, change of the scorer's counters)."""


@dataclass
class BatcherStats:
    """Cumulative counters, read by ``/health`` and the tests (cheap to copy, no locks needed to read)."""

    requests: int = 0  # requests scored (successfully or not)
    pairs: int = 0  # (query, document) pairs sent to the model
    batches: int = 0  # score_pairs_details calls, including per-request retries after a failed batch
    failed_batches: int = 0  # combined batches that raised and were split into single requests
    failed_requests: int = 0  # requests whose own scoring raised
    abandoned: int = 0  # requests whose client left before scoring started: no model time spent
    dropped: int = 0  # requests whose client left while they were being scored: result discarded
    largest_batch_requests: int = 0
    largest_batch_pairs: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Pending:
    job: ScoreJob
    future: asyncio.Future[list[Any]]
    times: JobTimes
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers concurrent ``submit`` calls for ``max_wait_ms`` and scores them in one scorer call.

    Create it inside the event loop that will call ``submit`` (e.g. an ASGI lifespan), ``start()`` it, and
    ``await close()`` on shutdown. ``submit`` returns the scorer's per-pair details (``DocumentScore``).
    Cancelling a ``submit`` (the client went away) takes the request out of the queue; if it is already
    being scored, its result is dropped.
    """

    def __init__(
        self,
        scorer: PairScorer,
        *,
        max_wait_ms: float = 5.0,
        max_batch_pairs: int = 2048,
        max_queued_requests: int = 4096,
        observer: BatchObserver | None = None,
    ) -> None:
        self.check_settings(
            max_wait_ms=max_wait_ms, max_batch_pairs=max_batch_pairs, max_queued_requests=max_queued_requests
        )
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
        self._observer = observer

    @staticmethod
    def check_settings(*, max_wait_ms: float, max_batch_pairs: int, max_queued_requests: int) -> None:
        """Refuse bad settings up front (a server checks them before its model has loaded)."""
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_batch_pairs < 1:
            raise ValueError(f"max_batch_pairs must be >= 1, got {max_batch_pairs}")
        if max_queued_requests < 1:
            raise ValueError(f"max_queued_requests must be >= 1, got {max_queued_requests}")

    @property
    def queued(self) -> int:
        """Requests waiting for the next batch (not counting the one being scored)."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def in_flight(self) -> int:
        """Requests in the batch the model thread is scoring now."""
        return len(self._in_flight)

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

    async def submit(self, job: ScoreJob, times: JobTimes | None = None) -> list[Any]:
        """Per-document details for ``job``, in input order, scored together with other requests.

        ``times``, when given, is filled in with when the request was queued, prepared and scored.
        """
        if self._closed or self._task is None or self._wakeup is None:
            raise BatcherClosedError("the batcher is not running")
        if not job.documents:
            return []
        if len(self._queue) >= self.max_queued_requests:
            raise BatcherBusyError(f"{len(self._queue)} requests are already queued; retry shortly")
        times = times if times is not None else JobTimes()
        times.enqueued_ns = time.time_ns()
        pending = _Pending(job, asyncio.get_running_loop().create_future(), times)
        self._queue.append(pending)
        self._wakeup.set()
        try:
            return await pending.future
        except asyncio.CancelledError:
            if pending in self._queue:  # not started: take it out, so it costs no model time
                self._queue.remove(pending)
                with self._stats_lock:
                    self.stats.abandoned += 1
            raise

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
                    if not self._queue:
                        break
                batch = self._take_batch()
                self._last_batch_requests = len(batch)
                if batch:
                    await self._score(loop, batch)

    def _queued_pairs(self) -> int:
        return sum(len(p.job.documents) for p in self._queue)

    def _take_batch(self) -> list[_Pending]:
        """Oldest requests first, up to ``max_batch_pairs`` pairs (a larger single request goes alone)."""
        batch: list[_Pending] = []
        pairs = 0
        while self._queue:
            pending = self._queue[0]
            if pending.future.done():  # cancelled between the client leaving and submit() cleaning up
                self._queue.popleft()
                continue
            if batch and pairs + len(pending.job.documents) > self.max_batch_pairs:
                break
            batch.append(self._queue.popleft())
            pairs += len(pending.job.documents)
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
            if pending.future.done():  # the client left while we scored: drop the result quietly
                with self._stats_lock:
                    self.stats.dropped += 1
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    def _score_batch(self, batch: list[_Pending]) -> list[list[Any] | BaseException]:
        """Runs in the model thread: one combined call, or one call per request if the combined one fails."""
        prepared: list[list[tuple[str, ...]] | BaseException] = []
        for pending in batch:
            pending.times.started_ns = time.time_ns()
            try:
                prepared.append(pending.job.pairs(self._scorer))
            except Exception as error:
                prepared.append(error)
            pending.times.prepared_ns = time.time_ns()
        ready = [(p, pairs) for p, pairs in zip(batch, prepared, strict=True) if not isinstance(pairs, BaseException)]
        pairs = [pair for _, job_pairs in ready for pair in job_pairs]  # type: ignore[union-attr]
        with self._stats_lock:
            self.stats.requests += len(batch)
            self.stats.pairs += len(pairs)
            self.stats.batches += 1
            self.stats.largest_batch_requests = max(self.stats.largest_batch_requests, len(batch))
            self.stats.largest_batch_pairs = max(self.stats.largest_batch_pairs, len(pairs))
            self.stats.failed_requests += len(batch) - len(ready)
        by_request: dict[int, list[Any] | BaseException] = {}
        model_started = time.time_ns()
        for pending in batch:
            pending.times.model_started_ns = model_started
            pending.times.batch_requests = len(ready)
            pending.times.batch_pairs = len(pairs)
        try:
            details = self._observed(len(ready), pairs) if pairs else []
        except Exception as error:
            if len(ready) == 1:
                with self._stats_lock:
                    self.stats.failed_requests += 1
                by_request[id(ready[0][0])] = error
            else:
                logger.warning("a batch of %d requests failed (%s); scoring them one by one", len(ready), error)
                with self._stats_lock:
                    self.stats.failed_batches += 1
                for pending, job_pairs in ready:
                    pending.times.model_started_ns = time.time_ns()
                    pending.times.batch_requests, pending.times.batch_pairs = 1, len(job_pairs)  # type: ignore[arg-type]
                    by_request[id(pending)] = self._score_alone(job_pairs)  # type: ignore[arg-type]
                    pending.times.scored_ns = time.time_ns()
        else:
            start = 0
            scored = time.time_ns()
            for pending, job_pairs in ready:
                pending.times.scored_ns = scored
                by_request[id(pending)] = details[start : start + len(job_pairs)]  # type: ignore[arg-type]
                start += len(job_pairs)  # type: ignore[arg-type]
        return [
            prep if isinstance(prep, BaseException) else by_request[id(pending)]
            for pending, prep in zip(batch, prepared, strict=True)
        ]

    def _score_alone(self, pairs: list[tuple[str, ...]]) -> list[Any] | BaseException:
        with self._stats_lock:
            self.stats.batches += 1
        try:
            return self._observed(1, pairs)
        except Exception as error:
            with self._stats_lock:
                self.stats.failed_requests += 1
            return error

    def _observed(self, requests: int, pairs: list[tuple[str, ...]]) -> list[Any]:
        """One scoring call; the observer hears its size and the scorer's counters' change (even if it fails)."""
        before = _counters(self._scorer) if self._observer is not None else {}
        try:
            return self._checked(self._scorer.score_pairs_details(pairs), len(pairs))
        finally:
            if self._observer is not None:
                after = _counters(self._scorer)
                try:
                    self._observer(requests, len(pairs), {k: v - before.get(k, 0) for k, v in after.items()})
                except Exception:  # metrics must never fail a request
                    logger.exception("the batch observer failed")

    @staticmethod
    def _checked(details: Any, expected: int) -> list[Any]:
        details = list(details)
        if len(details) != expected:
            raise RuntimeError(f"the scorer returned {len(details)} scores for {expected} pairs")
        return details


def _counters(scorer: Any) -> dict[str, int]:
    """The scorer's cumulative integer counters (``ZerankScorer.stats``), or nothing if it keeps none."""
    stats = getattr(scorer, "stats", None)
    if stats is None or not is_dataclass(stats) or isinstance(stats, type):
        return {}
    return {f.name: value for f in fields(stats) if isinstance(value := getattr(stats, f.name), int)}
