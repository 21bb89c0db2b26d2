"""``zerank-integrations search QUESTION``: retrieved top-k vs. the reranked passages kept, with tokens saved."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from typing import Any

from zerank_integrations.cli import support
from zerank_integrations.cli.ingest import DEFAULT_COLLECTION
from zerank_integrations.cli.options import add_chroma_arguments, add_rerank_arguments


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "search",
        help="retrieved top-k vs. reranked top-n for one question, with tokens saved",
    )
    parser.add_argument(
        "question",
        nargs="?",
        default=None,
        help="the question to search for (leave out with --interactive)",
    )
    add_chroma_arguments(parser, collection_default=DEFAULT_COLLECTION)
    add_rerank_arguments(parser)
    parser.add_argument("--no-rerank", action="store_true", help="retrieval only (no reranker is loaded)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="load the collection, embedder and reranker once, then answer one question per line of standard "
        "input until end of input (a repeated search then skips the seconds of start-up)",
    )
    parser.set_defaults(handler=run)


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return textwrap.shorten(flat, width=max(width, 10), placeholder="…") if flat else "(empty)"


def _label(hit: Any) -> str:
    """A passage's id, with its document's character span when it is one chunk of a longer document (with
    small to big: the span of the context handed on)."""
    if hit.document_id and hit.document_id != hit.id and hit.span is not None:
        return f"{hit.id} [{hit.span[0]}:{hit.span[1]}]"
    return str(hit.id)


def run(args: argparse.Namespace) -> int:
    if args.interactive == (args.question is not None):
        raise support.CliError("give a question, or --interactive to read questions from standard input")
    if not args.interactive:
        _question(args, args.question)  # a bad question fails before anything loads
    support.check_collection_name(args.collection)
    policy = support.selection_policy(args)
    store = support.open_store(args, args.collection, create=False)
    if store.count() == 0:
        raise support.CliError(f"collection {store.name!r} is empty; add documents with `{support.PROG} ingest PATH`")
    scorer = ledger = note = None
    if not args.no_rerank:
        ledger = support.make_ledger(args)
        scorer = support.load_scorer(args)
        note = support.random_weights_note(scorer)
    if not args.interactive:
        return _answer(args, _question(args, args.question), store, scorer, ledger, note, policy)
    if sys.stdin.isatty():
        print("one question per line; end with Ctrl-D", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            _answer(args, _question(args, line.strip()), store, scorer, ledger, note, policy)
        except support.CliError as exc:
            print(f"{support.PROG} search: {exc}", file=sys.stderr)
        sys.stdout.flush()
    return 0


def _question(args: argparse.Namespace, text: str) -> str:
    from zerank_integrations.base import validate_query

    if args.no_rerank and not text.strip():  # no reranker is involved: do not blame one
        raise support.CliError("query is empty or whitespace-only; a search needs a question to retrieve for")
    try:
        return validate_query(text)
    except (TypeError, ValueError) as exc:
        raise support.CliError(str(exc)) from None


def _answer(
    args: argparse.Namespace, question: str, store: Any, scorer: Any, ledger: Any, note: Any, policy: Any
) -> int:
    from zerank_integrations.rerank import RerankStep
    from zerank_integrations.retrieval import documents_in_order

    result: Any = None
    hits = store.search(question, args.top_k)
    if not args.no_rerank:
        step = RerankStep(scorer, policy, ledger=ledger, instruction=args.instruction)
        result = step.run(question, [h.content for h in hits])

    if args.json:
        payload: dict[str, Any] = {
            "query": question,
            "collection": store.name,
            "retrieved": [
                {
                    "rank": h.rank,
                    "id": h.id,
                    "document": h.doc_id,
                    "span": h.span,
                    "similarity": h.score,
                    "text": h.content,
                    "matched": h.matched or h.content,
                    "matched_span": h.matched_span or h.span,
                }
                for h in hits
            ],
        }
        if result is not None:
            payload["reranker"] = {"model": scorer.model_name, "random_weights": note is not None}
            payload["selection"] = policy.to_dict()
            payload["reranked"] = [
                {
                    "rank": r,
                    "id": hits[i].id,
                    "document": hits[i].doc_id,
                    "span": hits[i].span,
                    "score": s,
                    "retrieval_rank": hits[i].rank,
                    "best_window": result.span(i),
                    "text": hits[i].content,
                }
                for r, (i, s) in enumerate(result.kept, start=1)
            ]
            payload["over_budget"] = [hits[i].id for i in result.over_budget]
            payload["documents"] = [
                {"document": doc, "score": s}
                for doc, s in documents_in_order((hits[i].doc_id, s) for i, s in result.ranking)
            ]
            payload["tokens"] = {**result.savings.to_dict(), "llm": args.llm}
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0

    width = shutil.get_terminal_size((120, 24)).columns
    print(f"query: {question}")
    print(f"collection {store.name!r}: {store.count():,} passages, embedding model {store.embedder.model_name}")
    if result is None:
        print(f"\nretrieved top-{min(args.top_n, len(hits))} of {len(hits)} (cosine similarity):")
        for h in hits[: args.top_n]:
            label = _label(h)
            print(f"{h.rank:>3}  {h.score:6.3f}  {label}  {_shorten(h.content, width - 20 - len(label))}")
        return 0
    if note:
        print(note)
    col = max((width - 8) // 2, 30)
    print(f"\n{'#':>3}  {'retrieval (cosine)':<{col}}  reranked by {scorer.model_name}")
    for r in range(min(max(args.top_n, 1), len(hits))):
        left = f"{hits[r].score:6.3f}  {_label(hits[r])}"
        i, s = result.ranking[r]
        right = f"{s:6.3f}  {_label(hits[i])}  (was #{hits[i].rank})"
        print(f"{r + 1:>3}  {left:<{col}}  {right}".rstrip())
    print(f"\nkept for the prompt ({policy.describe()}; {len(result.kept)} of {len(hits)} reranked):")
    for r, (i, _) in enumerate(result.kept, start=1):
        label = _label(hits[i])
        print(f"{r:>3}. [{label}] {_shorten(hits[i].content, width - 12 - len(label))}")
    if result.over_budget:
        print(
            f"skipped, over the {policy.max_prompt_tokens:,}-token budget: "
            + ", ".join(hits[i].id for i in result.over_budget)
        )
    savings = result.savings
    print(
        f"\ntokens ({args.llm}): {savings.tokens_in:,} for all {savings.candidates} candidates -> "
        f"{savings.tokens_kept:,} kept; saved {savings.tokens_saved:,} ({savings.percent_saved:.1f}%), "
        f"{support.format_money(savings.cost_saved_usd)} per call"
    )
    return 0
