"""ZerankRerank as a LlamaIndex node postprocessor: vs ZerankScorer.rank, events (savings included), token
budgets, the offline embedding, and a real query engine."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _adapter_support import FixedScorer, load_example, med_passages, shared_embedder
from llama_index.core import VectorStoreIndex
from llama_index.core.bridge.pydantic import Field
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.vector_stores.chroma import ChromaVectorStore

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations.accounting import get_encoding as tiktoken_encoding
from zerank_integrations.llama_index import SentenceTransformerEmbedding, TokenSavingsEvent, ZerankRerank


@pytest.fixture()
def nodes(datasets_dir: Path) -> list[NodeWithScore]:
    """20 real MED documents as retrieved nodes (retrieval scores descending), with nested metadata."""
    passages = med_passages(datasets_dir, 20)
    return [
        NodeWithScore(
            node=TextNode(id_=p.id, text=p.content, metadata={"doc_id": p.id, "tags": {"src": ["med"]}}),
            score=1.0 - i / 100,
        )
        for i, p in enumerate(passages)
    ]


def embed_texts(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]


def test_results_equal_scorer_rank(scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]) -> None:
    out = ZerankRerank(scorer=scorer, top_n=5).postprocess_nodes(nodes, query_str=queries[0])
    expected = scorer.rank(queries[0], embed_texts(nodes), top_n=5)
    assert [n.node.node_id for n in out] == [nodes[i].node.node_id for i, _ in expected]
    assert [n.score for n in out] == pytest.approx([s for _, s in expected], abs=1e-9)
    # metadata_mode=NONE scores the bare text
    plain = ZerankRerank(scorer=scorer, top_n=5, metadata_mode=MetadataMode.NONE)
    expected_plain = scorer.rank(queries[0], [n.node.get_content() for n in nodes], top_n=5)
    out_plain = plain.postprocess_nodes(nodes, QueryBundle(queries[0]))
    assert [n.node.node_id for n in out_plain] == [nodes[i].node.node_id for i, _ in expected_plain]


def test_returns_new_nodes_and_leaves_callers_untouched(
    scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]
) -> None:
    before = copy.deepcopy([n.model_dump() for n in nodes])
    reranker = ZerankRerank(scorer=scorer, top_n=20, keep_retrieval_score=True)
    out = reranker.postprocess_nodes(nodes, query_str=queries[1])
    assert [n.model_dump() for n in nodes] == before
    assert not any(o is n or o.node is n.node for o in out for n in nodes)
    retrieval = {n.node.node_id: n.score for n in nodes}
    assert all(o.node.metadata["retrieval_score"] == retrieval[o.node.node_id] for o in out)
    originals = {n.node.node_id: n.node for n in nodes}
    for o in out:  # kept for code, never put into the text the LLM or the embedder reads
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            assert "retrieval_score" not in o.node.get_content(metadata_mode=mode)
            assert o.node.get_content(metadata_mode=mode) == originals[o.node.node_id].get_content(metadata_mode=mode)
    out[0].node.metadata["tags"]["src"].append("mutated downstream")
    assert [n.model_dump() for n in nodes] == before


def test_missing_query_is_a_clear_error(scorer: ZerankScorer, nodes: list[NodeWithScore]) -> None:
    with pytest.raises(ValueError, match="no query bundle was given"):
        ZerankRerank(scorer=scorer).postprocess_nodes(nodes)
    with pytest.raises(ValueError, match="no query bundle was given"):
        asyncio.run(ZerankRerank(scorer=scorer).apostprocess_nodes(nodes))
    with pytest.raises(TypeError, match="index 0"):
        ZerankRerank(scorer=scorer).postprocess_nodes([nodes[0].node], query_str="q")  # type: ignore[list-item]


async def test_empty_candidates_and_top_n_beyond_candidates(
    scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]
) -> None:
    reranker = ZerankRerank(scorer=scorer, top_n=100)
    pairs_before = scorer.stats.pairs
    assert reranker.postprocess_nodes([], query_str=queries[0]) == []
    assert await reranker.apostprocess_nodes([], query_str=queries[0]) == []
    assert scorer.stats.pairs == pairs_before
    few = nodes[:6]
    out = reranker.postprocess_nodes(few, query_str=queries[2])
    expected = scorer.rank(queries[2], embed_texts(few))
    assert [n.node.node_id for n in out] == [few[i].node.node_id for i, _ in expected]


def test_empty_text_ties_and_threshold() -> None:
    scorer = FixedScorer({"a": 0.5, "b": 0.9, "": 0.5, "d": 0.2, "e": 0.9})
    nodes = [NodeWithScore(node=TextNode(id_=f"n{i}", text=t), score=0.1) for i, t in enumerate("ab de")]
    nodes[2] = NodeWithScore(node=TextNode(id_="n2", text=""), score=0.1)
    reranker = ZerankRerank(scorer=scorer, top_n=4, metadata_mode=MetadataMode.NONE)
    assert [n.node.node_id for n in reranker.postprocess_nodes(nodes, query_str="q")] == [
        "n1",
        "n4",
        "n0",
        "n2",
    ]
    reranker.score_threshold = 0.5
    reranker.top_n = 10
    assert [n.node.node_id for n in reranker.postprocess_nodes(nodes, query_str="q")] == [
        "n1",
        "n4",
        "n0",
        "n2",
    ]


def test_ledger_records_every_call(scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]) -> None:
    ledger = TokenLedger(encoding="o200k_base")
    out = ZerankRerank(scorer=scorer, top_n=5, ledger=ledger).postprocess_nodes(nodes, query_str=queries[0])
    summary = ledger.summary()
    assert (summary["calls"], summary["candidates"], summary["kept"]) == (1, 20, 5)
    assert summary["tokens_kept"] == ledger.count_tokens(
        [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in out]
    )


def test_ledger_counts_the_text_the_llm_receives(
    scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]
) -> None:
    """Synthesizers send MetadataMode.LLM content to the LLM: that is counted, while EMBED text is scored."""
    varied = [
        NodeWithScore(
            node=TextNode(
                id_=n.node.node_id,
                text=n.node.text[:300],
                metadata={"doc_id": n.node.node_id, "provenance": "MED collection, Cranfield-style test set"},
                excluded_llm_metadata_keys=["provenance"],
                excluded_embed_metadata_keys=["doc_id"],
            ),
            score=n.score,
        )
        for n in nodes[:6]
    ]
    llm_texts = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in varied]
    assert llm_texts != embed_texts(varied)
    encoding = tiktoken_encoding("o200k_base")
    ledger = TokenLedger(encoding="o200k_base")
    reranker = ZerankRerank(scorer=scorer, top_n=2, ledger=ledger)
    out = reranker.postprocess_nodes(varied, query_str=queries[0])
    again = asyncio.run(reranker.apostprocess_nodes(varied, query_str=queries[0]))
    expected = scorer.rank(queries[0], embed_texts(varied), top_n=2)
    for result in (out, again):
        assert [n.node.node_id for n in result] == [varied[i].node.node_id for i, _ in expected]
    kept = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in out]
    summary = ledger.summary()
    assert summary["calls"] == 2
    assert summary["tokens_in"] == 2 * len(encoding.encode_ordinary("\n\n".join(llm_texts)))
    assert summary["tokens_kept"] == 2 * len(encoding.encode_ordinary("\n\n".join(kept)))


class Collect(BaseEventHandler):
    """A real instrumentation handler that keeps the rerank events."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Collect"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent, TokenSavingsEvent)):
            self.events.append(event)


