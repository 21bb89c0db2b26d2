"""The rerank step (score → select → account) and its selection policies, against independent references."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _adapter_support import FixedScorer, med_passages

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations.accounting import get_encoding
from zerank_integrations.rerank import RerankStep, finish_rerank
from zerank_integrations.selection import SelectionPolicy, select

# -- policies on chosen scores ----------------------------------------------------------------------------


def test_threshold_then_top_n_then_budget_in_that_order() -> None:
    scores = [0.2, 0.9, 0.5, 0.7, 0.5, float("nan"), 0.95]
    sizes = [1, 6, 2, 5, 1, 1, 3]  # tokens per document for a toy counter: plain sums

    def count(indexes: Sequence[int]) -> int:
        return sum(sizes[i] for i in indexes)

    ranking = [6, 1, 3, 2, 4, 0, 5]  # best first, ties (0.5) in input order, NaN last
    assert [i for i, _ in select(scores, SelectionPolicy()).ranking] == ranking
    assert [i for i, _ in select(scores, SelectionPolicy()).kept] == ranking
    assert [i for i, _ in select(scores, SelectionPolicy(score_threshold=0.5)).kept] == [6, 1, 3, 2, 4]
    assert [i for i, _ in select(scores, SelectionPolicy(score_threshold=0.5, top_n=3)).kept] == [6, 1, 3]
    # budget 9: 6 (3) fits, 1 (+6 = 9) fits, 3 (+5) would be 14: skipped; 2 (+2) would be 11: skipped
    chosen = select(scores, SelectionPolicy(score_threshold=0.5, top_n=4, max_prompt_tokens=9), count)
    assert [i for i, _ in chosen.kept] == [6, 1]
    assert chosen.over_budget == [3, 2]
    # a document that alone breaks the budget is skipped; a later, shorter one still fits
    chosen = select(scores, SelectionPolicy(max_prompt_tokens=5), count)
    assert [i for i, _ in chosen.kept] == [6, 2]
    assert chosen.over_budget == [1, 3, 4, 0, 5]
    with pytest.raises(ValueError, match="needs a token counter"):
        select(scores, SelectionPolicy(max_prompt_tokens=5))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_n": 0}, ValueError, "top_n must be >= 1"),
        ({"score_threshold": 2}, ValueError, r"score_threshold must be in \[0, 1\]"),
        ({"max_prompt_tokens": -1}, ValueError, "max_prompt_tokens must be >= 1"),
        ({"max_prompt_tokens": True}, TypeError, "max_prompt_tokens must be an int"),
    ],
)
def test_policy_validation(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SelectionPolicy(**kwargs)


def test_policy_description() -> None:
    assert SelectionPolicy(top_n=5).describe() == "top 5"
    assert SelectionPolicy(0.3, None, 2000).describe() == "p >= 0.3, all, <= 2,000 prompt tokens"


# -- the token budget, exactly as tiktoken counts the joined prompt ----------------------------------------


def _tiktoken_count(texts: Sequence[str], separator: str = "\n\n") -> int:
    """Independent reference: encode the joined prompt text directly (no per-text cache)."""
    return len(get_encoding("o200k_base").encode_ordinary(separator.join(texts)))


@pytest.fixture(scope="module")
def passages(datasets_dir: Path) -> list[str]:
    return [p.content for p in med_passages(datasets_dir, 60)]


@pytest.mark.parametrize("separator", ["\n\n", " | "])
def test_budget_holds_and_no_skipped_document_would_have_fit(passages: list[str], separator: str) -> None:
    rng = random.Random(7)
    for trial in range(30):
        docs = rng.sample(passages, 20)
        scores = [rng.random() for _ in docs]
        budget = rng.randint(50, 1500)
        ledger = TokenLedger(encoding="o200k_base", separator=separator)
        step = RerankStep(
            FixedScorer(dict(zip(docs, scores, strict=True))), SelectionPolicy(max_prompt_tokens=budget), ledger=ledger
        )
        result = step.run("a question", docs)
        kept = [i for i, _ in result.kept]
        assert _tiktoken_count([docs[i] for i in kept], separator) <= budget, trial
        assert result.savings.tokens_kept == _tiktoken_count([docs[i] for i in kept], separator)
        order = [i for i, _ in result.ranking]
        assert sorted(kept + result.over_budget) == sorted(order)  # every candidate is kept or over budget
        assert kept == [i for i in order if i in kept]  # best first
        for skipped in result.over_budget:
            before = [i for i in kept if order.index(i) < order.index(skipped)]
            assert _tiktoken_count([docs[i] for i in [*before, skipped]], separator) > budget
            with_it = sorted([*kept, skipped], key=order.index)  # in the room finally left, too
            assert _tiktoken_count([docs[i] for i in with_it], separator) > budget


def test_budget_without_a_ledger_counts_o200k(passages: list[str]) -> None:
    docs = passages[:10]
    scores = {d: 1.0 - i / 10 for i, d in enumerate(docs)}
    budget = _tiktoken_count(docs[:3]) + 1
    result = RerankStep(FixedScorer(scores), SelectionPolicy(max_prompt_tokens=budget)).run("q", docs)
    assert [i for i, _ in result.kept][:3] == [0, 1, 2]
    assert _tiktoken_count([docs[i] for i, _ in result.kept]) <= budget
    assert result.savings is None


def test_budget_counts_the_ledgers_formatter() -> None:
    @dataclass
    class Passage:
        title: str
        body: str

    items = [Passage("T" * 5, "word " * 30), Passage("U", "word " * 3), Passage("V", "word " * 4)]
    texts = [p.body for p in items]
    ledger = TokenLedger(encoding="o200k_base", formatter=lambda p: f"# {p.title}\n{p.body}")
    scorer = FixedScorer({texts[0]: 0.9, texts[1]: 0.5, texts[2]: 0.4})
    budget = _tiktoken_count([f"# {p.title}\n{p.body}" for p in items[1:]])
    result = RerankStep(scorer, SelectionPolicy(max_prompt_tokens=budget), ledger=ledger).run("q", texts, prompt=items)
    assert [i for i, _ in result.kept] == [1, 2] and result.over_budget == [0]
    assert result.savings.tokens_kept == budget


# -- the step: one body for sync and async ---------------------------------------------------------------


class RecordingScorer(FixedScorer):
    """A real Reranker that also takes an instruction and remembers what it was given."""

    def __init__(self, scores: dict[str, float]) -> None:
        super().__init__(scores)
        self.instructions: list[str | None] = []

    def score(
        self, query: str, documents: Sequence[str], *, raw: bool = False, instruction: str | None = None
    ) -> list[float]:
        self.instructions.append(instruction)
        return super().score(query, documents, raw=raw)

    async def ascore(
        self, query: str, documents: Sequence[str], *, raw: bool = False, instruction: str | None = None
    ) -> list[float]:
        return self.score(query, documents, raw=raw, instruction=instruction)


async def test_run_and_arun_agree_and_pass_the_instruction() -> None:
    scorer = RecordingScorer({"a": 0.1, "b": 0.8, "c": 0.5})
    ledger = TokenLedger(encoding="o200k_base")
    step = RerankStep(scorer, SelectionPolicy(top_n=2), ledger=ledger, instruction="Find medical abstracts")
    sync = step.run("q", ["a", "b", "c"])
    concurrent = await step.arun("q", ["a", "b", "c"])
    assert sync.kept == concurrent.kept == [(1, 0.8), (2, 0.5)]
    assert sync.ranking == concurrent.ranking == [(1, 0.8), (2, 0.5), (0, 0.1)]
    assert scorer.instructions == ["Find medical abstracts", "Find medical abstracts"]
    assert [r.kept for r in ledger.records] == [2, 2]
    RerankStep(scorer).run("q", ["a"])
    assert scorer.instructions[-1] is None  # no instruction: the keyword is not even sent


async def test_empty_input_never_touches_the_scorer() -> None:
    scorer = FixedScorer({})
    ledger = TokenLedger(encoding="o200k_base")
    step = RerankStep(scorer, SelectionPolicy(top_n=3, max_prompt_tokens=10), ledger=ledger)
    assert step.run("q", []).kept == [] and (await step.arun("q", [])).kept == []
    assert scorer.calls == 0 and ledger.summary()["calls"] == 2


def test_bad_input_and_miscounting_scorers_are_clear_errors() -> None:
    step = RerankStep(FixedScorer({"a": 0.5}))
    with pytest.raises(ValueError, match="query is empty"):
        step.run("  ", ["a"])
    with pytest.raises(TypeError, match="document at index 1 is int"):
        step.run("q", ["a", 3])  # type: ignore[list-item]
    with pytest.raises(RuntimeError, match="FixedScorer returned 1 scores for 2 documents"):
        step.finish("q", ["a", "b"], [0.5])
    with pytest.raises(TypeError, match="scorer must satisfy"):
        RerankStep(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ledger must be a TokenLedger"):
        RerankStep(FixedScorer({}), ledger=object())  # type: ignore[arg-type]


def test_finish_selects_scores_computed_elsewhere() -> None:
    """What a server with its own batcher uses: select and account, no scoring."""
    ledger = TokenLedger(encoding="o200k_base")
    step = RerankStep(FixedScorer({}), SelectionPolicy(score_threshold=0.3, top_n=2), ledger=ledger)
    result = step.finish("q", ["x y", "z", "w v u"], [0.2, 0.9, 0.4])
    assert result.kept == [(1, 0.9), (2, 0.4)] and result.savings.kept == 2
    # the same half without a scorer: what the server runs after its batcher
    bare = finish_rerank("q", ["x y", "z", "w v u"], [0.2, 0.9, 0.4], SelectionPolicy(score_threshold=0.3, top_n=2))
    assert bare.kept == result.kept and bare.ranking == result.ranking and bare.savings is None
    with pytest.raises(ValueError, match="2 scores for 3 documents"):
        finish_rerank("q", ["a", "b", "c"], [0.1, 0.2], SelectionPolicy())
    assert step.scorer.calls == 0


@dataclass(frozen=True)
class _Detail:
    probability: float
    span: tuple[int, int] | None


class DetailedScorer(FixedScorer):
    """A Reranker offering ``score_details`` (like ZerankScorer): the step must use it and keep the spans."""

    def score_details(self, query: str, documents: Sequence[str], **kwargs: Any) -> list[_Detail]:
        return [
            _Detail(p, (0, 3) if len(d) > 3 else None)
            for d, p in zip(documents, self.score(query, documents), strict=True)
        ]

    async def ascore_details(self, query: str, documents: Sequence[str], **kwargs: Any) -> list[_Detail]:
        return self.score_details(query, documents, **kwargs)


async def test_details_and_spans_come_back() -> None:
    step = RerankStep(DetailedScorer({"long text": 0.7, "ab": 0.9}))
    for result in (step.run("q", ["long text", "ab"]), await step.arun("q", ["long text", "ab"])):
        assert result.kept == [(1, 0.9), (0, 0.7)]
        assert result.span(0) == (0, 3) and result.span(1) is None


def test_threads_and_asyncio_get_the_serial_results(scorer: ZerankScorer, passages: list[str]) -> None:
    short = [p[:300] for p in passages[:12]]
    jobs = [(f"question {i % 5} about the lens", short[i % 7 : i % 7 + 5]) for i in range(8)]
    ledger = TokenLedger(encoding="o200k_base")
    step = RerankStep(scorer, SelectionPolicy(top_n=3, max_prompt_tokens=150), ledger=ledger)
    serial = [step.run(q, docs) for q, docs in jobs]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda job: step.run(*job), jobs))

    async def gather() -> list[Any]:
        return await asyncio.gather(*(step.arun(q, docs) for q, docs in jobs))

    concurrent = asyncio.run(gather())
    for other in (threaded, concurrent):
        assert [(r.ranking, r.kept, r.over_budget) for r in other] == [
            (r.ranking, r.kept, r.over_budget) for r in serial
        ]
    assert ledger.summary()["calls"] == 24
    assert any(r.over_budget for r in serial)  # the budget binds, so it is part of what must agree
    assert threading.active_count() < 50
