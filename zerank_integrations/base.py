"""The one small interface every reranker backend offers, with no torch or framework import.

``ZerankScorer`` (local model) and ``RemoteScorer`` (any ``/v1/rerank`` endpoint) both satisfy it, so the
LangChain and LlamaIndex adapters accept either one unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

DEFAULT_MODEL = "zeroentropy/zerank-2-reranker"


@dataclass(frozen=True)
class Calibration:
    """A family's map from raw score to probability: ``sigmoid(raw / temperature)``.

    Every supported family calibrates this way: zerank with temperature 5, the log-odds families
    (Qwen3-Reranker, mxbai, two-label classifiers) and one-label classifiers with temperature 1.
    """

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (
            isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0
        ):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")

    def probability(self, raw: float) -> float:
        """``sigmoid(raw / temperature)``, numerically stable on both tails; NaN stays NaN."""
        z = raw / self.temperature
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def raw(self, probability: float) -> float:
        """The inverse: ``temperature * log(p / (1 - p))`` (±inf at 0 and 1, NaN stays NaN)."""
        if math.isnan(probability):
            return math.nan
        if probability <= 0.0:
            return -math.inf
        if probability >= 1.0:
            return math.inf
        return self.temperature * (math.log(probability) - math.log1p(-probability))


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs: probabilities in [0, 1], in input order.

    ``instruction`` steers families that take one (zerank, Qwen3-Reranker, mxbai-rerank-v2); a scorer whose
    model takes none raises ``ValueError`` when given one.
    """

    @property
    def model_name(self) -> str: ...

    def score(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]: ...

    def rank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, *, instruction: str | None = None
    ) -> list[tuple[int, float]]: ...

    async def ascore(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]: ...

    async def arank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, *, instruction: str | None = None
    ) -> list[tuple[int, float]]: ...


def validate_query(query: object) -> str:
    """Return the query, or raise: an empty query would score every document the same, silently."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty or whitespace-only; a reranker needs a question to rank against")
    check_unicode(query, "query")
    return query


def check_unicode(text: str, what: str) -> None:
    """Refuse text no tokenizer can encode (a lone surrogate such as ``"\\udc00"``), naming ``what``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} is not valid Unicode text: lone surrogate {text[error.start]!r} at character {error.start}"
        ) from None


def validate_instruction(instruction: object) -> str | None:
    """``None`` for no instruction (a blank string counts as none, as in vLLM's score templates)."""
    if instruction is None:
        return None
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a string or None, got {type(instruction).__name__}")
    check_unicode(instruction, "instruction")
    return instruction if instruction.strip() else None


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
        check_unicode(doc, f"document at index {index}")
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


def rounded_percent(part: float, whole: float) -> float:
    """``part`` as a percent of ``whole``, rounded to 2 decimals (90.13, not 90.12857142857143): a figure for
    people, shown next to the exact counts; 0.0 for an empty whole."""
    return round(100.0 * part / whole, 2) if whole else 0.0
