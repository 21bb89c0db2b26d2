"""Metrics against hand-computed references, eval runs with the small real checkpoint on scifact data, any
Retriever (chunks scored per document), token-budget policies, and honest reports."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _adapter_support import FixedScorer

from zerank_integrations import TokenLedger
from zerank_integrations.accounting import get_encoding
from zerank_integrations.evaluation import (
    METRICS,
    EvalResult,
    QueryResult,
    build_chart,
    collection_name_for,
    evaluate,
    mean_metrics,
    per_query_metrics,
    prepare_collection,
    render_markdown,
    write_report,
)
from zerank_integrations.retrieval import (
    BeirCollection,
    ChromaStore,
    ChunkingPolicy,
    Document,
    EvaluationSetupError,
    Hit,
    load_beir,
    validate_collection_name,
)

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


#: one passage per abstract (the evaluation logic under test; chunking has its own tests in test_retrieval)
WHOLE = ChunkingPolicy(size=2048, context=0)


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
    store.upsert(scifact_subset.corpus, chunking=WHOLE)
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


def test_report_files_name_the_setup(eval_result: EvalResult, tmp_path: Path, checkpoint_dir: Path) -> None:
    paths = write_report(eval_result, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert set(data) == {"retrieval", "rerank", "kept", "tokens", "queries", "collection"} | {
        "retriever", "reranker", "selection", "machine"
    }  # fmt: skip
    assert set(data["retrieval"]) == set(data["rerank"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert set(data["kept"]) == {"ndcg@10", "recall@10", "prompt_tokens_per_query", "documents_per_query"}
    assert data["queries"] == MAX_QUERIES
    assert data["tokens"] == json.loads(json.dumps(eval_result.tokens))
    assert data["retriever"] == {
        "description": "Chroma collection 'beir-scifact' (cosine, embedding model "
        "sentence-transformers/all-MiniLM-L6-v2)",
        "top_k": TOP_K,
        "recall_depth": 100,
    }
    reranker = data["reranker"]
    assert reranker["model"] == str(checkpoint_dir) and reranker["backend"] == "ZerankScorer"
    assert {"revision", "family", "random_weights", "instruction"} <= set(reranker)
    # the library's own test checkpoints are flagged, through the scorer's random_weights
    assert reranker["family"] == "zerank" and reranker["random_weights"] is True and eval_result.random_weights
    assert data["selection"] == {"score_threshold": None, "top_n": TOP_N, "max_prompt_tokens": None}
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["device"] == "cpu"
    assert data["kept"]["prompt_tokens_per_query"] == pytest.approx(eval_result.tokens["tokens_kept"] / MAX_QUERIES)
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["md"].read_text()
    assert markdown == render_markdown(eval_result)
    assert f"| NDCG@10 | {eval_result.retrieval['ndcg@10']:.4f} | {eval_result.rerank['ndcg@10']:.4f} |" in markdown
    for fragment in (
        "- retrieval: Chroma collection 'beir-scifact'",
        f"- reranker: `{checkpoint_dir}`",
        f"- selection policy: top {TOP_N}",
        "- machine: ",
        f"| NDCG@10 of the kept documents | {eval_result.kept['ndcg@10']:.4f} |",
    ):
        assert fragment in markdown, fragment


def _chart_text(result: EvalResult) -> str:
    fig = build_chart(result)
    texts = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        legend = ax.get_legend()
        texts += [ax.get_title(), *(t.get_text() for t in (legend.get_texts() if legend else []))]
    return "\n".join(texts)


def test_random_weights_are_flagged_in_every_report(eval_result: EvalResult) -> None:
    flagged = dataclasses.replace(eval_result, reranker={**eval_result.reranker, "random_weights": True})
    real = dataclasses.replace(eval_result, reranker={**eval_result.reranker, "random_weights": False})
    assert "RANDOM-WEIGHT TEST MODEL" in _chart_text(flagged)
    assert "RANDOM" not in _chart_text(real)
    assert "random-weight test model" in render_markdown(flagged) and "RANDOM WEIGHTS" in render_markdown(flagged)
    assert "random-weight" not in render_markdown(real).lower()
    assert flagged.to_json()["reranker"]["random_weights"] is True
    chart = _chart_text(real)
    assert "retrieval: Chroma collection 'beir-scifact'" in chart and f"selection policy: top {TOP_N}" in chart


# -- the kept documents of a policy, and any Retriever ---------------------------------------------------


def test_token_budget_in_evaluate(scifact_store: ChromaStore, scifact_subset: BeirCollection, scorer: Any) -> None:
    encoding = get_encoding("o200k_base")
    budget = 700
    ledger = TokenLedger(llm="gpt-4o")
    result = evaluate(
        scifact_store, scifact_subset, scorer, ledger, top_k=10, top_n=8, max_prompt_tokens=budget, max_queries=3
    )
    texts = dict(
        zip(*(scifact_store.collection.get(include=["documents"])[k] for k in ("ids", "documents")), strict=True)
    )

    def count(ids: list[str]) -> int:
        return len(encoding.encode_ordinary("\n\n".join(texts[i] for i in ids)))

    assert any(r.over_budget for r in result.queries)  # the budget binds on scifact abstracts
    for query, record in zip(result.queries, ledger.records, strict=True):
        order = [doc for doc, _ in query.reranked]
        assert count(query.kept_passages) == record.tokens_kept <= budget
        assert query.kept_passages == [d for d in order[:8] if d in query.kept_passages]
        assert sorted(query.kept_passages + query.over_budget) == sorted(order[:8])
        for skipped in query.over_budget:
            assert count(sorted([*query.kept_passages, skipped], key=order.index)) > budget
    kept_run = {r.query_id: r.kept for r in result.queries}
    expected = mean_metrics({r.query_id: scifact_subset.qrels[r.query_id] for r in result.queries}, kept_run)
    assert result.kept["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert result.kept["recall@10"] == pytest.approx(expected["recall@10"])
    assert result.kept["prompt_tokens_per_query"] == pytest.approx(ledger.summary()["tokens_kept"] / 3)
    assert result.policy.max_prompt_tokens == budget and "<= 700 prompt tokens" in render_markdown(result)


class ListRetriever:
    """A Retriever that is not Chroma: fixed passages per query (chunks of documents, as a chunked store returns)."""

    description = "fixed lists"

    def __init__(self, results: dict[str, list[Hit]]) -> None:
        self.results = results

    def search(self, query: str, k: int) -> list[Hit]:
        return self.results[query][:k]


def _ndcg10_binary(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    return dcg / sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))


def test_any_retriever_and_documents_score_as_their_best_chunk() -> None:
    corpus = [Document(id=d, text=f"text of {d}") for d in "ABCDE"]
    collection = BeirCollection(
        "toy", Path("toy"), corpus, {"q1": "first", "q2": "second"}, {"q1": {"B": 1, "D": 1}, "q2": {"A": 1}}
    )

    def hit(chunk: str, rank: int) -> Hit:
        return Hit(id=chunk, content=f"passage {chunk}", score=1 - rank / 10, rank=rank, document_id=chunk[0])

    passages = {
        "first": [hit(c, r) for r, c in enumerate(["A#0", "B#1", "A#1", "C#0", "D#0", "B#0"], start=1)],
        "second": [hit(c, r) for r, c in enumerate(["E#0", "A#2"], start=1)],
    }
    scores = {"passage A#0": 0.1, "passage B#1": 0.3, "passage A#1": 0.95, "passage C#0": 0.5, "passage D#0": 0.6,
              "passage B#0": 0.9, "passage E#0": 0.2, "passage A#2": 0.4}  # fmt: skip
    result = evaluate(
        ListRetriever(passages), collection, FixedScorer(scores), TokenLedger(encoding="o200k_base"), top_k=6, top_n=2
    )
    first, second = result.queries
    assert first.retrieved == ["A", "B", "C", "D"]  # each document at its best passage's place
    assert first.reranked == [("A", 0.95), ("B", 0.9), ("D", 0.6), ("C", 0.5)]
    assert first.kept_passages == ["A#1", "B#0"] and first.kept == ["A", "B"]
    assert second.reranked == [("A", 0.4), ("E", 0.2)]
    assert result.retrieval["ndcg@10"] == pytest.approx(
        (_ndcg10_binary(["A", "B", "C", "D"], {"B", "D"}) + _ndcg10_binary(["E", "A"], {"A"})) / 2
    )
    assert result.rerank["ndcg@10"] == pytest.approx((_ndcg10_binary(["A", "B", "D", "C"], {"B", "D"}) + 1.0) / 2)
    assert result.kept["recall@10"] == pytest.approx((0.5 + 1.0) / 2)
    assert result.retriever == "fixed lists"
    with pytest.raises(TypeError, match=r"ListRetriever.search returned str at index 0"):
        evaluate(
            ListRetriever({"first": ["x"], "second": []}),
            collection,
            FixedScorer({}),
            TokenLedger(encoding="o200k_base"),
        )  # type: ignore[dict-item]


def test_evaluate_with_another_retriever_never_imports_chromadb() -> None:
    code = """
