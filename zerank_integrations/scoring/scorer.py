"""``ZerankScorer``: the public face of the scoring core. Strings in, scores out, in input order, any family."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, fields, replace
from functools import partial
from typing import Any, Literal, TypeVar

import torch
from pydantic import SecretStr

from zerank_integrations.base import (
    DEFAULT_MODEL,
    Calibration,
    as_list,
    rank_scores,
    validate_documents,
    validate_instruction,
    validate_query,
    validate_top_n,
)
from zerank_integrations.families import RerankerFamily
from zerank_integrations.scoring.attention import PrefixKV
from zerank_integrations.scoring.batching import Plan, padded_slots, plan, reuse_plan, run_splitting_on_oom
from zerank_integrations.scoring.cache import ScoreCache
from zerank_integrations.scoring.loading import LoadedModel, load_replicas, resolve_devices
from zerank_integrations.scoring.prompts import EncodedPair, Piece, QuerySegment
from zerank_integrations.scoring.quantization import Quantization, check_quantization
from zerank_integrations.scoring.threads import apply_threads

logger = logging.getLogger(__name__)

T = TypeVar("T")
LongDocuments = Literal["truncate", "max_chunk"]
Triple = tuple[str, str, str | None]  # (query, document, instruction), as the family reads them

_PAIRS_EXPECTED = "pairs must be a sequence of (query, document) or (query, document, instruction) tuples"
# Token slots per forward pass: a memory bound. Within it, the plan weighs padding against the cost of one more
# pass (each model's ``LoadedModel.cost``), and "auto" prefix reuse weighs the prefix pass against the tokens
# it saves, with the same estimate.
_DEFAULT_BATCH_TOKENS = {"cuda": 32_768, "mps": 8_192, "cpu": 4_096}
_MIN_CONTENT_TOKENS = 4  # max_length must leave this much beside the template
_WINDOW_MARGIN_TOKENS = 2  # a window's text may tokenize a token or two longer than its slice


@dataclass(frozen=True)
class ScoringStats:
    """Cumulative work done by one scorer: what benchmarks and the server report."""

    pairs: int = 0
    forward_passes: int = 0
    real_tokens: int = 0  # tokens that carry a pair's content (a reused prefix counts once)
    computed_tokens: int = 0  # token slots the model computed, padding included
    truncated_pairs: int = 0
    cache_hits: int = 0  # distinct pairs per call answered from the score cache
    cache_misses: int = 0  # distinct pairs per call the model had to score (with a cache configured)

    @property
    def padding_efficiency(self) -> float:
        """Real tokens per computed slot (1.0 = no padding)."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 1.0

    def __add__(self, other: ScoringStats) -> ScoringStats:
        return ScoringStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: ScoringStats) -> ScoringStats:
        return ScoringStats(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


@dataclass(frozen=True)
class DocumentScore:
    """One document's score with what it cost: what servers bill and pipelines show."""

    raw: float  # the family's raw score ("Yes" logit, log-odds, classifier logit)
    probability: float  # the family's calibration of ``raw``
    tokens: int  # prompt tokens the model read for this pair, every window counted
    truncated: bool  # some text was cut to fit max_length
    windows: int = 1  # >1 when long_documents="max_chunk" split the document
    span: tuple[int, int] | None = None  # max_chunk: the best window's [start, end) characters in the document


@dataclass
class _Window:
    """One scored unit: a whole document, or one window of a long one."""

    owner: int  # index of the (query, document, instruction) triple it belongs to
    text: str  # the document text the family formats
    span: tuple[int, int] | None  # characters in the normalized document, for windows


class ZerankScorer:
    """Scores (query, document) pairs with a local reranker of any supported family.

    Construction loads the model (or reuses the one this process already loaded with the same model,
    revision, device, dtype and family). Instances are thread-safe and can be shared by any number of
    integrations and server requests; ``a``-prefixed methods run the same work in a worker thread.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        family: str | RerankerFamily | None = None,
        revision: str | None = None,
        device: str | torch.device | Sequence[str | torch.device] | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int | None = None,
        batch_tokens: int | None = None,
        local_files_only: bool = False,
        prefix_reuse: bool | Literal["auto"] = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        token: str | SecretStr | None = None,
        cache_size: int = 0,
        long_documents: LongDocuments = "truncate",
        chunk_tokens: int | None = None,
        chunk_stride: int | None = None,
        quantization: Quantization | None = None,
        threads: int | None = None,
    ) -> None:
        for name, value in (("max_length", max_length), ("batch_tokens", batch_tokens)):
            _check_count(name, value, allow_none=True)
        _check_count("chunk_tokens", chunk_tokens, allow_none=True)
        _check_count("chunk_stride", chunk_stride, allow_none=True)
        if prefix_reuse not in (True, False, "auto"):
            raise ValueError(f"prefix_reuse must be True, False or 'auto', got {prefix_reuse!r}")
        if long_documents not in ("truncate", "max_chunk"):
            raise ValueError(f"long_documents must be 'truncate' or 'max_chunk', got {long_documents!r}")
        if long_documents == "truncate" and (chunk_tokens is not None or chunk_stride is not None):
            raise ValueError("chunk_tokens and chunk_stride only apply with long_documents='max_chunk'")
        if chunk_tokens is not None and chunk_stride is not None and chunk_stride > chunk_tokens:
            raise ValueError(
                f"chunk_stride ({chunk_stride}) cannot exceed chunk_tokens ({chunk_tokens}): text would be skipped"
            )
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 turns the cache off), got {cache_size!r}")
        secret = token if isinstance(token, SecretStr) or token is None else SecretStr(token)
        quantization = check_quantization(quantization)
        _check_count("threads", threads, allow_none=True)
        apply_threads(threads)  # once per process unless given: leased cores, so processes do not oversubscribe
        # One replica per device: "cuda" on a machine with several GPUs, or a list of devices.
        self._replicas: tuple[LoadedModel, ...] = load_replicas(
            model,
            family=family,
            revision=revision,
            devices=resolve_devices(device),
            dtype=dtype,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
            token=secret.get_secret_value() if secret is not None else None,
            quantization=quantization,
        )
        self._loaded: LoadedModel = self._replicas[0]
        self._pool = (
            ThreadPoolExecutor(len(self._replicas), thread_name_prefix="zerank-replica")
            if len(self._replicas) > 1
            else None
        )
        template = self._loaded.template
        resolved_length = max_length if max_length is not None else self._loaded.default_max_length
        if resolved_length - template.overhead < _MIN_CONTENT_TOKENS:
            raise ValueError(
                f"max_length={resolved_length} leaves no room beside the {template.overhead} tokens of the "
                f"{self.family} prompt template itself"
            )
        limit = self._loaded.position_limit
        if max_length is not None and limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} exceeds the {limit} positions model {model!r} was trained for")
        self.model = model
        self.revision = revision
        self.max_length = resolved_length
        device_type = self._loaded.device.type
        self.batch_tokens = batch_tokens or _DEFAULT_BATCH_TOKENS.get(device_type, 4_096)
        self.prefix_reuse = prefix_reuse
        self.long_documents: LongDocuments = long_documents
        self.chunk_tokens = chunk_tokens
        self.chunk_stride = chunk_stride
        settings = (*astuple(self._loaded.key), self.max_length, long_documents, chunk_tokens, chunk_stride)
        self._cache: ScoreCache[DocumentScore] = ScoreCache(cache_size, "\x00".join(map(str, settings)))
        self._stats = ScoringStats()
        self._stats_lock = threading.Lock()
        self._warned_truncation = False

    # -- what this scorer is -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model

    @property
    def family(self) -> str:
        """The family in use: "zerank", "qwen3-reranker", "mxbai-rerank-v2" or "cross-encoder"."""
        return self._loaded.family.name

    @property
    def family_spec(self) -> RerankerFamily:
        """The family's full recipe (prompt pieces, head, calibration, known checkpoints)."""
        return self._loaded.family

    @property
    def calibration(self) -> Calibration:
        """How this family's raw scores become probabilities."""
        return self._loaded.family.calibration

    @property
    def accepts_instruction(self) -> bool:
        return self._loaded.template.accepts_instruction

    @property
    def random_weights(self) -> bool:
        """True for checkpoints written by ``zerank_integrations.testing``: their scores are meaningless."""
        return self._loaded.random_weights

    @property
    def cache_size(self) -> int:
        return self._cache.size

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """Every device holding a replica (one for most scorers); batches are spread across them."""
        return tuple(replica.device for replica in self._replicas)

    @property
    def dtype(self) -> torch.dtype:
        return self._loaded.dtype

    @property
    def quantization(self) -> str | None:
        """``"int8"`` when the int8 engine scores; ``None`` for float32 (the default, and after a fallback)."""
        return self._loaded.quantization

    @property
    def loaded_model(self) -> LoadedModel:
        """The process-wide model this scorer uses: the same object for every scorer with the same settings."""
        return self._loaded

    @property
    def stats(self) -> ScoringStats:
        """A snapshot of the cumulative counters (subtract two snapshots for one call's work)."""
        with self._stats_lock:
            return self._stats

    def __repr__(self) -> str:
        extra = f", cache_size={self.cache_size}" if self.cache_size else ""
        if self.long_documents != "truncate":
            extra += f", long_documents={self.long_documents!r}"
        if self.quantization:
            extra += f", quantization={self.quantization!r}"
        return (
            f"ZerankScorer(model={self.model!r}, family={self.family!r}, revision={self.revision!r}, "
            f"device='{self.device}', dtype={str(self.dtype).removeprefix('torch.')}, max_length={self.max_length}, "
            f"batch_tokens={self.batch_tokens}{extra})"
        )

    # -- scoring ------------------------------------------------------------------------------------------
    def score(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]:
        """Relevance of each document to ``query``: probabilities in [0, 1] (``raw=True``: the raw scores)."""
        return _values(self.score_details(query, documents, instruction=instruction), raw)

    def score_details(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> list[DocumentScore]:
        """Per-document scores with the tokens read, truncation and (max_chunk) the best window's span."""
        validate_query(query)
        docs = validate_documents(documents)
        instruction = self._check_instruction(instruction)
        return self._details([(query, doc, instruction) for doc in docs])

    def score_pairs(
        self, pairs: Sequence[tuple[str, ...]], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]:
        """Scores of (query, document[, instruction]) items with any mix of queries, batched together."""
        return _values(self.score_pairs_details(pairs, instruction=instruction), raw)

    def score_pairs_details(
        self, pairs: Sequence[tuple[str, ...]], *, instruction: str | None = None
    ) -> list[DocumentScore]:
        """:meth:`score_details` for mixed (query, document[, instruction]) items (what a server batches)."""
        default = self._check_instruction(instruction)
        items: list[Triple] = []
        for index, pair in enumerate(as_list(pairs, _PAIRS_EXPECTED)):
            if not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3):
                raise TypeError(
                    f"pair at index {index} must be a (query, document[, instruction]) tuple, got {pair!r:.80}"
                )
            try:
                query = validate_query(pair[0])
                (document,) = validate_documents([pair[1]])
                own = self._check_instruction(pair[2]) if len(pair) == 3 else default
            except (TypeError, ValueError) as error:
                raise type(error)(f"pair at index {index}: {error}") from None
            items.append((query, document, own))
        return self._details(items)

    def rank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, *, instruction: str | None = None
    ) -> list[tuple[int, float]]:
        """(input index, probability) pairs, best first; ties keep input order."""
        validate_top_n(top_n)  # before the model runs, not after
        return rank_scores(self.score(query, documents, instruction=instruction), top_n)

    # The async forms run the same bodies in a worker thread, so the event loop keeps running. Inputs are
    # turned into lists here, on the caller's side: a generator is drained once, a single string refused.
    async def ascore(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]:
        return await _in_thread(self.score, query, validate_documents(documents), instruction=instruction, raw=raw)

    async def ascore_details(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None
    ) -> list[DocumentScore]:
        return await _in_thread(self.score_details, query, validate_documents(documents), instruction=instruction)

    async def arank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, *, instruction: str | None = None
    ) -> list[tuple[int, float]]:
        return await _in_thread(self.rank, query, validate_documents(documents), top_n, instruction=instruction)

    async def ascore_pairs(
        self, pairs: Sequence[tuple[str, ...]], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]:
        return await _in_thread(self.score_pairs, as_list(pairs, _PAIRS_EXPECTED), instruction=instruction, raw=raw)

    async def ascore_pairs_details(
        self, pairs: Sequence[tuple[str, ...]], *, instruction: str | None = None
    ) -> list[DocumentScore]:
        return await _in_thread(self.score_pairs_details, as_list(pairs, _PAIRS_EXPECTED), instruction=instruction)

    # -- tokens -------------------------------------------------------------------------------------------
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens of this model's tokenizer each text is (no special tokens)."""
        return [len(ids) for ids in self._loaded.tokens.ids(validate_documents(texts))]

    def truncate_texts(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Each text cut at a token boundary to at most ``max_tokens`` tokens (shorter texts unchanged)."""
        _check_count("max_tokens", max_tokens, allow_none=False)
        docs = validate_documents(texts)
        out = []
        for text, (ids, spans) in zip(docs, self._loaded.tokens.with_offsets(docs), strict=True):
            out.append(text if len(ids) <= max_tokens else text[: spans[max_tokens - 1][1]])
        return out

    # -- internals ----------------------------------------------------------------------------------------
    def _check_instruction(self, instruction: object) -> str | None:
        value = validate_instruction(instruction)
        if value is not None and not self.accepts_instruction:
            raise ValueError(
                f"the {self.family} family (model {self.model!r}) takes no instruction; leave instruction unset "
                "or use a family that follows instructions (zerank, qwen3-reranker, mxbai-rerank-v2)"
            )
        return value

    def _details(self, items: list[Triple]) -> list[DocumentScore]:
        """Scores in input order. Identical pairs (as the family reads them) are scored once, so equal texts
        tie exactly whatever batch they would have landed in; cached pairs skip the model."""
        if not items:
            return []
        template = self._loaded.template
        normalized: list[Triple] = []
        shifts: list[int] = []  # characters the family stripped from each document's start
        for query, document, instruction in items:
            q, d = template.normalize(query, document)
            normalized.append((q, d, template.effective_instruction(instruction)))
            shifts.append(len(document) - len(document.lstrip()) if d != document else 0)
        unique = list(dict.fromkeys(normalized))
        keys = [self._cache.key(*triple) for triple in unique] if self._cache.size else []
        found: dict[int, DocumentScore] = {}
        for position, key in enumerate(keys):
            hit = self._cache.get(key)
            if hit is not None:
                found[position] = hit
        missing = [position for position in range(len(unique)) if position not in found]
        if missing:
            computed = self._compute([unique[position] for position in missing])
            found.update(zip(missing, computed, strict=True))
            if keys:
                self._cache.put_many((keys[position], found[position]) for position in missing)
        where = {triple: position for position, triple in enumerate(unique)}
        results = [_shifted(found[where[triple]], shift) for triple, shift in zip(normalized, shifts, strict=True)]
        truncated = sum(result.truncated for result in results)
        counts = ScoringStats(pairs=len(items), truncated_pairs=truncated)
        if self._cache.size:
            counts = counts + ScoringStats(cache_hits=len(unique) - len(missing), cache_misses=len(missing))
        self._count(counts)
        if truncated:
            self._warn_truncation(truncated)
        bad = [i for i, result in enumerate(results) if not math.isfinite(result.raw)]
        if bad:
            raise FloatingPointError(
                f"the model produced non-finite scores for pairs {bad[:10]}; with float16 this is usually "
                "overflow: use dtype='bfloat16' or 'float32'"
            )
        return results

    def _compute(self, triples: list[Triple]) -> list[DocumentScore]:
        """Score distinct normalized triples with the model: segments, windows, batches, then per-document max."""
        loaded, template = self._loaded, self._loaded.template
        segments: dict[tuple[str, str | None], QuerySegment] = {}
        for query, _, instruction in triples:
            if (query, instruction) not in segments:
                segments[(query, instruction)] = template.query_segment(
                    loaded.tokens, query, instruction, self.max_length
                )
        windows = self._windows(triples, segments)
        encoded = template.encode(
            loaded.tokens,
            [(segments[(triples[w.owner][0], triples[w.owner][2])], w.text) for w in windows],
            self.max_length,
        )
        raw = self._run(encoded)
        best: list[int | None] = [None] * len(triples)
        tokens = [0] * len(triples)
        counts = [0] * len(triples)
        truncated = [False] * len(triples)
        for index, (window, pair) in enumerate(zip(windows, encoded, strict=True)):
            owner = window.owner
            tokens[owner] += len(pair)
            counts[owner] += 1
            truncated[owner] = truncated[owner] or pair.truncated
            current = best[owner]
            if current is None or raw[index] > raw[current] or math.isnan(raw[index]):
                best[owner] = index
        calibration = self.calibration
        results = []
        for owner in range(len(triples)):
            index = best[owner]
            assert index is not None
            results.append(
                DocumentScore(
                    raw=raw[index],
                    probability=calibration.probability(raw[index]),
                    tokens=tokens[owner],
                    truncated=truncated[owner],
                    windows=counts[owner],
                    span=windows[index].span if counts[owner] > 1 else None,
                )
            )
        return results

    def _windows(self, triples: list[Triple], segments: dict[tuple[str, str | None], QuerySegment]) -> list[_Window]:
        """One unit per document; with max_chunk, overlapping token windows for documents that do not fit."""
        whole = [_Window(owner, document, None) for owner, (_, document, _) in enumerate(triples)]
        if self.long_documents != "max_chunk":
            return whole
        loaded, template = self._loaded, self._loaded.template
        label = len(loaded.tokens.ids([template.document_text("")])[0])
        formatted = loaded.tokens.ids([template.document_text(document) for _, document, _ in triples])
        windows: list[_Window] = []
        for owner, (query, document, instruction) in enumerate(triples):
            room = template.document_room(segments[(query, instruction)], self.max_length)
            if len(formatted[owner]) <= room:
                windows.append(whole[owner])
                continue
            fit = max(1, room - label - _WINDOW_MARGIN_TOKENS)
            size = min(self.chunk_tokens or fit, fit)
            stride = min(self.chunk_stride or max(1, size * 3 // 4), size)
            _, spans = loaded.tokens.with_offsets([document])[0]
            for start, end in _window_bounds(len(spans), size, stride):
                span = (spans[start][0], spans[end - 1][1])
                text = document[span[0] : span[1]]
                # Each window is read as its own document would be (zerank strips it), so a window's score
                # equals scoring that text alone.
                windows.append(_Window(owner, template.normalize_document(text), span))
        return windows

    def _run(self, pairs: list[EncodedPair]) -> list[float]:
        """Raw scores of encoded pairs, in order: shared prefixes reused where it pays, the rest batched; the
        batches are spread over the replicas."""
        groups: dict[Piece, list[int]] = {}
        for index, pair in enumerate(pairs):
            groups.setdefault(pair.prefix, []).append(index)
        work: list[_Batch] = []
        plain: list[int] = []
        for prefix, members in groups.items():
            reuse = self._uses_prefix(prefix, [pairs[i] for i in members])
            if reuse is None:
                plain.extend(members)
                continue
            shared = _SharedPrefix(prefix, len(reuse.batches))
            self._count(ScoringStats(real_tokens=len(prefix)))  # read once, however many replicas encode it
            work.extend(_Batch([members[i] for i in batch], shared) for batch in reuse.batches)
        if plain:
            lengths = [len(pairs[i]) for i in plain]
            for batch in plan(lengths, self.batch_tokens, cost=self._loaded.cost).batches:
                work.append(_Batch([plain[i] for i in batch], None))
        raw = [0.0] * len(pairs)
        for batch, values in self._dispatch(work, pairs):
            for index, value in zip(batch.indices, values, strict=True):
                raw[index] = value
        return raw

    def _uses_prefix(self, prefix: Piece, members: list[EncodedPair]) -> Plan | None:
        """The batches of the rows after a reused ``prefix``, or ``None`` to score the group's full prompts.

        ``"auto"`` reuses the prefix when the model's estimated cost says it pays (``batching.reuse_plan``);
        never for a lone document or a bidirectional model.
        """
        if self.prefix_reuse is False or not self._loaded.forward.supports_prefix_reuse:
            return None
        continuations = [len(pair.continuation) for pair in members]
        return reuse_plan(
            len(prefix), continuations, self.batch_tokens, cost=self._loaded.cost, always=self.prefix_reuse is True
        )

    def _dispatch(self, work: list[_Batch], pairs: list[EncodedPair]) -> list[tuple[_Batch, list[float]]]:
        """Run every batch; with several replicas, each pulls the next batch as soon as it is free."""
        if self._pool is None or len(work) < 2:
            return [(batch, self._run_batch(0, batch, pairs)) for batch in work]
        queue = iter(work)
        queue_lock = threading.Lock()
        done: list[tuple[_Batch, list[float]]] = []
        failures: list[BaseException] = []

        def drain(replica: int) -> None:
            while not failures:
                with queue_lock:
                    batch = next(queue, None)
                if batch is None:
                    return
                try:
                    done.append((batch, self._run_batch(replica, batch, pairs)))
                except BaseException as error:  # re-raised in the caller's thread below
                    failures.append(error)

        for future in [self._pool.submit(drain, replica) for replica in range(len(self._replicas))]:
            future.result()
        if failures:
            raise failures[0]
        return done

    def _run_batch(self, replica: int, batch: _Batch, pairs: list[EncodedPair]) -> list[float]:
        """One planned batch on one replica, halved and retried while it runs out of memory."""
        loaded = self._replicas[replica]
        forward = loaded.forward
        if batch.prefix is None:
            rows = [pairs[i].row for i in batch.indices]
            run_rows: Callable[[list[Piece]], list[float]] = forward.full
        else:
            rows = [pairs[i].continuation for i in batch.indices]
            run_rows = partial(forward.after_prefix, batch.prefix.encoded(replica, loaded, self._count))
        lengths = [len(row) for row in rows]

        def run(part: Sequence[int]) -> list[float]:
            values = run_rows([rows[i] for i in part])
            computed = sum(lengths[i] for i in part) if forward.packed else padded_slots(lengths, part)
            real = sum(lengths[i] for i in part)
            self._count(ScoringStats(forward_passes=1, real_tokens=real, computed_tokens=computed))
            return values

        try:
            return run_splitting_on_oom(range(len(rows)), run, _is_out_of_memory, partial(self._after_oom, loaded))
        finally:
            if batch.prefix is not None:
                batch.prefix.finished_batch()

    def _warn_truncation(self, count: int) -> None:
        with self._stats_lock:  # once per scorer, even when threads truncate at the same moment
            if self._warned_truncation:
                return
            self._warned_truncation = True
        warnings.warn(
            f"{count} (query, document) pair(s) exceed max_length={self.max_length} tokens and were shortened "
            "(the query to its share first, then the document); the prompt template is kept whole. Warned once "
            "per scorer.",
            UserWarning,
            stacklevel=4,
        )

    def _count(self, work: ScoringStats) -> None:
        with self._stats_lock:
            self._stats = self._stats + work

    def _after_oom(self, loaded: LoadedModel) -> None:
        logger.warning("out of memory on %s: splitting the batch and retrying", loaded.device)
        if loaded.device.type == "cuda":
            with torch.cuda.device(loaded.device):
                torch.cuda.empty_cache()


@dataclass
class _Batch:
    """One planned forward pass: indices into the encoded pairs, and the reused prefix they continue."""

    indices: list[int]
    prefix: _SharedPrefix | None


class _SharedPrefix:
    """A query prefix reused by several batches: encoded at most once per replica that runs one of them, and
    released when the last of them is done (a 4B model's keys/values for 2,000 tokens take ~300 MB)."""

    def __init__(self, piece: Piece, batches: int) -> None:
        self.piece = piece
        self._remaining = batches
        self._encoded: dict[int, PrefixKV] = {}
        self._lock = threading.Lock()

    def encoded(self, replica: int, loaded: LoadedModel, count: Callable[[ScoringStats], None]) -> PrefixKV:
        found = self._encoded.get(replica)  # one worker per replica per call: no two threads fill one slot
        if found is None:
            found = self._encoded[replica] = loaded.forward.encode_prefix(self.piece)
            count(ScoringStats(forward_passes=1, computed_tokens=len(self.piece)))
        return found

    def finished_batch(self) -> None:
        with self._lock:
            self._remaining -= 1
            if self._remaining <= 0:
                self._encoded.clear()


def _values(results: list[DocumentScore], raw: bool) -> list[float]:
    return [result.raw if raw else result.probability for result in results]


def _shifted(result: DocumentScore, shift: int) -> DocumentScore:
    """Spans refer to the document as passed in, not as the family read it (zerank strips leading space)."""
    if result.span is None or not shift:
        return result
    start, end = result.span
    return replace(result, span=(start + shift, end + shift))


def _window_bounds(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of ``size`` every ``stride`` tokens, the last one ending at ``n``."""
    bounds = [(start, min(start + size, n)) for start in range(0, max(n - size, 0) + 1, stride)]
    if bounds[-1][1] < n:
        bounds.append((n - size, n))
    return bounds


def _check_count(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


async def _in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(function, *args, **kwargs)


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
