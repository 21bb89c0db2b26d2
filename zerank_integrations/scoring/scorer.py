"""``ZerankScorer``: the public face of the scoring core. Strings in, probabilities out, in input order."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
from pydantic import SecretStr

from zerank_integrations.base import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL,
    as_list,
    logit_to_probability,
    rank_scores,
    validate_documents,
    validate_query,
    validate_top_n,
)
from zerank_integrations.scoring.batching import padded_slots, plan_batches, run_splitting_on_oom
from zerank_integrations.scoring.forward import encode_prefix, yes_logits_after_prefix, yes_logits_full
from zerank_integrations.scoring.loading import LoadedModel, load_model
from zerank_integrations.scoring.prompts import EncodedPair

logger = logging.getLogger(__name__)

_PAIRS_EXPECTED = "pairs must be a sequence of (query, document) tuples"
# Padded token slots per forward pass. Larger batches use an accelerator better; the plan keeps padding low.
_DEFAULT_BATCH_TOKENS = {"cuda": 32_768, "mps": 8_192, "cpu": 4_096}
_BATCH_OVERHEAD_TOKENS = {"cuda": 1_024, "mps": 256, "cpu": 32}


@dataclass(frozen=True)
class ScoringStats:
    """Cumulative work done by one scorer: what benchmarks and the server report."""

    pairs: int = 0
    forward_passes: int = 0
    real_tokens: int = 0  # tokens that carry a pair's content (a reused prefix counts once)
    computed_tokens: int = 0  # token slots the model computed, padding included
    truncated_pairs: int = 0

    @property
    def padding_efficiency(self) -> float:
        """Real tokens per computed slot (1.0 = no padding)."""
        return self.real_tokens / self.computed_tokens if self.computed_tokens else 1.0

    def __add__(self, other: ScoringStats) -> ScoringStats:
        return ScoringStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: ScoringStats) -> ScoringStats:
        return ScoringStats(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


@dataclass
class _Group:
    """Pairs of one query, with their positions in the caller's flat list."""

    positions: list[int]
    pairs: list[EncodedPair]


