"""The one small interface every reranker backend offers, with no torch or framework import.

``ZerankScorer`` (local model) and ``RemoteScorer`` (any ``/v1/rerank`` endpoint) both satisfy it, so the
LangChain and LlamaIndex adapters accept either one unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

DEFAULT_MODEL = "zeroentropy/zerank-2"
DEFAULT_MAX_LENGTH = 4096  # tokens per (query, document) prompt
LOGIT_TEMPERATURE = 5.0


def logit_to_probability(logit: float) -> float:
    """zerank's calibration: ``sigmoid(logit / 5)`` (numerically stable on both tails; NaN stays NaN)."""
    z = logit / LOGIT_TEMPERATURE
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs: probabilities in [0, 1], in input order."""

    @property
    def model_name(self) -> str: ...

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]: ...

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]: ...

    async def ascore(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]: ...

    async def arank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]: ...


def validate_query(query: object) -> str:
    """Return the query, or raise: an empty query would score every document the same, silently."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty or whitespace-only; a reranker needs a question to rank against")
    return query


def as_list(items: object, expected: str) -> list[object]:
    """``items`` (any iterable; a generator is drained once) as a list.

    A single string or a non-iterable is refused with ``TypeError`` starting with ``expected`` (e.g.
    "documents must be a sequence of strings"): ``list("abc")`` would silently split it into characters.
    """
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{expected}, not a single string")
    try:
        return list(items)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{expected}, got {type(items).__name__}") from None


def validate_documents(documents: object) -> list[str]:
    """Return the documents as a list, or raise ``TypeError`` naming the first non-string one."""
    docs = as_list(documents, "documents must be a sequence of strings")
    for index, doc in enumerate(docs):
        if not isinstance(doc, str):
            raise TypeError(f"document at index {index} is {type(doc).__name__}, expected str")
    return docs


def validate_top_n(top_n: object) -> int | None:
    """``None`` keeps everything; otherwise an int >= 1 (bools are refused: ``True`` is no count)."""
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise TypeError(f"top_n must be an int >= 1 or None, got {top_n!r}")
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    return top_n


def rank_scores(
    scores: Sequence[float], top_n: int | None = None, score_threshold: float | None = None
) -> list[tuple[int, float]]:
    """(index, score) pairs, best first; ties keep input (retrieval) order; NaN sorts last.

    ``score_threshold`` drops scores below it *before* ``top_n`` applies.
    """
    top_n = validate_top_n(top_n)
    order = sorted(
        range(len(scores)),
        key=lambda i: (math.isnan(scores[i]), -scores[i] if not math.isnan(scores[i]) else 0.0, i),
    )
    ranked = [(i, float(scores[i])) for i in order]
    if score_threshold is not None:
        ranked = [(i, s) for i, s in ranked if s >= score_threshold]
    return ranked if top_n is None else ranked[:top_n]
