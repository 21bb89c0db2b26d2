"""Ranking drift of the int8 embedder, measured on the one trained transformer here: all-MiniLM-L6-v2.

Retrieval NDCG@10 / Recall@100 on the shared BEIR collections with float32 embeddings and with int8 embeddings
(``SentenceTransformerEmbedder(quantization="int8")``), same texts (title + newline + text, as
``bench_retrieval.py``), exact cosine top-100 (brute force, so that Chroma's approximate index adds no noise
of its own to the comparison), plus each pass's embedding time and the smallest cosine between a document's
float32 and int8 vectors.

    python benchmarks/bench_int8_retrieval.py [--sets scifact med cran] [--threads 1] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from zerank_integrations.evaluation import mean_metrics
from zerank_integrations.retrieval import load_beir
from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets")
    parser.add_argument("--sets", nargs="+", default=["scifact", "med", "cran"])
    parser.add_argument("--threads", type=int, default=1, help="compute threads for both (a shared CPU: 1)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["ZERANK_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    embedders = {"fp32": SentenceTransformerEmbedder(), "int8": SentenceTransformerEmbedder(quantization="int8")}
    for embedder in embedders.values():
        embedder.encode(["warm up"])  # load (and, for int8, prepare or read the cached model) before timing
    rows = []
    for name in args.sets:
        collection = load_beir(args.datasets / name)
        texts = [document.content for document in collection.corpus]
        ids = [document.id for document in collection.corpus]
        qids = collection.judged_query_ids()
        qrels = {q: collection.qrels[q] for q in qids}
        row: dict[str, object] = {"set": name, "docs": len(texts), "queries": len(qids)}
        vectors = {}
        for label, embedder in embedders.items():
            started = time.perf_counter()
            docs = embedder.encode(texts)
            row[f"{label}_embed_s"] = round(time.perf_counter() - started, 1)
            queries = embedder.encode([collection.queries[q] for q in qids])
            top = np.argsort(-(queries @ docs.T), axis=1)[:, :100]
            run = {q: [ids[i] for i in top[n]] for n, q in enumerate(qids)}
            metrics = mean_metrics(qrels, run)
            row[f"{label}_ndcg@10"] = round(metrics["ndcg@10"], 4)
            row[f"{label}_recall@100"] = round(metrics["recall@100"], 4)
            vectors[label] = docs
        row["ndcg@10_delta"] = round(float(row["int8_ndcg@10"]) - float(row["fp32_ndcg@10"]), 4)  # type: ignore[arg-type]
        row["min_cosine"] = round(float((vectors["fp32"] * vectors["int8"]).sum(1).min()), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads {args.threads}")
    print("| set | docs | NDCG@10 fp32 | NDCG@10 int8 | Δ | Recall@100 fp32 / int8 | min cos | embed s fp32 / int8 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['set']} | {r['docs']} | {r['fp32_ndcg@10']:.4f} | {r['int8_ndcg@10']:.4f} "
            f"| {r['ndcg@10_delta']:+.4f} "
            f"| {r['fp32_recall@100']:.3f} / {r['int8_recall@100']:.3f} | {r['min_cosine']:.4f} "
            f"| {r['fp32_embed_s']} / {r['int8_embed_s']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