class ZerankScorer:
    """Scores (query, document) pairs with a zerank model: ``score``, ``rank`` and their async twins.

    Construction loads the model (or reuses the one this process already loaded with the same model,
    revision, device and dtype). Instances are thread-safe and can be shared by any number of integrations.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_tokens: int | None = None,
        local_files_only: bool = False,
        prefix_reuse: bool | Literal["auto"] = "auto",
        prefix_min_tokens: int = 96,
        cache_dir: str | os.PathLike[str] | None = None,
        token: str | SecretStr | None = None,
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if batch_tokens is not None and (
            isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1
        ):
            raise ValueError(f"batch_tokens must be a positive int or None, got {batch_tokens!r}")
        if prefix_reuse not in (True, False, "auto"):
            raise ValueError(f"prefix_reuse must be True, False or 'auto', got {prefix_reuse!r}")
        secret = token if isinstance(token, SecretStr) or token is None else SecretStr(token)
        self._loaded: LoadedModel = load_model(
            model,
            revision=revision,
            device=device,
            dtype=dtype,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
            token=secret.get_secret_value() if secret is not None else None,
        )
        if max_length <= self._loaded.template.overhead:
            raise ValueError(
                f"max_length={max_length} must exceed the {self._loaded.template.overhead} tokens of the "
                "prompt template itself"
            )
        positions = getattr(self._loaded.body.config, "max_position_embeddings", None)
        if isinstance(positions, int) and max_length > positions:
            raise ValueError(
                f"max_length={max_length} exceeds the {positions} positions model {model!r} was trained for"
            )
        self.model = model
        self.revision = revision
        self.max_length = max_length
        device_type = self._loaded.device.type
        self.batch_tokens = batch_tokens or _DEFAULT_BATCH_TOKENS.get(device_type, 4_096)
        self._batch_overhead = _BATCH_OVERHEAD_TOKENS.get(device_type, 64)
        self.prefix_reuse = prefix_reuse
        self.prefix_min_tokens = prefix_min_tokens
        self._stats = ScoringStats()
        self._stats_lock = threading.Lock()
        self._warned_truncation = False

    # -- public interface -------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.model

    @property
    def device(self) -> torch.device:
        return self._loaded.device

    @property
    def dtype(self) -> torch.dtype:
        return self._loaded.dtype

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
        return (
            f"ZerankScorer(model={self.model!r}, revision={self.revision!r}, device='{self.device}', "
            f"dtype={str(self.dtype).removeprefix('torch.')}, max_length={self.max_length}, "
            f"batch_tokens={self.batch_tokens})"
        )

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]:
        """Relevance of each document to ``query``: probabilities in [0, 1] (``raw=True``: "Yes" logits)."""
        validate_query(query)
        docs = validate_documents(documents)
        if not docs:
            return []
        return self._finish(self._score_pairs([(query, doc) for doc in docs]), raw)

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, raw: bool = False) -> list[float]:
        """Scores of (query, document) pairs with any mix of queries, batched together (for servers)."""
        checked: list[tuple[str, str]] = []
        for index, pair in enumerate(as_list(pairs, _PAIRS_EXPECTED)):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"pair at index {index} must be a (query, document) tuple, got {pair!r:.80}")
            query, document = pair
            try:
                validate_query(query)
            except (TypeError, ValueError) as error:
                raise type(error)(f"pair at index {index}: {error}") from None
            if not isinstance(document, str):
                raise TypeError(f"pair at index {index}: document is {type(document).__name__}, expected str")
            checked.append((query, document))
        if not checked:
            return []
        return self._finish(self._score_pairs(checked), raw)

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """(input index, probability) pairs, best first; ties keep input order."""
        validate_top_n(top_n)  # before the model runs, not after
        return rank_scores(self.score(query, documents), top_n)

    async def ascore(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]:
        """``score`` in a worker thread: the event loop keeps running while the model works.

        Documents are validated (and a generator drained) here, on the caller's side, so a single string is
        refused as ``score`` refuses it instead of being scored character by character.
        """
        return await asyncio.to_thread(self.score, query, validate_documents(documents), raw=raw)

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        return await asyncio.to_thread(self.rank, query, validate_documents(documents), top_n)

    async def ascore_pairs(self, pairs: Sequence[tuple[str, str]], *, raw: bool = False) -> list[float]:
        return await asyncio.to_thread(self.score_pairs, as_list(pairs, _PAIRS_EXPECTED), raw=raw)

    # -- internals ----------------------------------------------------------------------------------------
    @staticmethod
    def _finish(logits: list[float], raw: bool) -> list[float]:
        bad = [i for i, value in enumerate(logits) if not math.isfinite(value)]
        if bad:
            raise FloatingPointError(
                f"the model produced non-finite scores for pairs {bad[:10]}; with float16 this is usually "
                "overflow: use dtype='bfloat16' or 'float32'"
            )
        return logits if raw else [logit_to_probability(v) for v in logits]

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> tuple[list[_Group], list[bool]]:
        """Tokenize each distinct query once and all documents in one batch call, then assemble pairs.

        ``pairs`` are already stripped. Returns the pairs grouped by query, and which pairs were truncated.
        """
        loaded = self._loaded
        queries = list(dict.fromkeys(query for query, _ in pairs))
        # verbose=False: texts longer than the tokenizer's model_max_length are fine here (``encode`` cuts them
        # to max_length); transformers' "will result in indexing errors" warning would be false.
        with loaded.tokenizer_lock:  # HF fast tokenizers are not safe for concurrent use
            query_ids = loaded.tokenizer(queries, add_special_tokens=False, verbose=False)["input_ids"]
            doc_ids = loaded.tokenizer([doc for _, doc in pairs], add_special_tokens=False, verbose=False)["input_ids"]
        query_index = {query: i for i, query in enumerate(queries)}
        groups: dict[int, _Group] = {}
        truncated: list[bool] = []
        for position, ((query, _), ids) in enumerate(zip(pairs, doc_ids, strict=True)):
            q = query_index[query]
            encoded = loaded.template.encode(query_ids[q], ids, self.max_length)
            truncated.append(encoded.truncated)
            group = groups.setdefault(q, _Group([], []))
            group.pairs.append(encoded)
            group.positions.append(position)
        return list(groups.values()), truncated

    def _warn_truncation(self, count: int) -> None:
        with self._stats_lock:  # once per scorer, even when threads truncate at the same moment
            if self._warned_truncation:
                return
            self._warned_truncation = True
        message = (
            f"{count} (query, document) pair(s) exceed max_length={self.max_length} tokens and were shortened "
            "(document first, then query); the prompt template is kept whole. Warned once per scorer."
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=4)

    def _uses_prefix(self, group: _Group) -> bool:
        if self.prefix_reuse == "auto":
            return len(group.pairs) >= 2 and len(group.pairs[0].prefix) >= self.prefix_min_tokens
        return bool(self.prefix_reuse) and len(group.pairs) >= 2

    def _score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Logits in input order. Identical (query, document) pairs are scored once: equal texts get equal
        scores whatever batch they would have landed in, so ties stay ties, and duplicates cost nothing."""
        stripped = [(query.strip(), document.strip()) for query, document in pairs]
        unique = list(dict.fromkeys(stripped))
        groups, truncated = self._encode(unique)
        logits = [0.0] * len(unique)
        plain: list[tuple[int, list[int]]] = []
        for group in groups:
            if self._uses_prefix(group):
                for position, value in zip(group.positions, self._score_with_prefix(group.pairs), strict=True):
                    logits[position] = value
            else:
                plain.extend(
                    (position, [*pair.prefix, *pair.continuation])
                    for position, pair in zip(group.positions, group.pairs, strict=True)
                )
        if plain:
            rows = [row for _, row in plain]
            values = self._run_batches(rows, lambda batch: yes_logits_full(self._loaded, batch))
            for (position, _), value in zip(plain, values, strict=True):
                logits[position] = value
        where = {pair: i for i, pair in enumerate(unique)}
        order = [where[pair] for pair in stripped]
        shortened = sum(truncated[i] for i in order)
        self._count(ScoringStats(pairs=len(pairs), truncated_pairs=shortened))
        if shortened:
            self._warn_truncation(shortened)
        return [logits[i] for i in order]

    def _score_with_prefix(self, pairs: list[EncodedPair]) -> list[float]:
        prefix = pairs[0].prefix
        cache = encode_prefix(self._loaded, prefix)
        self._count(ScoringStats(forward_passes=1, real_tokens=len(prefix), computed_tokens=len(prefix)))
        rows = [pair.continuation for pair in pairs]
        return self._run_batches(rows, lambda batch: yes_logits_after_prefix(self._loaded, cache, batch))

    def _run_batches(self, rows: list[list[int]], forward: Callable[[list[list[int]]], list[float]]) -> list[float]:
        """Score rows in planned batches; results come back in ``rows`` order."""
        lengths = [len(row) for row in rows]
        results = [0.0] * len(rows)

        def run(batch: Sequence[int]) -> list[float]:
            values = forward([rows[i] for i in batch])
            real, computed = sum(lengths[i] for i in batch), padded_slots(lengths, batch)
            self._count(ScoringStats(forward_passes=1, real_tokens=real, computed_tokens=computed))
            return values

        for batch in plan_batches(lengths, self.batch_tokens, batch_overhead_tokens=self._batch_overhead):
            values = run_splitting_on_oom(batch, run, _is_out_of_memory, self._after_oom)
            for index, value in zip(batch, values, strict=True):
                results[index] = value
        return results

    def _count(self, work: ScoringStats) -> None:
        with self._stats_lock:
            self._stats = self._stats + work

    def _after_oom(self) -> None:
        logger.warning("out of memory on %s: splitting the batch and retrying", self.device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