import sys
from pathlib import Path
from zerank_integrations import TokenLedger
from zerank_integrations.evaluation import evaluate
from zerank_integrations.retrieval import BeirCollection, Document, Hit
docs = [Document(id=str(i), text=f"passage number {i} about the eye lens" + " lens" * i) for i in range(12)]
collection = BeirCollection("toy", Path("."), docs, {"q": "eye lens"}, {"q": {"3": 1}})
class Overlap:
    def search(self, query, k):
        ranked = sorted(docs, key=lambda d: (-len(set(query.split()) & set(d.text.split())), d.id))[:k]
        return [Hit(id=d.id, content=d.text, score=0.0, rank=r) for r, d in enumerate(ranked, start=1)]
class LensCount:  # a real Reranker: more mentions of "lens", higher probability
    model_name = "lens-count"
    def score(self, query, documents, *, raw=False):
        return [d.count("lens") / 20 for d in documents]
    def rank(self, query, documents, top_n=None):
        raise NotImplementedError
    async def ascore(self, query, documents, *, raw=False):
        return self.score(query, documents)
    async def arank(self, query, documents, top_n=None):
        raise NotImplementedError
result = evaluate(Overlap(), collection, LensCount(), TokenLedger(encoding="o200k_base"), top_k=10, top_n=3)
assert [d for d, _ in result.queries[0].reranked][:3] == ["11", "10", "7"], result.queries
assert len(result.queries[0].kept) == 3, result.queries
assert "chromadb" not in sys.modules, "chromadb was imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# -- evaluating into Chroma: the library's rules ---------------------------------------------------------


