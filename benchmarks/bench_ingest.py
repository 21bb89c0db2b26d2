"""Ingest of a real site (the Rust book every rustup toolchain ships): where the time goes, against the limit.

One run, side by side on the same machine:

- **ingest**: read + extract the HTML, deduplicate, tokenise and chunk, compare with what is stored, embed, write
  Chroma (the ``ingest`` command's work, timed per step), into a fresh collection with the package defaults;
- **embedder alone**: the same final chunk texts embedded by the same model with nothing else (the limit);
- **re-ingest**: the same folder again (nothing changed: nothing to embed);
- **quality**: realistic programming questions (``data/rust_book_questions.json``, each with the chapter page
  that answers it): is that page in the top 5 documents of retrieval alone?
- **search latency**: one more question on the warm store (what ``search --interactive`` pays per question).

- **int8** (``--also-int8``): the same book ingested once more with int8 embeddings (time, top-5 quality).

    python benchmarks/bench_ingest.py [--book DIR] [--chunk-size N] [--context-size N] [--also-int8]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from zerank_integrations.retrieval import ChromaStore, ChunkingPolicy, connect, documents_in_order, read_documents
from zerank_integrations.retrieval.dedup import DedupReport

QUESTIONS = Path(__file__).resolve().parent / "data" / "rust_book_questions.json"
CHROME = ("Keyboard shortcuts", "to navigate between chapters", "Search this book", "Auto Light Rust Coal Navy Ayu")


def default_book() -> Path | None:
    found = sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/book")))
    return Path(found[0]) if found else None


def top5(store: ChromaStore, questions: list[dict]) -> tuple[float, list[dict]]:
    hits = store.search_many([q["q"] for q in questions], 30)
    misses = []
    found = 0
    for question, row in zip(questions, hits, strict=True):
        docs = [d for d, _ in documents_in_order((h.doc_id, h.score) for h in row)]
        rank = next((i + 1 for i, d in enumerate(docs) if d in question["a"]), None)
        if rank is not None and rank <= 5:
            found += 1
        else:
            misses.append({"q": question["q"], "rank": rank, "top": docs[:5]})
    return found / len(questions), misses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--book", type=Path, default=default_book())
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--context-size", type=int, default=None)
    parser.add_argument("--keep-duplicates", action="store_true")
    parser.add_argument("--include", action="append", default=[], help="only these files (ingest --include)")
    parser.add_argument(
        "--also-int8",
        action="store_true",
        help="ingest once more with int8 embeddings (ingest --embedding-quantization int8): time and top-5 quality",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.book is None:
        raise SystemExit("no Rust book under ~/.rustup/toolchains/*/share/doc/rust/html; pass --book DIR")
    policy = ChunkingPolicy(size=args.chunk_size)
    if args.context_size is not None:
        policy = ChunkingPolicy(size=args.chunk_size, context=args.context_size)
    questions = json.loads(QUESTIONS.read_text())

    with tempfile.TemporaryDirectory(prefix="zerank-bench-ingest-") as tmp:
        store = ChromaStore.open("book", client=connect(path=tmp), create=True)
        store.embedder.encode(["load the model before the clocks start"])
        t0 = time.perf_counter()
        documents, skipped = read_documents(args.book, include=args.include)
        read_s = time.perf_counter() - t0
        dedupe = None if args.keep_duplicates else DedupReport()
        t0 = time.perf_counter()
        report = store.upsert(documents, chunking=policy, dedupe=dedupe)
        upsert_s = time.perf_counter() - t0
        ingest_s = read_s + upsert_s

        stored = store.collection.get(include=["documents", "metadatas"])
        texts = stored["documents"]
        embedded = [  # what ingest embedded: a later chunk of a titled page after its title
            f"{meta['title']}\n{text}" if meta.get("embedded_after_title") else text
            for text, meta in zip(texts, stored["metadatas"], strict=True)
        ]
        # ingest once more into a fresh collection after the embedder-alone run: on a shared machine the load
        # drifts, so the embedder alone is compared with the mean of an ingest before and one after it
        chrome = sum(any(c in t for c in CHROME) for t in texts)
        normalised = [" ".join(t.lower().split()) for t in texts]
        twice = len(normalised) - len(set(normalised))
        indented = sum(any(line.startswith("    ") for line in t.splitlines()) for t in texts)
        t0 = time.perf_counter()
        store.embedder.encode(embedded)
        alone_s = time.perf_counter() - t0
        second = ChromaStore.open("book-again", client=store.client, create=True)
        t0 = time.perf_counter()
        second_docs, _ = read_documents(args.book, include=args.include)
        second.upsert(second_docs, chunking=policy, dedupe=None if args.keep_duplicates else DedupReport())
        ingest_after_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        again_docs, _ = read_documents(args.book, include=args.include)
        again = store.upsert(again_docs, chunking=policy, dedupe=None if args.keep_duplicates else DedupReport())
        reingest_s = time.perf_counter() - t0

        quality, misses = top5(store, questions)
        int8_row: dict[str, object] = {}
        if args.also_int8:
            int8 = ChromaStore.open("book-int8", client=store.client, create=True, embedding_quantization="int8")
            int8.embedder.encode(["prepare the int8 model before the clock starts"])
            t0 = time.perf_counter()
            int8_docs, _ = read_documents(args.book, include=args.include)
            int8.upsert(int8_docs, chunking=policy, dedupe=None if args.keep_duplicates else DedupReport())
            int8_s = time.perf_counter() - t0
            int8_quality, int8_misses = top5(int8, questions)
            int8_row = {
                "ingest_int8_s": round(int8_s, 1),
                "int8_speedup_over_fp32_ingest": round((ingest_s + ingest_after_s) / 2 / int8_s, 2),
                "top5_int8": round(int8_quality, 3),
                "misses_int8": int8_misses,
            }
        latencies = []
        for question in questions[:10]:
            t0 = time.perf_counter()
            store.search(question["q"], 50)
            latencies.append(time.perf_counter() - t0)

    fitted = policy.fit(store.embedder.max_tokens)
    row = {
        "book": str(args.book),
        "chunk_size": fitted.size,
        "context_size": fitted.context,
        "dedupe": not args.keep_duplicates,
        "files_read": len(documents),
        "skipped": skipped.describe(),
        "documents_stored": report.stored_documents,
        "chunks_stored": report.stored_chunks,
        "dedup": dedupe.describe() if dedupe else "",
        "dropped_documents": sorted(dedupe.documents) if dedupe else [],
        "chunks_with_site_chrome": chrome,
        "chunk_texts_stored_twice": twice,
        "chunks_with_indented_lines": indented,
        "read_extract_s": round(read_s, 1),
        "steps_s": {k: round(v, 1) for k, v in report.timings.items()},
        "ingest_s": round(ingest_s, 1),
        "ingest_again_s": round(ingest_after_s, 1),
        "embed_alone_s": round(alone_s, 1),
        "ingest_over_embed_alone": round((ingest_s + ingest_after_s) / 2 / alone_s, 2),
        "outside_embedder_s": round(ingest_s - report.timings.get("embed", 0.0), 1),
        "chunks_per_s": round(report.stored_chunks / ingest_s, 1),
        "reingest_s": round(reingest_s, 1),
        "reingest_unchanged": again.unchanged,
        "top5": round(quality, 3),
        "questions": len(questions),
        "misses": misses,
        "search_ms_median": round(1000 * statistics.median(latencies), 1),
        **int8_row,
    }
    print(json.dumps(row, indent=2))
    machine = platform.processor() or platform.machine()
    print(f"\nmachine: {machine}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
