"""ZerankRerank as a LangChain document compressor: vs ZerankScorer.rank, token budgets, savings events, the
offline Embeddings, and end to end in a RAG chain."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from _adapter_support import FixedScorer, load_example, med_passages, shared_embedder
from langchain_chroma import Chroma
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations.accounting import get_encoding
from zerank_integrations.langchain import SAVINGS_EVENT, SentenceTransformerEmbeddings, ZerankRerank


@pytest.fixture(scope="module")
def documents(datasets_dir: Path) -> list[Document]:
    """20 real MED documents with nested metadata (to catch shallow copies)."""
    return [
        Document(page_content=p.content, metadata={"doc_id": p.id, "tags": {"source": ["med"]}}, id=p.id)
        for p in med_passages(datasets_dir, 20)
    ]


def texts_of(docs: list[Document]) -> list[str]:
    return [d.page_content for d in docs]


def test_results_equal_scorer_rank(scorer: ZerankScorer, documents: list[Document], queries: list[str]) -> None:
    reranker = ZerankRerank(scorer=scorer, top_n=5)
    out = reranker.compress_documents(documents, queries[0])
    expected = scorer.rank(queries[0], texts_of(documents), top_n=5)
    assert len(out) == 5
    assert [d.metadata["doc_id"] for d in out] == [documents[i].metadata["doc_id"] for i, _ in expected]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([s for _, s in expected], abs=1e-9)
    assert [d.id for d in out] == [documents[i].id for i, _ in expected]
    scores = [d.metadata["relevance_score"] for d in out]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_returns_new_documents_and_leaves_callers_untouched(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    before = copy.deepcopy(documents)
    out = ZerankRerank(scorer=scorer, top_n=20).compress_documents(documents, queries[1])
    assert documents == before
    assert all("relevance_score" not in d.metadata for d in documents)
    assert not any(o is d for o in out for d in documents)
    out[0].metadata["tags"]["source"].append("mutated downstream")
    out[0].metadata["doc_id"] = "changed"
    assert documents == before


def test_top_n_larger_than_candidates_returns_all_sorted(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    few = documents[:7]
    out = ZerankRerank(scorer=scorer, top_n=50).compress_documents(few, queries[2])
    expected = scorer.rank(queries[2], texts_of(few))
    assert [d.page_content for d in out] == [few[i].page_content for i, _ in expected]
    assert len(out) == 7


async def test_empty_candidates_leave_the_model_untouched(scorer: ZerankScorer, queries: list[str]) -> None:
    ledger = TokenLedger(encoding="o200k_base")
    reranker = ZerankRerank(scorer=scorer, ledger=ledger)
    pairs_before = scorer.stats.pairs
    assert list(reranker.compress_documents([], queries[0])) == []
    assert list(await reranker.acompress_documents([], queries[0])) == []
    assert scorer.stats.pairs == pairs_before
    assert ledger.summary()["calls"] == 2 and ledger.summary()["tokens_in"] == 0


def test_empty_text_documents_are_scored_not_dropped(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    docs = [documents[0], Document(page_content="", metadata={"doc_id": "empty"}), documents[1]]
    out = ZerankRerank(scorer=scorer, top_n=10).compress_documents(docs, queries[0])
    probabilities = scorer.score(queries[0], texts_of(docs))
    by_id = {d.metadata["doc_id"]: d.metadata["relevance_score"] for d in out}
    assert len(out) == 3
    assert by_id["empty"] == pytest.approx(probabilities[1], abs=1e-9)


def test_ties_keep_retrieval_order() -> None:
    scorer = FixedScorer({"a": 0.5, "b": 0.9, "c": 0.5, "d": 0.2, "e": 0.9})
    docs = [Document(page_content=t, metadata={"pos": i}) for i, t in enumerate("abcde")]
    out = ZerankRerank(scorer=scorer, top_n=4).compress_documents(docs, "q")
    assert [d.metadata["pos"] for d in out] == [1, 4, 0, 2]
    # identical texts (same score) stay in the order the retriever gave them
    same = [Document(page_content="a", metadata={"pos": i}) for i in range(4)]
    assert [d.metadata["pos"] for d in ZerankRerank(scorer=scorer).compress_documents(same, "q")] == [
        0,
        1,
        2,
        3,
    ]


def test_score_threshold_drops_before_top_n(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    probabilities = scorer.score(queries[3], texts_of(documents))
    third_best = sorted(probabilities, reverse=True)[2]
    out = ZerankRerank(scorer=scorer, top_n=5, score_threshold=third_best).compress_documents(documents, queries[3])
    assert len(out) == 3
    assert min(d.metadata["relevance_score"] for d in out) == pytest.approx(third_best, abs=1e-12)
    assert ZerankRerank(scorer=scorer, top_n=5, score_threshold=1.0).compress_documents(documents, "x") == []


def test_ledger_records_every_call(scorer: ZerankScorer, documents: list[Document], queries: list[str]) -> None:
    ledger = TokenLedger(llm="gpt-4o")
    reference = TokenLedger(llm="gpt-4o")
    out = ZerankRerank(scorer=scorer, top_n=5, ledger=ledger).compress_documents(documents, queries[0])
    summary = ledger.summary()
    assert (summary["calls"], summary["candidates"], summary["kept"]) == (1, 20, 5)
    assert summary["tokens_in"] == reference.count_tokens(texts_of(documents))
    assert summary["tokens_kept"] == reference.count_tokens([d.page_content for d in out])
    assert ledger.records[0].query == queries[0]


def test_two_wrappers_naming_one_model_share_it(checkpoint_dir: Path, scorer: ZerankScorer) -> None:
    first = ZerankRerank(model=str(checkpoint_dir), top_n=3)
    second = ZerankRerank(model=str(checkpoint_dir), top_n=7, max_length=256)
    assert first.reranker is not second.reranker
    assert first.reranker.loaded_model is second.reranker.loaded_model is scorer.loaded_model  # type: ignore[attr-defined]
    assert second.reranker.max_length == 256  # type: ignore[attr-defined]
    assert first.model_name == str(checkpoint_dir)


async def test_async_matches_sync_under_32_concurrent_calls(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    reranker = ZerankRerank(scorer=scorer, top_n=4)
    short = [Document(page_content=d.page_content[:200], metadata=d.metadata) for d in documents]
    jobs = [(queries[i % 8], short[i % 5 : i % 5 + 5]) for i in range(32)]
    sequential = [reranker.compress_documents(docs, q) for q, docs in jobs]
    concurrent = await asyncio.gather(*(reranker.acompress_documents(docs, q) for q, docs in jobs))
    assert [[(d.metadata["doc_id"], d.metadata["relevance_score"]) for d in r] for r in concurrent] == [
        [(d.metadata["doc_id"], d.metadata["relevance_score"]) for d in r] for r in sequential
    ]


class _AsyncOnly:
    """A Reranker whose blocking methods fail: proves the async path only awaits the scorer."""

    def __init__(self, inner: ZerankScorer) -> None:
        self.inner = inner
        self.model_name = inner.model_name

    def score(self, *args: Any, **kwargs: Any) -> list[float]:
        raise AssertionError("acompress_documents called the blocking score()")

    def rank(self, *args: Any, **kwargs: Any) -> list[tuple[int, float]]:
        raise AssertionError("acompress_documents called the blocking rank()")

    async def ascore(self, query: str, documents: Any, *, raw: bool = False) -> list[float]:
        return await self.inner.ascore(query, documents, raw=raw)

    async def arank(self, query: str, documents: Any, top_n: int | None = None) -> list[tuple[int, float]]:
        return await self.inner.arank(query, documents, top_n)


async def test_async_path_never_calls_blocking_scoring(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    out = await ZerankRerank(scorer=_AsyncOnly(scorer), top_n=5).acompress_documents(documents, queries[4])
    expected = scorer.rank(queries[4], texts_of(documents), top_n=5)
    assert [d.metadata["doc_id"] for d in out] == [documents[i].metadata["doc_id"] for i, _ in expected]


def test_non_documents_are_refused_with_their_index(scorer: ZerankScorer, documents: list[Document]) -> None:
    with pytest.raises(TypeError, match="index 1"):
        ZerankRerank(scorer=scorer).compress_documents([documents[0], "plain string"], "q")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="query is empty"):
        ZerankRerank(scorer=scorer).compress_documents(documents, "  ")


# -- end to end: Chroma (k=50) -> ContextualCompressionRetriever -> LCEL chain -> fake chat model ---------


class PromptCapture(BaseCallbackHandler):
    """Records the messages every chat model in the run receives."""

    def __init__(self) -> None:
        self.prompts: list[list[Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[Any]], **kwargs: Any) -> None:
        self.prompts.extend(messages)


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Use only these documents:\n\n{context}"), ("human", "{question}")]
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{i}] {d.page_content}" for i, d in enumerate(docs, start=1))


@pytest.fixture(scope="module")
def chroma_store(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Chroma:
    """Built by the example's own code (embedded Chroma, cosine, MED ids), so the test covers it too."""
    example = load_example("langchain_rag")
    folder = str(tmp_path_factory.mktemp("chroma-langchain"))
    return example.build_store(
        med_passages(datasets_dir), folder, SentenceTransformerEmbeddings(embedder=shared_embedder())
    )


