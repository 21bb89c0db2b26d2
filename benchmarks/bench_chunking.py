"""How to cut documents for the embedder: retrieval NDCG@10 of chunking variants on the shared BEIR sets.

Each variant chunks the whole corpus with the library's own chunker (``chunk_documents``, the package's
defaults otherwise: 254-token windows, an eighth of overlap, 512-token contexts), embeds every chunk with the
bundled all-MiniLM-L6-v2 in float32, and ranks documents by their best chunk with exact cosine (no approximate
index, so the variants differ only by their chunks). A text embedded by one variant is not embedded again for
another.

Variants (the cut rule is swapped in for the library's ``_cut``; ``title``: later chunks embedded after the
document's title, as ``Chunk.embedded_text`` does):

- ``unsplit``: every document one chunk, truncated by the embedder at 256 tokens (the release before #24);
- ``quarter``: each chunk ends at the best break in the last quarter of its window, the last chunk is what is
  left (the first #24 default);
- ``quarter-whole-tail``: the same, the last chunk a whole window ending at the end;
- ``eighth-whole-tail``: breaks in the last eighth, whole last window;
- ``merge-tail``: ``quarter``, a last chunk under half a window merged into the one before;
- ``default``: ``eighth-whole-tail`` + title (what the package does).

    python benchmarks/bench_chunking.py [--sets med cran scifact] [--variants unsplit quarter ... default]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zerank_integrations.evaluation import mean_metrics
from zerank_integrations.retrieval import chunking, load_beir
from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder

Cut = Callable[..., list[tuple[int, int]]]
LIBRARY_CUT: Cut = chunking._cut


def rule(floor: float, whole_tail: bool, merge_tail: bool = False) -> Cut:
    """A cut: breaks searched in the last ``1 - floor`` of each window; the last window whole or merged."""

    def cut(
        text: str,
        spans: Sequence[tuple[int, int]],
        first: int,
        stop: int,
        size: int,
        overlap: int,
        *,
        full_tail: bool = False,  # the library asks for it on chunk cuts, not on context cuts
    ) -> list[tuple[int, int]]:
        if stop - first <= size:
            return [(first, stop)]
        out: list[tuple[int, int]] = []
        while True:
            last = min(first + size, stop)
            if last < stop:
                low = first + max(1, int(floor * size))
                last = max(
                    range(low, last + 1),
                    key=lambda k: (chunking._break_quality(text, spans[k - 1][1], spans[k][0]), k),
                )
            out.append((first, last))
            if last >= stop:
                break
            first = chunking._word_start(text, spans, max(last - overlap, first + 1), last)
        if full_tail and merge_tail and out[-1][1] - out[-1][0] < size // 2:
            out = [*out[:-2], (out[-2][0], stop)]
        elif full_tail and whole_tail and out[-1][1] - out[-1][0] < size:
            out[-1] = (chunking._word_start(text, spans, max(out[-2][0] + 1, stop - size), out[-1][0]), stop)
        return out

    return cut


VARIANTS: dict[str, dict[str, Any]] = {
    "unsplit": {"size": 10**6, "cut": LIBRARY_CUT, "title": False},
    "quarter": {"cut": rule(0.75, whole_tail=False), "title": False},
    "quarter-whole-tail": {"cut": rule(0.75, whole_tail=True), "title": False},
    "eighth-whole-tail": {"cut": rule(0.875, whole_tail=True), "title": False},
    "merge-tail": {"cut": rule(0.75, whole_tail=False, merge_tail=True), "title": False},
    "default": {"cut": LIBRARY_CUT, "title": True},
}


class CachedEmbedder:
    """Each distinct text embedded once across variants."""

    def __init__(self) -> None:
        self.embedder = SentenceTransformerEmbedder()
        self.vectors: dict[bytes, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(text.encode()).digest() for text in texts]
        todo = sorted({key: text for key, text in zip(keys, texts, strict=True) if key not in self.vectors}.items())
        if todo:
            for (key, _), vector in zip(todo, self.embedder.encode([t for _, t in todo]), strict=True):
                self.vectors[key] = vector
        return np.stack([self.vectors[key] for key in keys])


def run(name: str, variant: str, collection: Any, embedder: CachedEmbedder) -> dict[str, Any]:
    spec = VARIANTS[variant]
    chunking._cut = spec["cut"]
    try:
        policy = chunking.ChunkingPolicy(size=spec.get("size")).fit(embedder.embedder.max_tokens)
        per_document = chunking.chunk_documents(collection.corpus, policy, embedder.embedder.token_spans)
        chunks = [c for per in per_document for c in per]
    finally:
        chunking._cut = LIBRARY_CUT
    started = time.perf_counter()
    vectors = embedder.encode([c.embedded_text if spec["title"] else c.text for c in chunks])
    qids = collection.judged_query_ids()
    queries = embedder.encode([collection.queries[q] for q in qids])
    run_ = {}
    for row, qid in zip(queries @ vectors.T, qids, strict=True):
        ranked: list[str] = []
        for index in np.argsort(-row):
            doc = chunks[index].document.id
            if doc not in ranked:
                ranked.append(doc)
                if len(ranked) == 100:
                    break
        run_[qid] = ranked
    metrics = mean_metrics({q: collection.qrels[q] for q in qids}, run_)
    return {
        "set": name,
        "variant": variant,
        "chunks": len(chunks),
        "ndcg@10": round(metrics["ndcg@10"], 4),
        "recall@100": round(metrics["recall@100"], 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets")
    parser.add_argument("--sets", nargs="+", default=["med", "cran", "scifact"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    embedder = CachedEmbedder()
    rows = []
    for name in args.sets:
        collection = load_beir(args.datasets / name)
        for variant in args.variants:
            rows.append(run(name, variant, collection, embedder))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| variant | " + " | ".join(args.sets) + " |")
    print("|---|" + "---:|" * len(args.sets))
    for variant in args.variants:
        cells = [next(r["ndcg@10"] for r in rows if r["set"] == s and r["variant"] == variant) for s in args.sets]
        print(f"| {variant} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
