"""The LLM bill: what the LLM reported for each call, next to the ledger's prediction and the counterfactual.

A :class:`Bill` collects one :class:`BilledCall` per LLM call fed by a rerank call: the input tokens the LLM
**billed** (``usage.prompt_tokens`` / ``usage_metadata["input_tokens"]``), the ledger's **prediction** for
that prompt, and the whole-input count with every candidate. The counterfactual bill without reranking is
the billed tokens plus what reranking removed (or, when the all-candidates prompt was really sent as a
check, what the LLM billed for it). A prediction that differs from the billed count is a **mismatch**; with
the LLM's own tokenizer there must be none.

Framework handlers fill a bill (:mod:`zerank_integrations.billing.langchain`,
:mod:`zerank_integrations.billing.llama_index`); ``eval``/``demo`` fill one from their own requests.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from zerank_integrations.base import rounded_percent

__all__ = ["BILL_KEYS", "Bill", "BilledCall", "usage_input_tokens"]

BILL_KEYS: tuple[str, ...] = (
    "calls",
    "input_tokens_reranked",
    "input_tokens_all_candidates",
    "input_tokens_saved",
    "percent_of_input_saved",
    "predicted_input_tokens_reranked",
    "mismatches",
    "llm",
    "tokenizer",
    "exact",
)
"""The keys of :meth:`Bill.summary` (``eval.json``'s ``"bill"`` object), in order."""


@dataclass(frozen=True)
class BilledCall:
    """One LLM call fed by one rerank call."""

    query: str | None
    billed_input_tokens: int
    """What the LLM reported for the prompt it received (the reranked documents)."""
    predicted_input_tokens: int | None
    """The ledger's count of that prompt (``None`` when the ledger had no prompt template)."""
    predicted_all_candidates: int | None = None
    """The ledger's count of the same prompt with every candidate."""
    billed_all_candidates: int | None = None
    """What the LLM reported for the all-candidates prompt, when it was sent as a check."""

    @property
    def mismatches(self) -> int:
        """Requests of this call whose billed input differs from the ledger's count (0, 1 or 2)."""
        pairs = [(self.billed_input_tokens, self.predicted_input_tokens)]
        if self.billed_all_candidates is not None:
            pairs.append((self.billed_all_candidates, self.predicted_all_candidates))
        return sum(1 for billed, predicted in pairs if predicted is not None and billed != predicted)

    @property
    def counterfactual_input_tokens(self) -> int | None:
        """The input bill without reranking: billed for the all-candidates prompt when sent, else billed + removed."""
        if self.billed_all_candidates is not None:
            return self.billed_all_candidates
        if self.predicted_all_candidates is None or self.predicted_input_tokens is None:
            return None
        return self.billed_input_tokens + self.predicted_all_candidates - self.predicted_input_tokens

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mismatches": self.mismatches}


class Bill:
    """Billed calls and their reconciliation with the ledger; thread-safe.

    ``derive_counterfactual``: without reranking, the bill would have been billed + removed tokens (the default,
    for handlers); ``False`` reports ``input_tokens_all_candidates`` only where every all-candidates prompt was
    really sent and billed (``eval --llm-counterfactual``), else ``None``.
    """

    def __init__(
        self,
        *,
        llm: str | None,
        tokenizer: str | None,
        exact: bool,
        derive_counterfactual: bool = True,
        price_per_million_input: float | None = None,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.exact = bool(exact)
        self.derive_counterfactual = derive_counterfactual
        self.price_per_million_input = price_per_million_input
        self._calls: list[BilledCall] = []
        self._unpaired: list[int] = []
        self._lock = threading.Lock()

    @classmethod
    def for_ledger(cls, ledger: Any, *, llm: str | None = None, derive_counterfactual: bool = True) -> Bill:
        """A bill in the ledger's terms: its LLM, tokenizer, exactness and price."""
        return cls(
            llm=llm or getattr(ledger, "llm", None),
            tokenizer=getattr(ledger, "encoding", None),
            exact=bool(getattr(ledger, "exact", False)),
            derive_counterfactual=derive_counterfactual,
            price_per_million_input=getattr(ledger, "price_per_million_input", None),
        )

    def add(self, call: BilledCall) -> BilledCall:
        with self._lock:
            self._calls.append(call)
        return call

    def add_unpaired(self, billed_input_tokens: int) -> None:
        """An LLM call no rerank call fed (not part of the saving; reported as ``unpaired_llm_calls``)."""
        with self._lock:
            self._unpaired.append(int(billed_input_tokens))

    @property
    def calls(self) -> list[BilledCall]:
        with self._lock:
            return list(self._calls)

    @property
    def unpaired_llm_calls(self) -> int:
        with self._lock:
            return len(self._unpaired)

    def summary(self) -> dict[str, Any]:
        """Exactly :data:`BILL_KEYS`: billed input with reranking, without it, the saving and the mismatches."""
        calls = self.calls
        billed = sum(c.billed_input_tokens for c in calls)
        predictions = [c.predicted_input_tokens for c in calls]
        counterfactuals = [
            c.billed_all_candidates if not self.derive_counterfactual else c.counterfactual_input_tokens for c in calls
        ]
        everything = sum(counterfactuals) if calls and all(v is not None for v in counterfactuals) else None  # type: ignore[misc]
        saved = everything - billed if everything is not None else None
        return {
            "calls": len(calls),
            "input_tokens_reranked": billed,
            "input_tokens_all_candidates": everything,
            "input_tokens_saved": saved,
            "percent_of_input_saved": rounded_percent(saved, everything) if saved is not None else None,
            "predicted_input_tokens_reranked": sum(predictions) if all(p is not None for p in predictions) else None,  # type: ignore[misc]
            "mismatches": sum(c.mismatches for c in calls),
            "llm": self.llm,
            "tokenizer": self.tokenizer,
            "exact": self.exact,
        }

    def cost_saved_usd(self) -> float | None:
        """Dollars the saving is worth at the input price (``None`` without a price or a counterfactual)."""
        saved = self.summary()["input_tokens_saved"]
        if saved is None or self.price_per_million_input is None:
            return None
        return saved * self.price_per_million_input / 1_000_000

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._unpaired.clear()


def usage_input_tokens(source: Any) -> int | None:
    """Input tokens an LLM reported, from an OpenAI-style ``usage`` (object or dict: ``prompt_tokens``,
    ``input_tokens``) or LangChain's ``usage_metadata``; ``None`` when the response carries none."""
    if source is None:
        return None
    for key in ("input_tokens", "prompt_tokens"):
        value = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
