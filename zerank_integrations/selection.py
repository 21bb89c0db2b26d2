"""Which reranked documents go into the prompt: ``score_threshold`` → ``top_n`` → ``max_prompt_tokens``.

Pure functions over scores (no torch, no framework, no tiktoken import): the token budget is given a counter
(the ledger's, so the kept documents are measured exactly as the ledger counts them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from zerank_integrations.base import rank_scores, validate_top_n

__all__ = ["Selection", "SelectionPolicy", "select", "validate_max_prompt_tokens", "validate_score_threshold"]

#: ``count(indexes)``: prompt tokens of the documents at these candidate indexes, formatted and joined
TokenCounter = Callable[[Sequence[int]], int]


def validate_score_threshold(value: object) -> float | None:
    """``None`` or a probability in [0, 1] (bools are refused: ``True`` is no probability)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"score_threshold must be a probability in [0, 1] or None, got {value!r}")
    if not (0.0 <= float(value) <= 1.0):  # also refuses NaN
        raise ValueError(f"score_threshold must be in [0, 1], got {value!r}")
    return float(value)


def validate_max_prompt_tokens(value: object) -> int | None:
    """``None`` (no budget) or an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_prompt_tokens must be an int >= 1 or None, got {value!r}")
    if value < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1, got {value}")
    return value


@dataclass(frozen=True)
class SelectionPolicy:
    """What is kept after scoring, applied in this order.

    1. ``score_threshold``: drop documents whose probability is below it;
    2. ``top_n``: keep the best ``top_n`` of the rest (``None``: all);
    3. ``max_prompt_tokens``: walk the rest best first and keep a document while the kept ones, formatted and
       joined as the ledger counts them, stay within the budget. A document that alone would break the
       budget is skipped, and a later, shorter one may still fit.
    """

    score_threshold: float | None = None
    top_n: int | None = None
    max_prompt_tokens: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "score_threshold", validate_score_threshold(self.score_threshold))
        object.__setattr__(self, "top_n", validate_top_n(self.top_n))
        object.__setattr__(self, "max_prompt_tokens", validate_max_prompt_tokens(self.max_prompt_tokens))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """Short human text, e.g. ``p >= 0.3, top 5, <= 2,000 prompt tokens``."""
        parts = []
        if self.score_threshold is not None:
            parts.append(f"p >= {self.score_threshold:g}")
        parts.append(f"top {self.top_n}" if self.top_n is not None else "all")
        if self.max_prompt_tokens is not None:
            parts.append(f"<= {self.max_prompt_tokens:,} prompt tokens")
        return ", ".join(parts)


@dataclass(frozen=True)
class Selection:
    """Outcome of :func:`select`: every candidate ranked, the kept ones, and those the budget skipped."""

    ranking: list[tuple[int, float]]
    """(index, score) of every candidate, best first; ties keep input order; NaN last."""
    kept: list[tuple[int, float]]
    """(index, score) of the documents kept, best first."""
    over_budget: list[int] = field(default_factory=list)
    """Indexes that passed threshold and ``top_n`` but were skipped because they did not fit the budget."""


def select(scores: Sequence[float], policy: SelectionPolicy, count_tokens: TokenCounter | None = None) -> Selection:
    """Apply ``policy`` to ``scores`` (one per candidate, input order).

    ``count_tokens`` is required when the policy has a token budget; it is called with candidate indexes in
    the order they would appear in the prompt (best first).
    """
    ranking = rank_scores(scores)
    chosen = rank_scores(scores, policy.top_n, policy.score_threshold)
    if policy.max_prompt_tokens is None:
        return Selection(ranking=ranking, kept=chosen)
    if count_tokens is None:
        raise ValueError("max_prompt_tokens needs a token counter (a TokenLedger's count_tokens)")
    kept: list[tuple[int, float]] = []
    over: list[int] = []
    for index, score in chosen:
        if count_tokens([i for i, _ in kept] + [index]) <= policy.max_prompt_tokens:
            kept.append((index, score))
        else:
            over.append(index)
    return Selection(ranking=ranking, kept=kept, over_budget=over)
