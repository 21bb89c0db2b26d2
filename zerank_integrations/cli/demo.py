"""``zerank-integrations demo``: the whole job on the MED collection shipped inside the package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zerank_integrations.cli import support
from zerank_integrations.cli.eval import add_eval_arguments, run_eval

DEMO_COLLECTION = "zerank-demo-med"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the whole job on the bundled MED collection (1,033 medical abstracts, 30 queries)",
        description="Ingests the MED test collection shipped with the package, runs its 30 judged queries, "
        "reranks, and prints the before/after table and the tokens saved.",
    )
    add_eval_arguments(parser, collection_default=DEMO_COLLECTION)
    parser.add_argument("--out", type=Path, default=None, help="also write eval.json, eval.md, eval.png here")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zerank_integrations.retrieval import load_beir, packaged_med

    support.check_collection_name(args.collection)
    with packaged_med() as folder:
        collection = load_beir(folder, name="MED (Medline abstracts)")
    print(
        f"demo: {len(collection.corpus):,} MED abstracts, "
        f"{len(collection.judged_query_ids())} judged queries; "
        f"Chroma at {support.where(args)} (collection {args.collection!r})"
    )
    run_eval(args, collection, args.collection, out=args.out)
    return 0
