"""Retrieval alone vs. retrieval + zerank rerank on the same candidates, over a BEIR-layout collection.

Metrics come from ``pytrec_eval`` (the C trec_eval behind BEIR), not hand-written formulas:

* ``ndcg@10`` = ``ndcg_cut_10`` with exponential gains ``2**grade - 1`` (Burges et al., the common choice in
  learning to rank): grades are mapped before they reach trec_eval, whose own gain is linear. For binary
  judgements (scifact, med) both are identical; on graded cran the shared baseline table uses exponential
  gains (0.358; linear gains give 0.374). ``ndcg_gain="linear"`` selects trec_eval's plain gain;
* ``recall@10`` / ``recall@100`` = ``recall_10`` / ``recall_100``;
* ``mrr@10`` = trec_eval's ``recip_rank`` on the run cut to its top 10 (trec_eval's own ``recip_rank`` has no
  cut-off, so a first relevant hit at rank 37 would still count 1/37).

trec_eval orders a run by score and breaks ties by document id, which would silently re-order documents
with equal scores. Runs are therefore handed over with strictly decreasing synthetic scores (``n - rank``),
so exactly our ranking is evaluated.

How the runs are built (``top_k`` retrieved and reranked, default 50; ``top_n`` kept, default 5):

* retrieval run: Chroma's top ``max(100, top_k)``;
* rerank run: the ``top_k`` candidates in reranked order, followed by retrieval ranks ``top_k+1 .. 100``
  unchanged. Recall@100 of the rerank run is thus well defined (and equals retrieval's when ``top_k`` <= 100:
  reranking only permutes the top ``top_k``), while NDCG@10, Recall@10 and MRR@10 see the whole reranked
  top-k;
* tokens: for each query the ``top_k`` candidates are what a prompt would hold without reranking, the reranked
  ``top_n`` what it holds with it (``TokenLedger.record``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zerank_integrations.base import rank_scores

if TYPE_CHECKING:
    from zerank_integrations.accounting import TokenLedger
    from zerank_integrations.base import Reranker
    from zerank_integrations.retrieval import BeirCollection, ChromaStore

METRICS: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
RECALL_DEPTH = 100
_TREC_MEASURES = {"ndcg_cut.10", "recall.10", "recall.100"}
_RECALL_KEYS = {"recall@10": "recall_10", "recall@100": "recall_100"}

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str]]
NdcgGain = Literal["exponential", "linear"]


def _trec_run(run: Run, depth: int | None = None) -> dict[str, dict[str, float]]:
    """Doc ids in rank order -> strictly decreasing scores, so trec_eval's tie-breaking never applies."""
    out: dict[str, dict[str, float]] = {}
    for qid, docs in run.items():
        ranked = list(docs if depth is None else docs[:depth])
        if len(set(ranked)) != len(ranked):
            raise ValueError(f"run for query {qid!r} lists a document twice")
        out[qid] = {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}
    return out


def _gain(grade: int, ndcg_gain: NdcgGain) -> int:
    if ndcg_gain == "exponential":
        return 2**grade - 1 if grade > 0 else grade
    return grade


def per_query_metrics(qrels: Qrels, run: Run, *, ndcg_gain: NdcgGain = "exponential") -> dict[str, dict[str, float]]:
    """NDCG@10, Recall@10, Recall@100, MRR@10 per query of ``qrels`` (0.0 where the run misses a query)."""
    import pytrec_eval

    if ndcg_gain not in ("exponential", "linear"):
        raise ValueError(f"ndcg_gain must be 'exponential' or 'linear', got {ndcg_gain!r}")
    qrels_clean = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    qrels_gain = {q: {d: _gain(g, ndcg_gain) for d, g in docs.items()} for q, docs in qrels_clean.items()}
    trec_run = _trec_run(run)
    main = pytrec_eval.RelevanceEvaluator(qrels_clean, _TREC_MEASURES - {"ndcg_cut.10"}).evaluate(trec_run)
    ndcg = pytrec_eval.RelevanceEvaluator(qrels_gain, {"ndcg_cut.10"}).evaluate(trec_run)
    mrr = pytrec_eval.RelevanceEvaluator(qrels_clean, {"recip_rank"}).evaluate(_trec_run(run, depth=10))
    result: dict[str, dict[str, float]] = {}
    for qid in qrels_clean:
        values = {"ndcg@10": float(ndcg.get(qid, {}).get("ndcg_cut_10", 0.0))}
        values.update({name: float(main.get(qid, {}).get(key, 0.0)) for name, key in _RECALL_KEYS.items()})
        values["mrr@10"] = float(mrr.get(qid, {}).get("recip_rank", 0.0))
        result[qid] = values
    return result


