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
        description="Upsert documents by id, split into token-aware chunks when they are long: re-running on "
        "unchanged documents writes nothing. Reads .txt, .md, .html/.htm (text without markup) and .pdf (its text "
        "layer; needs pip install 'zerank-integrations[pdf]'); other files in a folder are skipped and listed.",
    )
    parser.add_argument(
        "path", type=Path, help="BEIR folder, corpus .jsonl file, a .txt/.md/.html/.pdf file, or a folder of them"
    )
    add_chroma_arguments(parser, collection_default=DEFAULT_COLLECTION)
    add_chunking_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zerank_integrations.retrieval import read_documents

    support.check_collection_name(args.collection)
    policy = support.chunking(args)
    documents, skipped = read_documents(args.path)
    store = support.open_store(args, args.collection, create=True)
    report = support.ingest(store, documents, args)
    split = report.chunks - report.documents
    chunks = f" as {report.chunks:,} chunks (size {policy.size}, overlap {policy.overlap})" if split else ""
    removed = f", {report.removed:,} stale chunks removed" if report.removed else ""
    print(
        f"ingested {report.documents:,} documents{chunks} from {args.path} into collection {store.name!r} "
        f"at {support.where(args)}: {report.added:,} added, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged{removed}; "
        f"{report.total:,} in the collection (embedding model: {store.embedder.model_name})"
    )
    if skipped.count:
        print(skipped.describe())
    return 0