async def test_rag_chain_prompt_holds_exactly_the_reranked_top_5(
    chroma_store: Chroma, scorer: ZerankScorer, queries: list[str]
) -> None:
    query = queries[5]
    base_retriever = chroma_store.as_retriever(search_kwargs={"k": 50})
    retrieved = base_retriever.invoke(query)
    assert len(retrieved) == 50
    texts = texts_of(retrieved)
    expected = [retrieved[i] for i, _ in scorer.rank(query, texts, top_n=5)]
    expected_system = "Use only these documents:\n\n" + "\n\n".join(
        f"[{k}] {d.page_content}" for k, d in enumerate(expected, start=1)
    )

    ledger = TokenLedger(llm="gpt-4o")
    retriever = ContextualCompressionRetriever(
        base_compressor=ZerankRerank(scorer=scorer, top_n=5, ledger=ledger), base_retriever=base_retriever
    )
    llm = FakeListChatModel(responses=["answer one", "answer two"])
    chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | PROMPT | llm | StrOutputParser()

    capture = PromptCapture()
    assert chain.invoke(query, config={"callbacks": [capture]}) == "answer one"
    assert await chain.ainvoke(query, config={"callbacks": [capture]}) == "answer two"
    assert len(capture.prompts) == 2
    for messages in capture.prompts:
        assert [m.type for m in messages] == ["system", "human"]
        assert messages[0].content == expected_system
        assert messages[1].content == query

    compressed = retriever.invoke(query)
    assert [d.metadata["doc_id"] for d in compressed] == [d.metadata["doc_id"] for d in expected]
    assert ledger.summary()["calls"] == 3 and ledger.summary()["candidates"] == 150

    # the savings of each call reach the callback handlers of the run, one record per call
    savings = SavingsCapture()
    retriever.invoke(query, config={"callbacks": [savings]})
    await retriever.ainvoke(query, config={"callbacks": [savings]})
    assert [data for _, data, _ in savings.events] == [r.to_dict() for r in ledger.records[-2:]]
    assert all(run_id is not None for _, _, run_id in savings.events)