def test_collection_names_for_folders(tmp_path: Path) -> None:
    for name in ("scifact", "my data set", "a..b", "..", "x", "-x-", "é"):
        folder = tmp_path / name
        got = collection_name_for(folder)
        assert validate_collection_name(got) == got, (name, got)
    assert collection_name_for(tmp_path / "scifact") == "beir-scifact"
    assert collection_name_for(tmp_path / "my data set") == "beir-my-data-set"


def test_prepare_collection_refuses_stray_documents(
    tmp_path: Path, scifact_store: ChromaStore, scifact_subset: BeirCollection
) -> None:
    store = ChromaStore.open("mine", client=scifact_store.client, create=True)
    store.upsert([Document(id="private-note", text="my own text")])
    with pytest.raises(
        EvaluationSetupError, match=r"collection 'mine' holds 1 documents that are not in .*'private-note'"
    ):
        prepare_collection(store, scifact_subset)
    assert store.ids() == ["private-note"]  # nothing was written
    report = prepare_collection(scifact_store, scifact_subset, chunking=WHOLE)  # the evaluated collection is reused
    assert report.unchanged == len(scifact_subset.corpus) and report.added == 0


def test_evaluate_validates_depths(scifact_store: ChromaStore, scifact_subset: BeirCollection) -> None:
    with pytest.raises(ValueError, match=r"top_n \(6\) cannot exceed top_k \(5\)"):
        evaluate(scifact_store, scifact_subset, object(), TokenLedger(llm="gpt-4o"), top_k=5, top_n=6)  # type: ignore[arg-type]
