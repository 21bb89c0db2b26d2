"""The one rerank step every caller uses: score → select → account.

Both adapters, ``evaluate`` and the CLI's ``search`` run a :class:`RerankStep`; the server, which scores
across requests in its batcher, runs the step's second half, :func:`finish_rerank`. The body is written
once: :meth:`RerankStep.run` and :meth:`RerankStep.arun` share the input checks and :func:`finish_rerank`
(selection and token accounting); they differ only in whether the scorer is called with ``score`` or
awaited with ``ascore``. No torch, framework or tiktoken import here.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from zerank_integrations.base import Reranker, as_list, validate_documents, validate_instruction, validate_query
from zerank_integrations.selection import Selection, SelectionPolicy, select

__all__ = ["DEFAULT_BUDGET_ENCODING", "RerankResult", "RerankStep", "SavingsRecorder", "finish_rerank"]

#: Encoding a token budget is counted with when no ledger is given (gpt-4o, gpt-4.1, gpt-5, o-series).
DEFAULT_BUDGET_ENCODING = "o200k_base"


@runtime_checkable
class SavingsRecorder(Protocol):
    """Anything shaped like ``TokenLedger``: ``record`` one call, ``count_tokens`` of documents as the prompt
    holds them. Structural, so callers need not import tiktoken."""

    def record(self, query: str, candidates: list[Any], kept: list[Any]) -> Any: ...

    def count_tokens(self, documents: Sequence[Any]) -> int: ...


@functools.lru_cache(maxsize=1)
def _budget_counter() -> Callable[[Sequence[str]], int]:
    """Token counter for budgets without a ledger: a private ``TokenLedger`` on o200k_base (loaded once)."""
    from zerank_integrations.accounting import TokenLedger

    return TokenLedger(encoding=DEFAULT_BUDGET_ENCODING).count_tokens


@dataclass(frozen=True)
class RerankResult:
    """One reranked call: every candidate ranked, the kept ones, and what keeping them saved."""

    ranking: list[tuple[int, float]]
    """(index, probability) of every candidate, best first; ties keep input (retrieval) order."""
    kept: list[tuple[int, float]]
    """(index, probability) of the documents the policy keeps, best first."""
    over_budget: list[int] = field(default_factory=list)
    """Indexes that passed threshold and ``top_n`` but did not fit ``max_prompt_tokens``."""
    savings: Any = None
    """The ledger's ``TokenSavings`` for this call (``None`` without a ledger)."""
    details: list[Any] | None = None
    """Per input index, the scorer's ``DocumentScore`` (tokens, truncation, best-window span) when it gives one."""

    def span(self, index: int) -> tuple[int, int] | None:
        """[start, end) characters of the best-scoring window of document ``index`` (``max_chunk`` only)."""
        if self.details is None:
            return None
        span = getattr(self.details[index], "span", None)
        return (int(span[0]), int(span[1])) if span is not None else None


@dataclass(frozen=True)
class _Request:
    """A validated call: the texts to score and what the ledger (and budget) count for each."""

    query: str
    documents: list[str]
    prompt: list[Any]