@pytest.fixture()
def collected() -> Iterator[list[BaseEvent]]:
    handler = Collect(events=[])
    root = get_dispatcher()
    root.add_event_handler(handler)
    try:
        yield handler.events
    finally:
        root.event_handlers.remove(handler)


def postprocess(reranker: ZerankRerank, nodes: list[NodeWithScore], query: str | QueryBundle, use_async: bool) -> Any:
    bundle = query if isinstance(query, QueryBundle) else QueryBundle(query)
    if use_async:
        return asyncio.run(reranker.apostprocess_nodes(nodes, bundle))
    return reranker.postprocess_nodes(nodes, bundle)


@pytest.mark.parametrize("use_async", [False, True])
def test_emits_instrumentation_and_callback_events(
    use_async: bool,
    scorer: ZerankScorer,
    nodes: list[NodeWithScore],
    queries: list[str],
    collected: list[BaseEvent],
) -> None:
    debug = LlamaDebugHandler()
    reranker = ZerankRerank(scorer=scorer, top_n=3, callback_manager=CallbackManager([debug]))
    bundle = QueryBundle(queries[0])
    out = postprocess(reranker, nodes, bundle, use_async)

    start, end = collected  # no ledger: no savings event
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert start.query == bundle and start.top_n == 3 and start.model_name == scorer.model_name
    assert [n.node.node_id for n in start.nodes] == [n.node.node_id for n in nodes]
    assert [(n.node.node_id, n.score) for n in end.nodes] == [(n.node.node_id, n.score) for n in out]

    pairs = debug.get_event_pairs(CBEventType.RERANKING)
    assert len(pairs) == 1
    started, ended = pairs[0]
    assert started.payload[EventPayload.MODEL_NAME] == scorer.model_name
    assert started.payload[EventPayload.QUERY_STR] == queries[0]
    assert started.payload[EventPayload.TOP_K] == 3
    assert len(started.payload[EventPayload.NODES]) == 20
    assert ended.payload[EventPayload.NODES] == out


