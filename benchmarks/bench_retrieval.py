"""Retrieval-only quality and speed on the shared BEIR collections: the first stage's correctness anchor.

Reproduces the table in ``../shared/datasets/README.md`` (all-MiniLM-L6-v2, cosine, Chroma, title + newline +
text): NDCG@10 and Recall@100 must match within about ±0.01. Also times ingest (embedding + upsert), a
no-op re-ingest and retrieval.

    python benchmarks/bench_retrieval.py [--sets scifact med cran] [--datasets ../shared/datasets]
        [--chroma-path DIR] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from zerank_integrations.evaluation import mean_metrics, retrieve
from zerank_integrations.retrieval import ChromaStore, ChunkingPolicy, connect, documents_in_order, load_beir

REFERENCE = {
    "scifact": {"ndcg@10": 0.642, "recall@100": 0.922},
    "med": {"ndcg@10": 0.788, "recall@100": 0.958},
    "cran": {"ndcg@10": 0.358, "recall@100": 0.776},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets")
    parser.add_argument("--sets", nargs="+", default=["scifact", "med", "cran"])
    parser.add_argument("--chroma-path", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="default: the embedder's window (the package default)"
    )
    parser.add_argument("--context-size", type=int, default=None, help="default: the package default")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="zerank-bench-") as tmp:
        client = connect(path=args.chroma_path or tmp)
        rows = []
        for name in args.sets:
            collection = load_beir(args.datasets / name)
            store = ChromaStore.open(f"bench-{name}", client=client, create=True)
            t0 = time.perf_counter()
            policy = ChunkingPolicy(size=args.chunk_size)
            if args.context_size is not None:
                policy = ChunkingPolicy(size=args.chunk_size, context=args.context_size)
            report = store.upsert(collection.corpus, chunking=policy)
            ingest_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = store.upsert(collection.corpus, chunking=policy)
            reingest_s = time.perf_counter() - t0
            qids = collection.judged_query_ids()
            t0 = time.perf_counter()
            hits = retrieve(store, {q: collection.queries[q] for q in qids}, depth=100)
            retrieve_s = time.perf_counter() - t0
            qrels = {q: collection.qrels[q] for q in qids}
            run = {q: [d for d, _ in documents_in_order((h.doc_id, h.score) for h in hits[q])] for q in qids}
            metrics = mean_metrics(qrels, run)
            linear = mean_metrics(qrels, run, ndcg_gain="linear")["ndcg@10"]
            ref = REFERENCE.get(name, {})
            row = {
                "set": name,
                "docs": len(collection.corpus),
                "queries": len(qids),
                **{k: round(v, 4) for k, v in metrics.items()},
                "ndcg@10_linear_gain": round(linear, 4),
                "reference_ndcg@10": ref.get("ndcg@10"),
                "reference_recall@100": ref.get("recall@100"),
                "ingest_s": round(ingest_s, 1),
                "chunks": report.chunks,
                "added": report.added,
                "reingest_s": round(reingest_s, 2),
                "reingest_unchanged": again.unchanged,
                "retrieve_s": round(retrieve_s, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    header = ["set", "docs", "queries", "NDCG@10 (ref)", "Recall@100 (ref)", "Recall@10", "MRR@10"]
    print("| " + " | ".join([*header, "ingest s", "retrieve s"]) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['set']} | {r['docs']} | {r['queries']} | {r['ndcg@10']:.3f} ({r['reference_ndcg@10']}) "
            f"| {r['recall@100']:.3f} ({r['reference_recall@100']}) "
            f"| {r['recall@10']:.3f} | {r['mrr@10']:.3f} "
            f"| {r['ingest_s']} | {r['retrieve_s']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
