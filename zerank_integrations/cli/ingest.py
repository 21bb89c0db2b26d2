"""``zerank-integrations ingest PATH``: add a BEIR folder, or files (.txt/.md/.html/.pdf) or a folder of them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zerank_integrations.cli import support
from zerank_integrations.cli.options import add_chroma_arguments, add_chunking_arguments

DEFAULT_COLLECTION = "zerank-docs"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="add a BEIR folder (corpus.jsonl), a .txt/.md/.html/.pdf file or a folder of them to a collection",
        description="Upsert documents by id, split into chunks that fit the embedding model, each handing its "
        "enclosing sections to the reranker and the prompt: re-running on unchanged documents writes nothing. "
        "Reads .txt, .md, .html/.htm (the page's main content, headings and code kept; redirect stubs skipped) and "
        ".pdf (its text layer; needs pip install 'zerank-integrations[pdf]'); other files in a folder are skipped "
        "and listed. Pages made of other pages, repeated boilerplate and repeated passages are stored once.",
    )
    parser.add_argument(
        "path", type=Path, help="BEIR folder, corpus .jsonl file, a .txt/.md/.html/.pdf file, or a folder of them"
    )
    files = parser.add_argument_group("files and duplicates")
    files.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out files matching GLOB (repeatable); without '/' it matches the file name (print.html, "
        "*.pdf), with '/' the path relative to PATH, '*' crossing folders (book/first-edition/*)",
    )
    files.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="read only files matching GLOB (repeatable; same rules as --exclude, which wins)",
    )
    files.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="store pages made of other pages, repeated boilerplate and repeated passages too (default: each "
        "passage once; the summary says what was dropped and why). BEIR corpora are never deduplicated",
    )
    add_chroma_arguments(parser, collection_default=DEFAULT_COLLECTION)
    add_chunking_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zerank_integrations.retrieval import read_documents
    from zerank_integrations.retrieval.corpus import is_beir_source
    from zerank_integrations.retrieval.dedup import DedupReport

    support.check_collection_name(args.collection)
    policy = support.chunking(args)
    documents, skipped = read_documents(args.path, include=args.include, exclude=args.exclude)
    store = support.open_store(args, args.collection, create=True)
    dedupe = None if args.keep_duplicates or is_beir_source(args.path) else DedupReport()
    report = support.ingest(store, documents, args, dedupe=dedupe)
    fitted = policy.fit(store.embedder.max_tokens)
    split = report.chunks - report.documents
    context = f", context up to {fitted.context}" if fitted.context else ""
    chunks = (
        f" as {report.stored_chunks:,} chunks (size {fitted.size}, overlap {fitted.overlap}{context} tokens)"
        if split
        else ""
    )
    removed = f", {report.removed:,} stale chunks removed" if report.removed else ""
    stored = (
        f"ingested {report.stored_documents:,} of {report.documents:,} documents"
        if report.stored_documents != report.documents
        else f"ingested {report.documents:,} documents"
    )
    print(
        f"{stored}{chunks} from {args.path} into collection {store.name!r} "
        f"at {support.where(args)}: {report.added:,} added, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged{removed}; "
        f"{report.total:,} in the collection (embedding model: {store.embedder.model_name})"
    )
    if dedupe is not None and dedupe.describe():
        print(dedupe.describe())
    if skipped.count:
        print(skipped.describe())
    return 0