@pytest.mark.parametrize("use_async", [False, True])
def test_savings_event_follows_rerank_end(
    use_async: bool,
    scorer: ZerankScorer,
    nodes: list[NodeWithScore],
    queries: list[str],
    collected: list[BaseEvent],
) -> None:
    ledger = TokenLedger(encoding="o200k_base")
    reranker = ZerankRerank(scorer=scorer, top_n=3, ledger=ledger)
    for query in queries[:2]:
        postprocess(reranker, nodes, query, use_async)
    assert [type(e).__name__ for e in collected] == ["ReRankStartEvent", "ReRankEndEvent", "TokenSavingsEvent"] * 2
    savings = [e for e in collected if isinstance(e, TokenSavingsEvent)]
    assert [e.savings for e in savings] == ledger.records  # one record per call, the ledger's own
    assert savings[0].savings.kept == 3 and savings[0].savings.candidates == 20
    assert savings[0].model_name == scorer.model_name
    assert savings[0].span_id == collected[1].span_id  # inside the postprocessor's span, like ReRankEndEvent


def test_max_prompt_tokens_counts_the_llm_text(
    scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]
) -> None:
    encoding = tiktoken_encoding("o200k_base")
    for budget in (150, 700, 2000):
        ledger = TokenLedger(encoding="o200k_base")
        out = ZerankRerank(scorer=scorer, top_n=10, max_prompt_tokens=budget, ledger=ledger).postprocess_nodes(
            nodes, query_str=queries[3]
        )
        prompt = "\n\n".join(n.node.get_content(metadata_mode=MetadataMode.LLM) for n in out)
        assert len(encoding.encode_ordinary(prompt)) == ledger.records[0].tokens_kept <= budget
        assert ledger.records[0].kept == len(out) <= 10


def test_embedding_is_the_offline_embedder() -> None:
    from zerank_integrations.retrieval import SentenceTransformerEmbedder

    embedding = SentenceTransformerEmbedding()
    texts = ["The heart pumps blood.", "Wings generate lift."]
    reference = SentenceTransformerEmbedder().encode(texts)
    np.testing.assert_allclose(embedding.get_text_embedding_batch(texts), reference, atol=1e-6)
    np.testing.assert_allclose(embedding.get_query_embedding(texts[0]), reference[0], atol=1e-6)
    np.testing.assert_allclose(asyncio.run(embedding.aget_query_embedding(texts[1])), reference[1], atol=1e-6)
    assert embedding.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert SentenceTransformerEmbedding.class_name() == "SentenceTransformerEmbedding"


