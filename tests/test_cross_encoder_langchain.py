"""ZerankCrossEncoder: LangChain's BaseCrossEncoder over the core, through langchain-classic's CrossEncoderReranker."""

from __future__ import annotations

from pathlib import Path

import pytest
from _adapter_support import med_passages
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_core.cross_encoders import BaseCrossEncoder
from langchain_core.documents import Document

from zerank_integrations import ZerankScorer
from zerank_integrations.langchain import ZerankCrossEncoder


@pytest.fixture(scope="module")
def documents(datasets_dir: Path) -> list[Document]:
    return [Document(page_content=p.content, metadata={"doc_id": p.id}) for p in med_passages(datasets_dir, 16)]


def test_is_a_langchain_cross_encoder(scorer: ZerankScorer) -> None:
    assert isinstance(ZerankCrossEncoder(scorer=scorer), BaseCrossEncoder)


@pytest.mark.parametrize("how", ["scorer", "model"])
def test_cross_encoder_reranker_ranks_as_scorer_rank(
    how: str, scorer: ZerankScorer, checkpoint_dir: Path, documents: list[Document], queries: list[str]
) -> None:
    model = ZerankCrossEncoder(scorer=scorer) if how == "scorer" else ZerankCrossEncoder(model=str(checkpoint_dir))
    reranker = CrossEncoderReranker(model=model, top_n=2)
    texts = [d.page_content for d in documents]
    for query in queries[:3]:
        kept = reranker.compress_documents(documents, query)
        expected = scorer.rank(query, texts, top_n=2)
        assert [d.metadata["doc_id"] for d in kept] == [documents[i].metadata["doc_id"] for i, _ in expected]


def test_scores_are_the_cores(scorer: ZerankScorer, documents: list[Document], queries: list[str]) -> None:
    """Mixed queries come back in input order, each equal to the core's score of that pair (raw too)."""
    texts = [d.page_content for d in documents[:6]]
    pairs = [(queries[i % 2], text) for i, text in enumerate(texts)]
    encoder = ZerankCrossEncoder(scorer=scorer)
    got = encoder.score(pairs)
    expected = [scorer.score(q, [t])[0] for q, t in pairs]
    assert got == pytest.approx(expected, abs=1e-5)
    raw = ZerankCrossEncoder(scorer=scorer, raw=True).score(pairs)
    assert raw == pytest.approx([scorer.score(q, [t], raw=True)[0] for q, t in pairs], abs=1e-4)
    assert encoder.score([]) == []


def test_options_instruction_and_errors(scorer: ZerankScorer, checkpoint_dir: Path) -> None:
    docs = ["The lens focuses light.", "Paris is in France."]
    with_instruction = ZerankCrossEncoder(scorer=scorer, instruction="Prefer anatomy")
    assert with_instruction.score([("lens?", d) for d in docs]) == pytest.approx(
        scorer.score("lens?", docs, instruction="Prefer anatomy"), abs=1e-6
    )
    built = ZerankCrossEncoder(model=str(checkpoint_dir), cache_size=8)
    assert built.reranker.model_name == scorer.model_name
    with pytest.raises(ValueError, match="not both"):
        ZerankCrossEncoder(model=str(checkpoint_dir), scorer=scorer)
    with pytest.raises(ValueError, match="top_n"):
        ZerankCrossEncoder(scorer=scorer, top_n=2)  # a selection setting belongs to CrossEncoderReranker
    with pytest.raises(TypeError, match="pair at index 1: the document is int"):
        built.score([("q", "a"), ("q", 3)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="pair at index 0 must be a"):
        built.score([("q",)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single string"):
        built.score("q")  # type: ignore[arg-type]
    assert "ZerankCrossEncoder(model=" in repr(built) and "cache_size=8" in repr(built)
