"""How many prompt tokens (and dollars) does reranking save? A runnable report on a real test collection.

For every query of a BEIR collection (default: the MED collection bundled with the package), Chroma retrieves
the top-k passages (what a RAG prompt would hold without a reranker), zerank reranks them and only the top-n
are kept. The same calls are priced for several LLMs at once, from one set of reranked results.

    python examples/token_savings.py --model zeroentropy/zerank-2-reranker            # the real reranker
    python examples/token_savings.py --model ./tiny-model --max-queries 5     # offline tryout; see below
    python examples/token_savings.py --beir ./scifact --top-k 50 --top-n 5 \\
        --llm gpt-4o --llm gpt-4.1-mini --llm claude-sonnet-4-5

``zerank-integrations make-test-model ./tiny-model`` writes a random-weight model: the token counts are real
(they depend only on which documents are kept and how many), but *which* documents are kept is random.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from zerank_integrations import TokenLedger, ZerankScorer
from zerank_integrations.evaluation import is_random_weights_model, random_weights_note, retrieve
from zerank_integrations.rerank import RerankStep
from zerank_integrations.retrieval import BeirCollection, ChromaStore, load_beir, packaged_med
from zerank_integrations.scoring import ModelLoadError
from zerank_integrations.selection import SelectionPolicy


def ledger_for(llm: str) -> tuple[TokenLedger, bool]:
    """tiktoken knows OpenAI tokenizers only; others are approximated with o200k_base (flagged in the report)."""
    try:
        return TokenLedger(llm=llm), False
    except ValueError:
        return TokenLedger(llm=llm, encoding="o200k_base"), True


def load(args: argparse.Namespace) -> BeirCollection:
    if args.beir is not None:
        return load_beir(args.beir)
    with packaged_med() as folder:
        return load_beir(folder, name="med (bundled)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beir", type=Path, default=None, help="BEIR folder (default: bundled MED)")
    parser.add_argument("--model", default="zeroentropy/zerank-2-reranker", help="reranker hub id or local folder")
    parser.add_argument("--top-k", type=int, default=50, help="retrieved candidates (prompt without rerank)")
    parser.add_argument("--top-n", type=int, default=5, help="kept after reranking (prompt with rerank)")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument(
        "--llm", action="append", default=None, help="repeatable (default: gpt-4o, gpt-4o-mini, claude-sonnet-4-5)"
    )
    parser.add_argument("--chroma-path", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    if args.top_k < 1 or not 1 <= args.top_n <= args.top_k:
        parser.error(f"need 1 <= --top-n <= --top-k, got --top-n {args.top_n} --top-k {args.top_k}")
    llms = args.llm or ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"]

    try:  # load the model first: a wrong --model should fail before minutes of embedding
        scorer = ZerankScorer(args.model)
    except (ModelLoadError, ValueError) as error:
        parser.exit(1, f"token_savings.py: error: {error}\n")
    collection = load(args)
    qids = collection.judged_query_ids()[: args.max_queries]
    with tempfile.TemporaryDirectory(prefix="zerank-tokens-") as tmp:
        store = ChromaStore.open(f"tokens-{collection.path.name}", path=args.chroma_path or tmp, create=True)
        store.upsert(collection.corpus)
        candidates = retrieve(store, {q: collection.queries[q] for q in qids}, depth=args.top_k)

    ledgers = {llm: ledger_for(llm) for llm in llms}
    step = RerankStep(scorer, SelectionPolicy(top_n=args.top_n))  # the same step the integrations run
    started = time.perf_counter()
    for qid in qids:
        texts = [hit.content for hit in candidates[qid]]
        kept = [texts[i] for i, _ in step.run(collection.queries[qid], texts).kept]
        for ledger, _ in ledgers.values():
            ledger.record(collection.queries[qid], texts, kept)
    elapsed = time.perf_counter() - started

    if is_random_weights_model(scorer):
        print(random_weights_note(scorer.model_name))
    print(f"{collection.name}: {len(qids)} queries, top-{args.top_k} retrieved -> top-{args.top_n} kept")
    print(f"reranker {scorer.model_name}: {elapsed:.1f} s for {len(qids) * args.top_k:,} pairs\n")
    print("| LLM | encoding | tokens in | tokens kept | saved | $ saved (all queries) | $ saved / 1k queries |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for llm, (ledger, approximate) in ledgers.items():
        s = ledger.summary()
        cost = s["cost_saved_usd"]
        per_k = "n/a" if cost is None else f"${cost / max(len(qids), 1) * 1000:,.2f}"
        total = "n/a" if cost is None else f"${cost:,.4f}"
        approx = " (approx.)" if approximate else ""
        print(
            f"| {llm} | {s['encoding']}{approx} | {s['tokens_in']:,} | {s['tokens_kept']:,} "
            f"| {s['tokens_saved']:,} ({s['percent_saved']:.1f}%) | {total} | {per_k} |"
        )
    print(f"\nprices: input $/1M tokens, table dated {ledgers[llms[0]][0].summary()['prices_as_of']}")


if __name__ == "__main__":
    main()