class RerankStep:
    """Score documents for a query, keep what ``policy`` allows, record the call on ``ledger``.

    ``scorer`` is any :class:`~zerank_integrations.base.Reranker`; when it offers ``score_details``
    (``ZerankScorer``), the per-document details (best-window span, truncation) come back in the result.
    ``instruction`` is passed to the scorer when given. A token budget is counted by the ledger (its
    encoding, formatter and separator), or on o200k_base without one. Cheap to build: make one per call if
    the settings change. Thread- and asyncio-safe when the scorer and ledger are.
    """

    def __init__(
        self,
        scorer: Reranker,
        policy: SelectionPolicy | None = None,
        *,
        ledger: SavingsRecorder | None = None,
        instruction: str | None = None,
    ) -> None:
        if not isinstance(scorer, Reranker):
            raise TypeError(
                f"scorer must satisfy zerank_integrations.base.Reranker (model_name, score, rank, ascore, arank), "
                f"got {type(scorer).__name__}"
            )
        if ledger is not None and not isinstance(ledger, SavingsRecorder):
            raise TypeError(
                "ledger must be a TokenLedger (or have record(query, candidates, kept) and count_tokens(documents)), "
                f"got {type(ledger).__name__}"
            )
        self.scorer = scorer
        self.policy = policy if policy is not None else SelectionPolicy()
        self.ledger = ledger
        self.instruction = validate_instruction(instruction)

    @property
    def model_name(self) -> str:
        return self.scorer.model_name

    # -- the step ---------------------------------------------------------------------------------------
    def run(self, query: str, documents: Sequence[str], *, prompt: Sequence[Any] | None = None) -> RerankResult:
        """Rerank ``documents`` for ``query``.

        ``prompt`` (one per document) is what the LLM receives for each document, in the form the ledger takes
        (strings, or any objects when the ledger has a ``formatter``); by default the documents themselves.
        The ledger and the token budget count it.
        """
        request = self._prepare(query, documents, prompt)
        method, with_details = self._scoring_method(asynchronous=False)
        scored = method(request.query, request.documents, **self._kwargs) if request.documents else []
        return self._finish_request(request, scored, with_details)

    async def arun(self, query: str, documents: Sequence[str], *, prompt: Sequence[Any] | None = None) -> RerankResult:
        """:meth:`run` without blocking the event loop: awaits the scorer's ``ascore``; counting runs in a thread."""
        request = self._prepare(query, documents, prompt)
        method, with_details = self._scoring_method(asynchronous=True)
        scored = await method(request.query, request.documents, **self._kwargs) if request.documents else []
        if self.ledger is None and self.policy.max_prompt_tokens is None:
            return self._finish_request(request, scored, with_details)  # nothing to count: no need for a thread
        return await asyncio.to_thread(self._finish_request, request, scored, with_details)

    def finish(
        self,
        query: str,
        documents: Sequence[str],
        scores: Sequence[float],
        *,
        prompt: Sequence[Any] | None = None,
        details: Sequence[Any] | None = None,
    ) -> RerankResult:
        """Select and account for scores computed elsewhere, with this step's policy and ledger."""
        if len(scores) != len(documents):
            raise RuntimeError(
                f"{type(self.scorer).__name__} returned {len(scores)} scores for {len(documents)} documents"
            )
        return finish_rerank(query, documents, scores, self.policy, ledger=self.ledger, prompt=prompt, details=details)

    # -- pieces -----------------------------------------------------------------------------------------
    def _prepare(self, query: str, documents: Sequence[str], prompt: Sequence[Any] | None) -> _Request:
        query = validate_query(query)
        docs = validate_documents(documents)
        if prompt is None:
            return _Request(query, docs, docs)
        items = as_list(prompt, "prompt must be a sequence with one entry per document")
        if len(items) != len(docs):
            raise ValueError(f"prompt has {len(items)} entries for {len(docs)} documents")
        return _Request(query, docs, items)

    @property
    def _kwargs(self) -> dict[str, Any]:
        """Keywords for the scorer: the instruction only when there is one (older scorers do not take it)."""
        return {"instruction": self.instruction} if self.instruction is not None else {}

    def _scoring_method(self, *, asynchronous: bool) -> tuple[Callable[..., Any], bool]:
        """The scorer's ``[a]score_details`` when it has one (scores with spans), else ``[a]score``."""
        prefix = "a" if asynchronous else ""
        method = getattr(self.scorer, f"{prefix}score_details", None)
        if callable(method):
            return method, True
        return getattr(self.scorer, f"{prefix}score"), False

    def _finish_request(self, request: _Request, scored: Sequence[Any], with_details: bool) -> RerankResult:
        values = list(scored)
        scores = [float(d.probability) for d in values] if with_details else values
        details = values if with_details else None
        return self.finish(request.query, request.documents, scores, prompt=request.prompt, details=details)


def finish_rerank(
    query: str,
    documents: Sequence[str],
    scores: Sequence[float],
    policy: SelectionPolicy,
    *,
    ledger: SavingsRecorder | None = None,
    prompt: Sequence[Any] | None = None,
    details: Sequence[Any] | None = None,
) -> RerankResult:
    """The select -> account half of the step, for scores computed elsewhere (a server's cross-request batcher).

    Needs no scorer: the server holds only a batchable model. ``prompt`` is what the ledger and the token
    budget count per document (the documents themselves by default).
    """
    docs = list(documents)
    if len(scores) != len(docs):
        raise ValueError(f"{len(scores)} scores for {len(docs)} documents")
    items = docs if prompt is None else list(prompt)
    selection: Selection = select([float(s) for s in scores], policy, _budget_count(policy, ledger, items))
    savings = ledger.record(query, items, [items[i] for i, _ in selection.kept]) if ledger is not None else None
    return RerankResult(
        ranking=selection.ranking,
        kept=selection.kept,
        over_budget=selection.over_budget,
        savings=savings,
        details=list(details) if details is not None else None,
    )


def _budget_count(
    policy: SelectionPolicy, ledger: SavingsRecorder | None, items: list[Any]
) -> Callable[[Sequence[int]], int] | None:
    """Tokens of the kept items, counted as the prompt holds them (``None`` when there is no budget)."""
    if policy.max_prompt_tokens is None:
        return None
    count = ledger.count_tokens if ledger is not None else _budget_counter()
    return lambda indexes: count([items[i] for i in indexes])