async def test_async_matches_sync_under_32_concurrent_calls(
    scorer: ZerankScorer, nodes: list[NodeWithScore], queries: list[str]
) -> None:
    short = [NodeWithScore(node=TextNode(id_=n.node.node_id, text=n.node.text[:200]), score=n.score) for n in nodes]
    reranker = ZerankRerank(scorer=scorer, top_n=4)
    jobs = [(short[i % 5 : i % 5 + 5], queries[i % 8]) for i in range(32)]
    sequential = [reranker.postprocess_nodes(batch, query_str=q) for batch, q in jobs]
    concurrent = await asyncio.gather(*(reranker.apostprocess_nodes(batch, query_str=q) for batch, q in jobs))
    assert [[(n.node.node_id, n.score) for n in r] for r in concurrent] == [
        [(n.node.node_id, n.score) for n in r] for r in sequential
    ]


def test_serialises_without_the_scorer(checkpoint_dir: Path) -> None:
    reranker = ZerankRerank(model=str(checkpoint_dir), top_n=3, keep_retrieval_score=True)
    data = reranker.to_dict()
    assert data["class_name"] == "ZerankRerank" and data["model"] == str(checkpoint_dir)
    assert "scorer" not in data and "ledger" not in data
    clone = ZerankRerank.from_dict(data)
    assert clone.top_n == 3 and clone.keep_retrieval_score
    assert clone.reranker.loaded_model is reranker.reranker.loaded_model  # type: ignore[attr-defined]


# -- end to end: VectorStoreIndex over ChromaVectorStore -> query engine with ZerankRerank ----------------


@pytest.fixture(scope="module")
def index(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> VectorStoreIndex:
    """Built by the example's own code (ChromaVectorStore over embedded Chroma), so the test covers it too."""
    example = load_example("llama_index_query_engine")
    folder = str(tmp_path_factory.mktemp("chroma-llama"))
    index: VectorStoreIndex = example.build_index(
        med_passages(datasets_dir), folder, SentenceTransformerEmbedding(embedder=shared_embedder())
    )
    assert isinstance(index.vector_store, ChromaVectorStore)
    return index


async def test_query_engine_source_nodes_are_the_reranked_top_5(
    index: VectorStoreIndex, scorer: ZerankScorer, queries: list[str]
) -> None:
    query = queries[5]
    retrieved = index.as_retriever(similarity_top_k=50).retrieve(query)
    assert len(retrieved) == 50
    expected = [(retrieved[i].node.node_id, score) for i, score in scorer.rank(query, embed_texts(retrieved), top_n=5)]
    texts = {n.node.node_id: n.node.get_content() for n in retrieved}

    engine = index.as_query_engine(
        similarity_top_k=50,
        node_postprocessors=[ZerankRerank(scorer=scorer, top_n=5, keep_retrieval_score=True)],
        llm=MockLLM(),
    )
    for response in (engine.query(query), await engine.aquery(query)):
        got = [(n.node.node_id, n.score) for n in response.source_nodes]
        assert [i for i, _ in got] == [i for i, _ in expected]
        assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-9)
        # MockLLM echoes its prompt: the context holds exactly these five documents, in reranked order
        prompt = str(response)
        positions = [prompt.find(texts[node_id]) for node_id, _ in expected]
        assert all(p >= 0 for p in positions) and positions == sorted(positions)
        others = [t for node_id, t in texts.items() if node_id not in dict(expected)]
        assert not any(t in prompt for t in others)
        assert "retrieval_score" not in prompt  # kept in metadata, out of the LLM's text
        assert all("retrieval_score" in n.node.metadata for n in response.source_nodes)
