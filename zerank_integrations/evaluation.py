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

How the runs are built (``top_k`` passages retrieved and reranked, default 50; the selection policy decides
what is kept for the prompt, default the top 5):

* judgements are per document, passages may be chunks: a document takes the place of its best passage
  (the first in rank order), so it scores as the best of its chunks. A collection of whole documents
  (one chunk each) is evaluated exactly as before;
* retrieval run: the retriever's top ``max(100, top_k)`` passages, as documents;
* rerank run: the ``top_k`` candidates in reranked order, followed by the retrieval run's remaining documents
  unchanged. Recall@100 of the rerank run is thus well defined (and equals retrieval's when ``top_k`` <= 100
  and documents are whole), while NDCG@10, Recall@10 and MRR@10 see the whole reranked top-k;
* kept run: only the documents the policy keeps (``score_threshold`` → ``top_n`` → ``max_prompt_tokens``),
  in reranked order: its NDCG@10 and Recall@10, next to the prompt tokens they cost, measure a policy's
  quality/tokens trade-off;
* tokens: for each query the ``top_k`` candidates are what a prompt would hold without reranking, the kept
  ones what it holds with it (``TokenLedger.record``); with a ledger that knows the prompt, the whole input
  (question, instructions, chat formatting) is counted both ways too;
* bill (``llm=``): each query's prompt with the kept passages is sent to an OpenAI-compatible LLM (and, with
  ``llm_counterfactual``, once more with every candidate); what it billed is reconciled with the ledger.

The rules for evaluating into a Chroma collection live here too (:func:`collection_name_for`,
:func:`prepare_collection`), so a library caller gets the same guard as the CLI.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zerank_integrations.rerank import RerankResult, RerankStep
from zerank_integrations.retrieval.base import Hit, check_hits, describe_retriever, documents_in_order
from zerank_integrations.retrieval.errors import EvaluationSetupError
from zerank_integrations.selection import SelectionPolicy

if TYPE_CHECKING:
    from zerank_integrations.accounting import TokenLedger
    from zerank_integrations.base import Reranker
    from zerank_integrations.billing.openai_compatible import OpenAICompatibleLLM
    from zerank_integrations.retrieval import BeirCollection, ChromaStore, ChunkingPolicy, IngestReport, Retriever

RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"
KEPT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@10")
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
    """One query: retrieved documents (retrieval order), the reranked candidates and what the policy kept."""

    query_id: str
    query: str
    retrieved: list[str]
    """Document ids in retrieval order (each at the place of its best passage), depth ``max(100, top_k)``."""
    reranked: list[tuple[str, float]] = field(default_factory=list)
    """(document id, best passage probability) of the ``top_k`` candidates, best first."""
    kept: list[str] = field(default_factory=list)
    """Document ids of the passages the policy kept for the prompt, best first."""
    kept_passages: list[str] = field(default_factory=list)
    """Ids of the kept passages themselves (chunk ids; the document ids when documents are whole)."""
    over_budget: list[str] = field(default_factory=list)
    """Ids of passages that passed threshold and ``top_n`` but did not fit ``max_prompt_tokens``."""

    @property
    def rerank_run(self) -> list[str]:
        """Reranked top-k, then the remaining retrieved documents (so Recall@100 is defined for the rerank run)."""
        head = [doc for doc, _ in self.reranked]
        taken = set(head)
        return head + [doc for doc in self.retrieved[:RECALL_DEPTH] if doc not in taken]


