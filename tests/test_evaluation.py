"""Metrics against hand-computed references, and an eval run with the small real checkpoint on scifact data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zerank_integrations.evaluation import (
    METRICS,
    EvalResult,
    QueryResult,
    evaluate,
    mean_metrics,
    per_query_metrics,
    render_markdown,
    write_report,
)
from zerank_integrations.retrieval import BeirCollection, ChromaStore, load_beir

# -- metrics vs. independent formulas --------------------------------------------------------------------


def _ndcg10(grades_in_rank_order: list[int], all_grades: list[int], exponential: bool) -> float:
    gain = (lambda g: 2**g - 1) if exponential else (lambda g: g)
    dcg = sum(gain(g) / math.log2(i + 2) for i, g in enumerate(grades_in_rank_order[:10]))
    ideal = sorted(all_grades, reverse=True)[:10]
    return dcg / sum(gain(g) / math.log2(i + 2) for i, g in enumerate(ideal))


QRELS = {"q1": {"d1": 3, "d3": 1, "d7": 2, "d99": 1}, "q2": {"x": 1}, "q3": {"a": 1, "b": 1}}
RUN = {
    "q1": ["d2", "d1", "d4", "d3", "d5", "d6", "d8", "d9", "d10", "d11", "d7"],  # d7 at rank 11
    "q2": [f"n{i}" for i in range(10)] + ["x"],  # first relevant at rank 11
    "q3": ["b", "a"],
}


def test_metrics_match_hand_computation() -> None:
    got = per_query_metrics(QRELS, RUN)
    q1 = [0, 3, 0, 1, 0, 0, 0, 0, 0, 0]
    assert got["q1"]["ndcg@10"] == pytest.approx(_ndcg10(q1, [3, 1, 2, 1], exponential=True), abs=1e-9)
    assert got["q1"]["recall@10"] == pytest.approx(2 / 4)
    assert got["q1"]["recall@100"] == pytest.approx(3 / 4)
    assert got["q1"]["mrr@10"] == pytest.approx(1 / 2)
    # MRR@10 is cut at 10: trec_eval's recip_rank alone would give 1/11 here
    assert got["q2"]["mrr@10"] == 0.0
    assert got["q2"]["recall@100"] == 1.0 and got["q2"]["ndcg@10"] == 0.0
    assert got["q3"] == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    linear = per_query_metrics(QRELS, RUN, ndcg_gain="linear")
    assert linear["q1"]["ndcg@10"] == pytest.approx(_ndcg10(q1, [3, 1, 2, 1], exponential=False), abs=1e-9)
    assert linear["q1"]["ndcg@10"] != pytest.approx(got["q1"]["ndcg@10"])
    means = mean_metrics(QRELS, RUN)
    for metric in METRICS:
        assert means[metric] == pytest.approx(sum(got[q][metric] for q in QRELS) / 3)


def test_run_order_is_respected_not_trec_tie_breaking() -> None:
    """trec_eval breaks score ties by doc id; our lists must be evaluated exactly in the given order."""
    qrels = {"q": {"a": 1}}
    assert per_query_metrics(qrels, {"q": ["z", "a"]})["q"]["mrr@10"] == 0.5
    assert per_query_metrics(qrels, {"q": ["a", "z"]})["q"]["mrr@10"] == 1.0


def test_missing_query_counts_zero_and_duplicates_are_refused() -> None:
    means = mean_metrics({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": ["a"]})
    assert means["recall@10"] == 0.5 and means["mrr@10"] == 0.5
    with pytest.raises(ValueError, match="lists a document twice"):
        mean_metrics({"q": {"a": 1}}, {"q": ["a", "b", "a"]})
    with pytest.raises(ValueError, match="ndcg_gain"):
        per_query_metrics({"q": {"a": 1}}, {"q": ["a"]}, ndcg_gain="cubic")  # type: ignore[arg-type]


def test_rerank_run_appends_retrieval_tail() -> None:
    retrieved = [f"d{i}" for i in range(1, 121)]
    result = QueryResult("q", "question", retrieved, reranked=[(f"d{i}", 0.0) for i in (3, 1, 2)])
    run = result.rerank_run
    assert run[:3] == ["d3", "d1", "d2"]
    assert run[3:] == [f"d{i}" for i in range(4, 101)]
    assert len(run) == 100 and len(set(run)) == 100


# -- eval run with the small checkpoint ------------------------------------------------------------------

TOP_K, TOP_N, MAX_QUERIES = 20, 5, 6


@pytest.fixture(scope="module")
def scifact_subset(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> BeirCollection:
    """Real scifact data, cut to its first judged queries, their judged documents and 150 others.

    The full collection (5,183 abstracts) takes minutes to embed on 2 cores; its full run is recorded in
    notes/retrieval-BENCHMARKS.md.
    """
    full = load_beir(datasets_dir / "scifact")
    qids = full.judged_query_ids()[:8]
    keep = {d for q in qids for d in full.qrels[q]} | {d.id for d in full.corpus[:150]}
    folder = tmp_path_factory.mktemp("beir") / "scifact"
    folder.mkdir()
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as out:
        for doc in full.corpus:
            if doc.id in keep:
                out.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as out:
        for q in qids:
            out.write(json.dumps({"_id": q, "text": full.queries[q]}) + "\n")
    with open(folder / "qrels.tsv", "w", encoding="utf-8") as out:
        out.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            for d, g in full.qrels[q].items():
                out.write(f"{q}\t{d}\t{g}\n")
    return load_beir(folder)


@pytest.fixture(scope="module")
def scifact_store(tmp_path_factory: pytest.TempPathFactory, scifact_subset: BeirCollection) -> ChromaStore:
    store = ChromaStore.open("beir-scifact", path=tmp_path_factory.mktemp("chroma-eval"), create=True)
    store.upsert(scifact_subset.corpus)
    return store


@pytest.fixture(scope="module")
def eval_result(scifact_store: ChromaStore, scifact_subset: BeirCollection, checkpoint_dir: Path) -> EvalResult:
    from zerank_integrations import TokenLedger, ZerankScorer

    scorer = ZerankScorer(str(checkpoint_dir))
    return evaluate(
        scifact_store,
        scifact_subset,
        scorer,
        TokenLedger(llm="gpt-4o"),
        top_k=TOP_K,
        top_n=TOP_N,
        max_queries=MAX_QUERIES,
    )


def test_eval_numbers_present_and_consistent(
    eval_result: EvalResult, scifact_subset: BeirCollection, scifact_store: ChromaStore
) -> None:
    assert len(eval_result.queries) == MAX_QUERIES
    assert [r.query_id for r in eval_result.queries] == scifact_subset.judged_query_ids()[:MAX_QUERIES]
    for part in (eval_result.retrieval, eval_result.rerank):
        assert set(part) == set(METRICS)
        assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in part.values())
    for r in eval_result.queries:
        reranked_ids = [d for d, _ in r.reranked]
        assert sorted(reranked_ids) == sorted(r.retrieved[:TOP_K])  # a permutation of the candidates
        scores = [s for _, s in r.reranked]
        assert scores == sorted(scores, reverse=True)
        assert r.kept == reranked_ids[:TOP_N]
        assert r.retrieved == [h.id for h in scifact_store.search(r.query, len(r.retrieved))]
    # Recall@100: the rerank run permutes the top-k and keeps ranks k+1..100, so it cannot change
    assert eval_result.rerank["recall@100"] == pytest.approx(eval_result.retrieval["recall@100"])
    qrels = {r.query_id: scifact_subset.qrels[r.query_id] for r in eval_result.queries}
    assert eval_result.retrieval == pytest.approx(
        mean_metrics(qrels, {r.query_id: r.retrieved for r in eval_result.queries})
    )
    assert eval_result.rerank == pytest.approx(
        mean_metrics(qrels, {r.query_id: r.rerank_run for r in eval_result.queries})
    )
    tokens = eval_result.tokens
    assert tokens["calls"] == MAX_QUERIES
    assert tokens["candidates"] == MAX_QUERIES * TOP_K and tokens["kept"] == MAX_QUERIES * TOP_N
    assert 0 < tokens["tokens_kept"] <= tokens["tokens_in"]
    assert tokens["tokens_saved"] == tokens["tokens_in"] - tokens["tokens_kept"]
    assert tokens["llm"] == "gpt-4o"


def test_rerank_scores_are_the_scorers(
    eval_result: EvalResult, scifact_store: ChromaStore, checkpoint_dir: Path
) -> None:
    from zerank_integrations import ZerankScorer

    first = eval_result.queries[0]
    hits = scifact_store.search(first.query, TOP_K)
    scores = ZerankScorer(str(checkpoint_dir)).score(first.query, [h.content for h in hits])
    expected = sorted(zip([h.id for h in hits], scores, strict=True), key=lambda p: -p[1])
    assert [d for d, _ in first.reranked] == [d for d, _ in expected]
    assert [s for _, s in first.reranked] == pytest.approx([s for _, s in expected], abs=1e-6)


def test_report_files_have_fixed_shape(eval_result: EvalResult, tmp_path: Path) -> None:
    paths = write_report(eval_result, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert set(data) == {"retrieval", "rerank", "tokens", "queries"}
    assert set(data["retrieval"]) == set(data["rerank"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert data["queries"] == MAX_QUERIES
    assert data["tokens"] == json.loads(json.dumps(eval_result.tokens))
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["md"].read_text()
    assert markdown == render_markdown(eval_result)
    assert f"| NDCG@10 | {eval_result.retrieval['ndcg@10']:.4f} | {eval_result.rerank['ndcg@10']:.4f} |" in markdown


def test_evaluate_validates_depths(scifact_store: ChromaStore, scifact_subset: BeirCollection) -> None:
    from zerank_integrations import TokenLedger

    with pytest.raises(ValueError, match=r"top_n \(6\) cannot exceed top_k \(5\)"):
        evaluate(scifact_store, scifact_subset, object(), TokenLedger(llm="gpt-4o"), top_k=5, top_n=6)  # type: ignore[arg-type]
