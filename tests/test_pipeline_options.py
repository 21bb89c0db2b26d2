"""Scorer options through every front end: long documents (max_chunk spans in metadata), the score cache,
instructions and families, on the adapters, the CLI and evaluate, with the real test checkpoints."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from zerank_integrations import ZerankScorer
from zerank_integrations import langchain as lc
from zerank_integrations import llama_index as li

LONG_OPTIONS = {"max_length": 96, "long_documents": "max_chunk", "chunk_tokens": 40, "chunk_stride": 30}


@pytest.fixture(scope="module")
def texts(queries: list[str], datasets_dir: Path) -> list[str]:
    from _adapter_support import med_passages

    docs = [p.content for p in med_passages(datasets_dir, 8)]
    return [docs[0], docs[1][:80], docs[2], "a short one"]  # long ones get windows, short ones do not


def test_max_chunk_spans_reach_document_and_node_metadata(
    checkpoint_dir: Path, texts: list[str], queries: list[str]
) -> None:
    reference = ZerankScorer(str(checkpoint_dir), **LONG_OPTIONS)
    details = reference.score_details(queries[0], texts)
    assert details[0].windows > 1 and details[0].span is not None and details[3].span is None

    compressor = lc.ZerankRerank(model=str(checkpoint_dir), top_n=None, **LONG_OPTIONS)
    out = compressor.compress_documents(
        [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(texts)], queries[0]
    )
    for doc in out:
        detail = details[doc.metadata["i"]]
        assert doc.metadata["relevance_score"] == pytest.approx(detail.probability, abs=1e-6)
        if detail.span is None:
            assert "relevance_span" not in doc.metadata
        else:
            assert doc.metadata["relevance_span"] == list(detail.span)

    postprocessor = li.ZerankRerank(
        model=str(checkpoint_dir), top_n=None, metadata_mode=MetadataMode.NONE, **LONG_OPTIONS
    )
    nodes = [NodeWithScore(node=TextNode(id_=str(i), text=t), score=0.5) for i, t in enumerate(texts)]
    for node in postprocessor.postprocess_nodes(nodes, query_str=queries[0]):
        span = details[int(node.node.node_id)].span
        assert node.node.metadata.get("relevance_span") == (list(span) if span else None)
        assert "relevance_span" not in node.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "long_documents='max_chunk'" in repr(postprocessor)


def test_score_cache_through_an_adapter(checkpoint_dir: Path, texts: list[str], queries: list[str]) -> None:
    compressor = lc.ZerankRerank(model=str(checkpoint_dir), top_n=3, cache_size=1000)
    scorer = compressor.reranker
    assert isinstance(scorer, ZerankScorer) and scorer.cache_size == 1000
    docs = [Document(page_content=t) for t in texts]
    first = compressor.compress_documents(docs, queries[1])
    passes = scorer.stats.forward_passes
    again = compressor.compress_documents(docs, queries[1])
    assert scorer.stats.forward_passes == passes  # all cached: no forward pass
    assert [(d.page_content, d.metadata) for d in again] == [(d.page_content, d.metadata) for d in first]
    assert scorer.stats.cache_hits >= len(texts)

    # the same candidates per query, so every pair is scored in the same batch whichever caller gets there first
    jobs = [(queries[i % 3], docs) for i in range(12)]
    serial = [[d.metadata["relevance_score"] for d in compressor.compress_documents(d, q)] for q, d in jobs]
    fresh = lc.ZerankRerank(model=str(checkpoint_dir), top_n=3, cache_size=1000)  # an empty cache, shared by all
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda job: fresh.compress_documents(job[1], job[0]), jobs))

    async def gather() -> list[list[Document]]:
        other = lc.ZerankRerank(model=str(checkpoint_dir), top_n=3, cache_size=1000)
        return list(await asyncio.gather(*(other.acompress_documents(d, q) for q, d in jobs)))

    for results in (threaded, asyncio.run(gather())):
        assert [[d.metadata["relevance_score"] for d in r] for r in results] == serial


def test_instruction_and_family_reach_the_scorer(family_checkpoints: dict[str, Path], queries: list[str]) -> None:
    path = str(family_checkpoints["qwen3-reranker"])
    docs = ["The lens develops from the surface ectoderm.", "Stocks rose on Monday."]
    reference = ZerankScorer(path, family="qwen3-reranker")
    instructed = reference.score(queries[0], docs, instruction="Find embryology abstracts")
    assert instructed != reference.score(queries[0], docs)
    compressor = lc.ZerankRerank(
        model=path, family="qwen3-reranker", top_n=None, instruction="Find embryology abstracts"
    )
    out = compressor.compress_documents([Document(page_content=d) for d in docs], queries[0])
    assert sorted(d.metadata["relevance_score"] for d in out) == pytest.approx(sorted(instructed), abs=1e-6)
    assert compressor.reranker.family == "qwen3-reranker"
    plain = lc.ZerankRerank(model=str(family_checkpoints["cross-encoder"]), instruction="Find embryology abstracts")
    with pytest.raises(ValueError, match="instruction"):
        plain.compress_documents([Document(page_content=d) for d in docs], queries[0])


def test_cli_passes_scorer_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, checkpoint_dir: Path, datasets_dir: Path
) -> None:
    from zerank_integrations.cli import main
    from zerank_integrations.retrieval import load_beir

    folder = tmp_path / "docs"
    folder.mkdir()
    for doc in load_beir(datasets_dir / "med").corpus[:6]:
        (folder / f"{doc.id}.txt").write_text(doc.text, encoding="utf-8")
    db = ["--chroma-path", str(tmp_path / "db"), "--collection", "opts"]
    assert main(["ingest", str(folder), *db]) == 0
    capsys.readouterr()
    options = ["--model", str(checkpoint_dir), "--family", "zerank", "--cache-size", "100"]
    options += ["--max-length", "96", "--long-documents", "max_chunk", "--chunk-tokens", "40", "--chunk-stride", "30"]
    assert main(["search", "lens proteins", *db, *options, "--top-k", "6", "--top-n", "6", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    reference = ZerankScorer(str(checkpoint_dir), **LONG_OPTIONS)
    texts = [r["text"] for r in payload["reranked"]]
    details = reference.score_details("lens proteins", texts)
    assert [r["best_window"] for r in payload["reranked"]] == [list(d.span) if d.span else None for d in details]
    assert any(r["best_window"] for r in payload["reranked"])
    assert [r["score"] for r in payload["reranked"]] == pytest.approx([d.probability for d in details], abs=1e-6)
    assert main(["search", "q", *db, "--family", "nope"]) == 2  # choices come from the families
    assert "invalid choice: 'nope'" in capsys.readouterr().err