@dataclass
class EvalResult:
    """Everything ``eval`` reports; :meth:`to_json` is the ``eval.json`` shape."""

    collection: str
    retrieval: dict[str, float]
    rerank: dict[str, float]
    kept: dict[str, float]
    """NDCG@10 and Recall@10 of the kept documents alone, and the mean prompt tokens they cost per query."""
    tokens: dict[str, Any]
    queries: list[QueryResult]
    top_k: int
    policy: SelectionPolicy
    retriever: str
    reranker: dict[str, Any]
    machine: dict[str, Any]
    instruction: str | None = None
    bill: dict[str, Any] | None = None
    """What the LLM billed (``Bill.summary()``: exactly ``BILL_KEYS``); ``None`` without an LLM or when it failed."""
    bill_error: str | None = None
    """Why the LLM could not bill the prompts (one line); the rest of the report stands."""

    @property
    def model(self) -> str:
        return str(self.reranker.get("model", ""))

    @property
    def random_weights(self) -> bool:
        return bool(self.reranker.get("random_weights"))

    def to_json(self) -> dict[str, Any]:
        billed: dict[str, Any] = {}
        if self.bill is not None or self.bill_error is not None:
            billed["bill"] = self.bill
        if self.bill_error is not None:
            billed["bill_error"] = self.bill_error
        return {
            "retrieval": dict(self.retrieval),
            "rerank": dict(self.rerank),
            "kept": dict(self.kept),
            "tokens": dict(self.tokens),
            "queries": len(self.queries),
            "collection": self.collection,
            "retriever": {"description": self.retriever, "top_k": self.top_k, "recall_depth": self.depth},
            "reranker": {**self.reranker, "instruction": self.instruction},
            "selection": self.policy.to_dict(),
            "machine": dict(self.machine),
            **billed,
        }

    @property
    def depth(self) -> int:
        return max(RECALL_DEPTH, self.top_k)


def is_random_weights_model(scorer: object) -> bool:
    """Whether ``scorer`` runs a random-weight test checkpoint (its scores are meaningless).

    Asks the scorer (``ZerankScorer.random_weights``), else looks for the ``RANDOM_WEIGHTS.txt`` marker that
    ``make-test-model`` writes next to the weights of a local model folder.
    """
    flag = getattr(scorer, "random_weights", None)
    if isinstance(flag, bool):
        return flag
    name = str(getattr(scorer, "model_name", "") or "")
    try:
        return bool(name) and (Path(name).expanduser() / RANDOM_WEIGHTS_MARKER).is_file()
    except OSError:
        return False


def reranker_info(scorer: object) -> dict[str, Any]:
    """What a report says about the reranker: model, revision, family, random weights, backend."""
    info: dict[str, Any] = {"model": str(getattr(scorer, "model_name", "") or type(scorer).__name__)}
    for name in ("revision", "family"):
        value = getattr(scorer, name, None)
        info[name] = value if isinstance(value, (str, type(None))) else str(value)
    info["random_weights"] = is_random_weights_model(scorer)
    info["backend"] = type(scorer).__name__
    return info


def random_weights_note(model: str) -> str:
    """The one-line warning shown wherever results of a random-weight checkpoint appear."""
    return (
        f"note: {model} is a random-weight test model: its rerank scores are meaningless; the numbers below only "
        "show that the pipeline runs"
    )


def machine_info(scorer: object | None = None) -> dict[str, Any]:
    """The machine a report was made on: OS, CPU, cores, Python and, for a local model, its device."""
    info: dict[str, Any] = {
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    device = getattr(scorer, "device", None)
    if device is not None:
        info["device"] = str(device)
        torch = sys.modules.get("torch")  # only when the scorer already imported it
        if torch is not None and str(device).startswith("cuda") and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(str(device)))
        if torch is not None:
            info["torch"] = str(torch.__version__)
    return info


def retrieve(
    retriever: Retriever,
    queries: Mapping[str, str],
    *,
    depth: int = RECALL_DEPTH,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[Hit]]:
    """Top-``depth`` passages per query id, best first (one batch call when the retriever has ``search_many``)."""
    ids = list(queries)
    search_many = getattr(retriever, "search_many", None)
    if callable(search_many):
        rows = search_many([queries[q] for q in ids], depth, progress=progress)
    else:
        rows = []
        for qid in ids:
            rows.append(retriever.search(queries[qid], depth))
            if progress is not None:
                progress(1)
    return {qid: check_hits(row, retriever) for qid, row in zip(ids, rows, strict=True)}