# -- token budget ----------------------------------------------------------------------------------------


def test_max_prompt_tokens_on_the_adapter(scorer: ZerankScorer, documents: list[Document], queries: list[str]) -> None:
    """Kept documents fit the budget exactly as tiktoken counts the joined prompt; skipped ones would not."""
    encoding = get_encoding("o200k_base")
    texts = texts_of(documents)

    def count(docs: list[str]) -> int:
        return len(encoding.encode_ordinary("\n\n".join(docs)))

    scores = scorer.score(queries[0], texts)  # the checkpoint's scores, once; the budget loop reuses them
    fixed = FixedScorer(dict(zip(texts, scores, strict=True)))
    order = [i for i, _ in scorer.rank(queries[0], texts)]
    for budget in (100, 400, 900, 2500):
        ledger = TokenLedger(encoding="o200k_base")
        reranker = ZerankRerank(scorer=fixed, top_n=8, max_prompt_tokens=budget, ledger=ledger)
        out = reranker.compress_documents(documents, queries[0])
        kept = [d.page_content for d in out]
        assert count(kept) <= budget and ledger.records[-1].tokens_kept == count(kept)
        kept_idx = [texts.index(t) for t in kept]
        assert kept_idx == [i for i in order[:8] if i in kept_idx]
        for skipped in (i for i in order[:8] if i not in kept_idx):
            room = sorted([*kept_idx, skipped], key=order.index)
            assert count([texts[i] for i in room]) > budget, (budget, skipped)
    tight = ZerankRerank(scorer=fixed, top_n=8, max_prompt_tokens=1).compress_documents(documents, queries[0])
    assert tight == []  # nothing fits a one-token budget