def mean_metrics(qrels: Qrels, run: Run, *, ndcg_gain: NdcgGain = "exponential") -> dict[str, float]:
    """Means over the judged queries of ``qrels`` (each query weighs the same, as in BEIR)."""
    per_query = per_query_metrics(qrels, run, ndcg_gain=ndcg_gain)
    if not per_query:
        raise ValueError("no judged queries to evaluate")
    return {m: sum(v[m] for v in per_query.values()) / len(per_query) for m in METRICS}


@dataclass
class QueryResult:
    """One query's candidates: retrieved ids (top 100, Chroma order) and the reranked top-k with scores."""

    query_id: str
    query: str
    retrieved: list[str]
    reranked: list[tuple[str, float]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def rerank_run(self) -> list[str]:
        """Reranked top-k, then retrieval ranks k+1..100 (so Recall@100 is defined for the rerank run)."""
        head = [doc for doc, _ in self.reranked]
        taken = set(head)
        return head + [doc for doc in self.retrieved[:RECALL_DEPTH] if doc not in taken]


@dataclass
class EvalResult:
    """Everything ``eval`` reports; :meth:`to_json` is the fixed ``eval.json`` shape."""

    collection: str
    retrieval: dict[str, float]
    rerank: dict[str, float]
    tokens: dict[str, Any]
    queries: list[QueryResult]
    top_k: int
    top_n: int
    model: str
    embedding_model: str

    def to_json(self) -> dict[str, Any]:
        return {
            "retrieval": dict(self.retrieval),
            "rerank": dict(self.rerank),
            "tokens": dict(self.tokens),
            "queries": len(self.queries),
        }


def retrieve(
    store: ChromaStore,
    queries: Mapping[str, str],
    *,
    depth: int = RECALL_DEPTH,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[tuple[str, str]]]:
    """Top-``depth`` (id, content) per query id, best first: one embedding pass for all queries."""
    ids = list(queries)
    hits = store.search_many([queries[q] for q in ids], depth, progress=progress)
    return {qid: [(h.id, h.content) for h in row] for qid, row in zip(ids, hits, strict=True)}


def evaluate(
    store: ChromaStore,
    collection: BeirCollection,
    scorer: Reranker,
    ledger: TokenLedger,
    *,
    top_k: int = 50,
    top_n: int = 5,
    max_queries: int | None = None,
    retrieve_progress: Callable[[int], None] | None = None,
    rerank_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run both pipelines on the judged queries of ``collection`` (already ingested into ``store``)."""
    if top_k < 1 or top_n < 1:
        raise ValueError(f"top_k and top_n must be >= 1, got top_k={top_k}, top_n={top_n}")
    if top_n > top_k:
        raise ValueError(f"top_n ({top_n}) cannot exceed top_k ({top_k}): only retrieved documents can be kept")
    qids = collection.judged_query_ids()
    if max_queries is not None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        qids = qids[:max_queries]
    queries = {q: collection.queries[q] for q in qids}
    qrels = {q: dict(collection.qrels[q]) for q in qids}
    depth = max(RECALL_DEPTH, top_k)
    candidates = retrieve(store, queries, depth=depth, progress=retrieve_progress)

    results: list[QueryResult] = []
    for qid in qids:
        hits = candidates[qid]
        pool = hits[:top_k]
        texts = [content for _, content in pool]
        scores = scorer.score(queries[qid], texts)
        order = rank_scores(scores)  # best first; ties keep retrieval order
        reranked = [(pool[i][0], float(s)) for i, s in order]
        kept_idx = [i for i, _ in order[:top_n]]
        ledger.record(queries[qid], texts, [texts[i] for i in kept_idx])
        results.append(
            QueryResult(
                query_id=qid,
                query=queries[qid],
                retrieved=[doc for doc, _ in hits],
                reranked=reranked,
                kept=[pool[i][0] for i in kept_idx],
            )
        )
        if rerank_progress is not None:
            rerank_progress(1)

    retrieval_run = {r.query_id: r.retrieved[:depth] for r in results}
    rerank_run = {r.query_id: r.rerank_run for r in results}
    return EvalResult(
        collection=collection.name,
        retrieval=mean_metrics(qrels, retrieval_run),
        rerank=mean_metrics(qrels, rerank_run),
        tokens=dict(ledger.summary()),
        queries=results,
        top_k=top_k,
        top_n=top_n,
        model=str(getattr(scorer, "model_name", "")),
        embedding_model=store.embedder.model_name,
    )


_LABELS = {"ndcg@10": "NDCG@10", "recall@10": "Recall@10", "recall@100": "Recall@100", "mrr@10": "MRR@10"}


def metrics_table(result: EvalResult) -> str:
    """Markdown table: one row per metric, retrieval vs. rerank and the difference."""
    lines = [
        f"| metric | retrieval (top {result.top_k}) | + rerank | Δ |",
        "|---|---:|---:|---:|",
    ]
    for m in METRICS:
        before, after = result.retrieval[m], result.rerank[m]
        lines.append(f"| {_LABELS[m]} | {before:.4f} | {after:.4f} | {after - before:+.4f} |")
    return "\n".join(lines)


def tokens_table(tokens: Mapping[str, Any], top_k: int, top_n: int) -> str:
    """Markdown table of the token ledger summary: what a prompt of top-k vs. reranked top-n costs."""
    cost = tokens.get("cost_saved_usd")
    cost_text = "n/a (no price known)" if cost is None else f"${float(cost):.4f}"
    pct = tokens.get("percent_saved")
    pct_text = "n/a" if pct is None or (isinstance(pct, float) and math.isnan(pct)) else f"{float(pct):.1f}%"
    rows = [
        ("LLM / encoding", f"{tokens.get('llm')} / {tokens.get('encoding')}"),
        ("queries (LLM calls)", f"{tokens.get('calls')}"),
        (f"prompt tokens, all top-{top_k} candidates", f"{int(tokens.get('tokens_in', 0)):,}"),
        (f"prompt tokens, reranked top-{top_n} kept", f"{int(tokens.get('tokens_kept', 0)):,}"),
        ("tokens saved", f"{int(tokens.get('tokens_saved', 0)):,} ({pct_text})"),
        ("input cost saved", cost_text),
    ]
    return "\n".join(["| tokens | value |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)])


def render_markdown(result: EvalResult) -> str:
    """The ``eval.md`` report."""
    return (
        f"# zerank eval: {result.collection}\n\n"
        f"- queries: {len(result.queries)} (judged)\n"
        f"- retrieval: Chroma, cosine, embedding model `{result.embedding_model}`, top {result.top_k} "
        f"(top {max(RECALL_DEPTH, result.top_k)} for Recall@100)\n"
        f"- reranker: `{result.model}`, keeps top {result.top_n} for the prompt\n\n"
        f"{metrics_table(result)}\n\n"
        f"{tokens_table(result.tokens, result.top_k, result.top_n)}\n\n"
        "Rerank metrics rank the whole reranked top-k; its Recall@100 appends retrieval ranks "
        f"{result.top_k + 1}..{RECALL_DEPTH} after the reranked list.\n"
    )


def render_chart(result: EvalResult, path: str | os.PathLike[str]) -> None:
    """``eval.png``: grouped bars per metric, plus the prompt tokens with and without reranking."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(10.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state, safe in threads and servers
    ax, ax_tokens = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.2]})
    xs = range(len(METRICS))
    width = 0.38
    before = [result.retrieval[m] for m in METRICS]
    after = [result.rerank[m] for m in METRICS]
    bars1 = ax.bar([x - width / 2 for x in xs], before, width, label=f"retrieval top-{result.top_k}")
    bars2 = ax.bar([x + width / 2 for x in xs], after, width, label="+ zerank rerank")
    for bars in (bars1, bars2):
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(list(xs), [_LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.2)
    ax.set_title(f"{result.collection}: {len(result.queries)} queries")
    ax.legend(loc="upper center", ncols=2, fontsize=8, frameon=False)
    tokens_in = int(result.tokens.get("tokens_in", 0))
    tokens_kept = int(result.tokens.get("tokens_kept", 0))
    tbars = ax_tokens.bar(
        [f"top-{result.top_k}", f"reranked\ntop-{result.top_n}"], [tokens_in, tokens_kept], color=["C0", "C1"]
    )
    ax_tokens.bar_label(tbars, labels=[f"{tokens_in:,}", f"{tokens_kept:,}"], fontsize=8, padding=2)
    ax_tokens.set_title(f"prompt tokens ({result.tokens.get('llm')})")
    ax_tokens.set_ylim(0, max(tokens_in, 1) * 1.15)
    ax_tokens.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    fig.tight_layout()
    fig.savefig(os.fspath(path))


def write_report(result: EvalResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``eval.json`` (fixed shape), ``eval.md`` and ``eval.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "md": out / "eval.md", "png": out / "eval.png"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(result), encoding="utf-8")
    render_chart(result, paths["png"])
    return paths