#: Runs ``step`` on (query, candidate passages) per query, in order, calling ``progress(n)`` as queries finish;
#: one result per query, recorded on ``step.ledger``. The default is :func:`rerank_in_process`.
RerankRequests = Sequence[tuple[str, list[str]]]
RerankStage = Callable[[RerankStep, RerankRequests, Callable[[int], None] | None], Iterable[RerankResult]]


def rerank_in_process(
    step: RerankStep, requests: RerankRequests, progress: Callable[[int], None] | None = None
) -> list[RerankResult]:
    """The default rerank stage: ``step.run`` on each query, in this process."""
    outcomes = []
    for query, passages in requests:
        outcomes.append(step.run(query, passages))
        if progress is not None:
            progress(1)
    return outcomes


def evaluate(
    retriever: Retriever,
    collection: BeirCollection,
    scorer: Reranker,
    ledger: TokenLedger,
    *,
    top_k: int = 50,
    top_n: int | None = 5,
    score_threshold: float | None = None,
    max_prompt_tokens: int | None = None,
    instruction: str | None = None,
    max_queries: int | None = None,
    retrieve_progress: Callable[[int], None] | None = None,
    rerank_progress: Callable[[int], None] | None = None,
    rerank_stage: RerankStage | None = None,
    llm: OpenAICompatibleLLM | None = None,
    llm_counterfactual: bool = False,
    llm_progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run both pipelines on the judged queries of ``collection`` (already in ``retriever``).

    The rerank step is the one every caller uses: ``scorer`` scores the ``top_k`` retrieved passages,
    ``score_threshold`` → ``top_n`` → ``max_prompt_tokens`` (counted by ``ledger``) pick what is kept, and the
    ledger records each query's prompt with and without reranking. ``rerank_stage`` runs that step somewhere
    else (:class:`~zerank_integrations.ray_data.RayRerankStage`: on Ray Data workers); by default it runs here.

    ``llm`` (an :class:`~zerank_integrations.billing.openai_compatible.OpenAICompatibleLLM`) is sent each
    query's prompt (``ledger.render``: the ledger must know the prompt) with the kept passages, and with
    ``llm_counterfactual`` with every candidate too; the result's ``bill`` reconciles what it billed with the
    ledger. An LLM failure leaves ``bill`` ``None`` and says why in ``bill_error``; the metrics still stand.
    """
    if llm is not None and getattr(ledger, "prompt", None) is None:
        raise ValueError("evaluating the LLM bill needs a ledger that knows the prompt: TokenLedger(..., prompt=...)")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    policy = SelectionPolicy(score_threshold=score_threshold, top_n=top_n, max_prompt_tokens=max_prompt_tokens)
    if policy.top_n is not None and policy.top_n > top_k:
        raise ValueError(f"top_n ({top_n}) cannot exceed top_k ({top_k}): only retrieved documents can be kept")
    step = RerankStep(scorer, policy, ledger=ledger, instruction=instruction)
    qids = collection.judged_query_ids()
    if max_queries is not None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be >= 1, got {max_queries}")
        qids = qids[:max_queries]
    queries = {q: collection.queries[q] for q in qids}
    qrels = {q: dict(collection.qrels[q]) for q in qids}
    depth = max(RECALL_DEPTH, top_k)
    candidates = retrieve(retriever, queries, depth=depth, progress=retrieve_progress)

    requests = [(queries[qid], [h.content for h in candidates[qid][:top_k]]) for qid in qids]
    outcomes = list((rerank_stage or rerank_in_process)(step, requests, rerank_progress))
    if len(outcomes) != len(requests):
        raise RuntimeError(f"the rerank stage returned {len(outcomes)} results for {len(requests)} queries")
    results: list[QueryResult] = []
    kept_tokens = 0
    for qid, outcome in zip(qids, outcomes, strict=True):
        hits = candidates[qid]
        pool = hits[:top_k]
        kept_tokens += outcome.savings.tokens_kept
        results.append(
            QueryResult(
                query_id=qid,
                query=queries[qid],
                retrieved=[doc for doc, _ in documents_in_order((h.doc_id, h.score) for h in hits)],
                reranked=documents_in_order((pool[i].doc_id, s) for i, s in outcome.ranking),
                kept=[doc for doc, _ in documents_in_order((pool[i].doc_id, s) for i, s in outcome.kept)],
                kept_passages=[pool[i].id for i, _ in outcome.kept],
                over_budget=[pool[i].id for i in outcome.over_budget],
            )
        )

    bill, bill_error = None, None
    if llm is not None:
        from zerank_integrations.billing.openai_compatible import LLMBillingError, bill_prompts

        calls = [
            (query, [passages[i] for i, _ in outcome.kept], passages, outcome.savings)
            for (query, passages), outcome in zip(requests, outcomes, strict=True)
        ]
        try:
            bill = bill_prompts(llm, ledger, calls, counterfactual=llm_counterfactual, progress=llm_progress).summary()
        except LLMBillingError as exc:
            bill_error = str(exc)

    kept_metrics = mean_metrics(qrels, {r.query_id: r.kept for r in results})
    return EvalResult(
        collection=collection.name,
        retrieval=mean_metrics(qrels, {r.query_id: r.retrieved for r in results}),
        rerank=mean_metrics(qrels, {r.query_id: r.rerank_run for r in results}),
        kept={
            **{m: kept_metrics[m] for m in KEPT_METRICS},
            "prompt_tokens_per_query": kept_tokens / len(results),
            "documents_per_query": sum(len(r.kept_passages) for r in results) / len(results),
        },
        tokens=dict(ledger.summary()),
        queries=results,
        top_k=top_k,
        policy=policy,
        retriever=describe_retriever(retriever),
        reranker=reranker_info(scorer),
        machine=machine_info(scorer),
        instruction=step.instruction,
        bill=bill,
        bill_error=bill_error,
    )


# -- evaluating into a Chroma collection -------------------------------------------------------------------


def collection_name_for(folder: str | os.PathLike[str]) -> str:
    """A valid Chroma name derived from a BEIR folder: ``beir-<folder name>`` with other characters as '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(folder).expanduser().resolve().name)
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-") or "collection"
    return f"beir-{stem}"[:512].rstrip("._-")


def prepare_collection(
    store: ChromaStore,
    collection: BeirCollection,
    *,
    batch_size: int = 256,
    chunking: ChunkingPolicy | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest ``collection``'s corpus into ``store`` for evaluation, refusing a store with other documents.

    Evaluating into, say, the user's own collection would both skew the metrics and leave a thousand stray
    documents in their data, so a store holding documents that are not in the corpus is refused before
    anything is written (:class:`EvaluationSetupError`). Upserting is idempotent: an evaluated collection is
    reused as is.
    """
    corpus_ids = {doc.id for doc in collection.corpus}
    if store.count():
        stray = sorted(store.document_ids() - corpus_ids)
        if stray:
            raise EvaluationSetupError(
                f"collection {store.name!r} holds {len(stray):,} documents that are not in {collection.path} "
                f"(e.g. {stray[0]!r}); nothing was written. Evaluate into a fresh --collection so stray "
                "documents do not skew the metrics"
            )
    report = store.upsert(collection.corpus, batch_size=batch_size, chunking=chunking, progress=progress)
    held = store.document_ids()
    if held != corpus_ids:
        raise EvaluationSetupError(
            f"collection {store.name!r} holds {len(held):,} documents but {collection.path} has "
            f"{len(corpus_ids):,}; evaluate into a fresh --collection so stray documents do not skew the metrics"
        )
    return report


# -- reports -----------------------------------------------------------------------------------------------

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


def kept_table(result: EvalResult) -> str:
    """Markdown table: what the selection policy keeps for the prompt, its quality and its tokens."""
    kept = result.kept
    return "\n".join(
        [
            f"| kept for the prompt ({result.policy.describe()}) | value |",
            "|---|---:|",
            f"| NDCG@10 of the kept documents | {kept['ndcg@10']:.4f} |",
            f"| Recall@10 of the kept documents | {kept['recall@10']:.4f} |",
            f"| passages kept per query | {kept['documents_per_query']:.2f} |",
            f"| prompt tokens per query | {kept['prompt_tokens_per_query']:,.1f} |",
        ]
    )


def tokens_table(
    tokens: Mapping[str, Any],
    top_k: int,
    policy: SelectionPolicy | int | None,
    bill: Mapping[str, Any] | None = None,
    bill_error: str | None = None,
) -> str:
    """Markdown table of the token ledger summary: what a prompt of top-k vs. the kept documents costs; the
    whole input when the ledger knows the prompt, and what the LLM billed when there is a bill."""
    if not isinstance(policy, SelectionPolicy):
        policy = SelectionPolicy(top_n=policy)
    cost = tokens.get("cost_saved_usd")
    cost_text = "n/a (no price known)" if cost is None else f"${float(cost):.4f}"
    pct_text = _percent_text(tokens.get("percent_saved"))
    rows = [
        ("LLM / encoding", f"{tokens.get('llm')} / {tokens.get('encoding')}"),
        ("queries (LLM calls)", f"{tokens.get('calls')}"),
        (f"prompt tokens, all top-{top_k} candidates", f"{int(tokens.get('tokens_in', 0)):,}"),
        (f"prompt tokens, kept ({policy.describe()})", f"{int(tokens.get('tokens_kept', 0)):,}"),
        ("tokens saved", f"{int(tokens.get('tokens_saved', 0)):,} ({pct_text})"),
        ("input cost saved", cost_text),
    ]
    if tokens.get("input_tokens_in") is not None:
        rows += [
            (f"whole input tokens (prompt + question), all top-{top_k}", f"{int(tokens['input_tokens_in']):,}"),
            ("whole input tokens, kept", f"{int(tokens['input_tokens_kept']):,}"),
            ("share of the input saved", _percent_text(tokens.get("percent_of_input_saved"))),
        ]
    if tokens.get("counting"):
        rows.append(("counting", f"{tokens['counting']} ({tokens.get('tokenizer')})"))
    rows += _bill_rows(bill, bill_error, top_k)
    return "\n".join(["| tokens | value |", "|---|---:|", *(f"| {a} | {b} |" for a, b in rows)])


def _bill_rows(bill: Mapping[str, Any] | None, bill_error: str | None, top_k: int) -> list[tuple[str, str]]:
    """The LLM's bill next to the ledger's figures (or the one line saying why there is none)."""
    if bill is None:
        return [] if bill_error is None else [("LLM bill", "failed: " + bill_error.replace("|", "/"))]
    every = bill.get("input_tokens_all_candidates")
    predicted = bill.get("predicted_input_tokens_reranked")
    rows = [
        (
            f"LLM billed input, kept ({bill.get('llm')}, {bill.get('calls')} calls)",
            f"{bill['input_tokens_reranked']:,}",
        ),
        (f"LLM billed input, all top-{top_k}", "not sent (--llm-counterfactual)" if every is None else f"{every:,}"),
    ]
    if bill.get("input_tokens_saved") is not None:
        saved = f"{bill['input_tokens_saved']:,} ({_percent_text(bill['percent_of_input_saved'])})"
        rows.append(("billed input saved", saved))
    prediction = "n/a" if predicted is None else f"{predicted:,}"
    exactness = "" if bill.get("exact") else " (approximate tokenizer)"
    rows.append(("ledger's prediction / mismatches", f"{prediction} / {bill.get('mismatches')}{exactness}"))
    return rows


def _percent_text(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.1f}%"


def setup_lines(result: EvalResult) -> list[str]:
    """Who and what produced the numbers: retriever, reranker, policy, machine (one line each)."""
    info = result.reranker
    reranker = f"`{info.get('model')}`"
    details = [f"{k} {info[k]}" for k in ("revision", "family") if info.get(k)]
    if result.instruction:
        details.append(f"instruction {result.instruction!r}")
    if details:
        reranker += f" ({', '.join(details)})"
    machine = result.machine
    where = f"{machine.get('processor')}, {machine.get('cpu_count')} cores, Python {machine.get('python')}"
    if machine.get("device"):
        where += f", reranker on {machine['device']}" + (f" ({machine['gpu']})" if machine.get("gpu") else "")
    return [
        f"queries: {len(result.queries)} (judged)",
        f"retrieval: {result.retriever}, top {result.top_k} (top {result.depth} for Recall@100)",
        f"reranker: {reranker}" + (" — RANDOM WEIGHTS, scores meaningless" if result.random_weights else ""),
        f"selection policy: {result.policy.describe()}",
        f"machine: {where} ({machine.get('platform')})",
    ]


def render_markdown(result: EvalResult) -> str:
    """The ``eval.md`` report."""
    warning = f"> **{random_weights_note(result.model)}.**\n\n" if result.random_weights else ""
    setup = "".join(f"- {line}\n" for line in setup_lines(result))
    return (
        f"# zerank eval: {result.collection}\n\n"
        f"{warning}{setup}\n"
        f"{metrics_table(result)}\n\n"
        f"{kept_table(result)}\n\n"
        f"{tokens_table(result.tokens, result.top_k, result.policy, result.bill, result.bill_error)}\n\n"
        "Rerank metrics rank the whole reranked top-k; its Recall@100 appends the retrieval run's remaining "
        "documents after the reranked list. Documents split into chunks score as their best chunk.\n"
    )


def build_chart(result: EvalResult) -> Any:
    """The ``eval.png`` figure: metrics before/after reranking and for the kept documents, prompt tokens,
    and a footer naming the retriever, the reranker, the policy and the machine."""
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(11, 5.4), dpi=110)
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state, safe in threads and servers
    ax, ax_tokens = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.2]})
    xs = list(range(len(METRICS)))
    width = 0.27
    series = [
        (f"retrieval top-{result.top_k}", [result.retrieval[m] for m in METRICS], xs),
        ("+ rerank (all top-k)", [result.rerank[m] for m in METRICS], xs),
        ("kept for the prompt", [result.kept[m] for m in KEPT_METRICS], [METRICS.index(m) for m in KEPT_METRICS]),
    ]
    for k, (label, values, positions) in enumerate(series):
        bars = ax.bar([x + (k - 1) * width for x in positions], values, width, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(xs, [_LABELS[m] for m in METRICS])
    ax.set_ylim(0, 1.2)
    ax.set_title(f"{result.collection}: {len(result.queries)} queries")
    ax.legend(loc="upper center", ncols=3, fontsize=8, frameon=False)
    tokens_in = int(result.tokens.get("tokens_in", 0))
    tokens_kept = int(result.tokens.get("tokens_kept", 0))
    tbars = ax_tokens.bar([f"top-{result.top_k}", "kept"], [tokens_in, tokens_kept], color=["C0", "C2"])
    ax_tokens.bar_label(tbars, labels=[f"{tokens_in:,}", f"{tokens_kept:,}"], fontsize=8, padding=2)
    ax_tokens.set_title(f"prompt tokens ({result.tokens.get('llm')})")
    ax_tokens.set_ylim(0, max(tokens_in, 1) * 1.15)
    ax_tokens.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    footer = "\n".join(textwrap.shorten(line, 190, placeholder="…") for line in setup_lines(result)[1:])
    fig.text(0.01, 0.01, footer, fontsize=7, color="0.3", va="bottom")
    if result.random_weights:
        fig.suptitle(
            f"RANDOM-WEIGHT TEST MODEL ({result.model}): rerank scores are meaningless",
            color="red",
            fontsize=12,
            fontweight="bold",
        )
    fig.tight_layout(rect=(0, 0.13, 1, 0.95 if result.random_weights else 1))
    return fig


def render_chart(result: EvalResult, path: str | os.PathLike[str]) -> None:
    """Write :func:`build_chart` as a PNG."""
    build_chart(result).savefig(os.fspath(path))


def write_report(result: EvalResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``eval.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "md": out / "eval.md", "png": out / "eval.png"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(result), encoding="utf-8")
    render_chart(result, paths["png"])
    return paths