# -- savings as LangChain callback events ----------------------------------------------------------------


class SavingsCapture(BaseCallbackHandler):
    """A real callback handler that keeps the custom events it receives."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, UUID | None]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name == SAVINGS_EVENT:
            self.events.append((name, data, run_id))


async def test_savings_reach_callback_handlers(
    scorer: ZerankScorer, documents: list[Document], queries: list[str]
) -> None:
    ledger = TokenLedger(llm="gpt-4o")
    reranker = ZerankRerank(scorer=scorer, top_n=3, ledger=ledger)
    handler = SavingsCapture()
    reranker.compress_documents(documents, queries[0], callbacks=[handler])
    await reranker.acompress_documents(documents, queries[1], callbacks=[handler])
    # inside a runnable, as a custom event of the run (what astream_events and tracers see)
    chain = RunnableLambda(lambda q: reranker.compress_documents(documents, q))
    streamed = [e async for e in chain.astream_events(queries[2], version="v2") if e["event"] == "on_custom_event"]
    assert [data for _, data, _ in handler.events] == [r.to_dict() for r in ledger.records[:2]]
    assert len(streamed) == 1 and streamed[0]["name"] == SAVINGS_EVENT
    assert streamed[0]["data"] == ledger.records[2].to_dict()
    assert handler.events[0][1]["kept"] == 3 and handler.events[0][1]["candidates"] == 20
    # without a ledger there is nothing to report
    quiet = SavingsCapture()
    ZerankRerank(scorer=scorer, top_n=3).compress_documents(documents, queries[0], callbacks=[quiet])
    assert quiet.events == []


# -- the offline Embeddings ------------------------------------------------------------------------------


def test_embeddings_are_the_offline_embedders() -> None:
    from zerank_integrations.retrieval import SentenceTransformerEmbedder

    embeddings = SentenceTransformerEmbeddings()
    texts = ["The heart pumps blood.", "Wings generate lift."]
    reference = SentenceTransformerEmbedder().encode(texts)
    got = embeddings.embed_documents(texts)
    assert isinstance(got, list) and isinstance(got[0][0], float)
    np.testing.assert_allclose(np.array(got), reference, atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query(texts[1]), reference[1], atol=1e-6)
    assert embeddings.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="either model_name or embedder"):
        SentenceTransformerEmbeddings("all-MiniLM-L6-v2", embedder=shared_embedder())
