"""Framework-free helpers the two adapter examples share: find the MED collection, load a slice, print.

Kept out of the example scripts so each script shows only its framework's wiring. Reading the BEIR files
(plain or ``.gz``) is the package's own ``zerank_integrations.retrieval`` code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerank_integrations.retrieval import Document, load_documents, read_queries_jsonl


def _packaged_med() -> Path:
    import zerank_integrations

    return Path(zerank_integrations.__file__).resolve().parent / "data" / "med"


def _has(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_dataset(data: str | None) -> Path:
    """``--data`` if given, else the MED copy shipped in the package (nothing outside the install is needed)."""
    candidates = [Path(data).expanduser()] if data else [_packaged_med()]
    for folder in candidates:
        if _has(folder, "corpus.jsonl"):
            return folder
    tried = ", ".join(str(folder) for folder in candidates)
    raise SystemExit(f"no corpus.jsonl[.gz] (BEIR layout) found in: {tried}; pass --data FOLDER")


def default_query(folder: Path) -> str:
    """The collection's first query, so the demo asks something its corpus can answer."""
    queries = _has(folder, "queries.jsonl")
    if queries is None:
        raise SystemExit(f"no queries.jsonl[.gz] in {folder}; pass --query")
    return next(iter(read_queries_jsonl(queries).values()))


def load_passages(folder: Path, limit: int) -> list[Document]:
    """The first ``limit`` documents; ``Document.content`` (title + newline + text) is what gets indexed."""
    if limit < 1:
        raise SystemExit(f"--limit must be >= 1, got {limit}")
    return load_documents(folder)[:limit]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zerank model id or local checkpoint folder")
    parser.add_argument("--query", help="question to ask (default: the collection's first query)")
    parser.add_argument("--data", help="BEIR-layout folder (default: the MED collection shipped in the package)")
    parser.add_argument("--limit", type=int, default=300, help="how many corpus documents to index")
    parser.add_argument("--k", type=int, default=50, help="candidates the vector store returns")
    parser.add_argument("--top-n", type=int, default=5, help="documents kept after reranking")
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=None, help="token budget for the kept documents (default: none)"
    )
    parser.add_argument("--device", help="torch device for the reranker (default: best available)")
    parser.add_argument("--llm", default="gpt-4o", help="LLM whose tokenizer and price the savings use")


def reranker_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ZerankRerank`` settings the command line chose (the same for both frameworks)."""
    return {
        "model": args.model,
        "top_n": args.top_n,
        "max_prompt_tokens": args.max_prompt_tokens,
        "device": args.device,
    }


def warn_if_random_weights(scorer: Any) -> None:
    """Say so when the reranker is a random-weight test checkpoint: its ranking is meaningless."""
    from zerank_integrations.evaluation import is_random_weights_model, random_weights_note

    if is_random_weights_model(scorer):
        print(random_weights_note(scorer.model_name))


def print_ranked(rows: Sequence[tuple[str, float, str]]) -> None:
    """One line per kept document: rank, id, reranker probability, start of the text."""
    for rank, (doc_id, score, text) in enumerate(rows, start=1):
        snippet = " ".join(text.split())[:90]
        print(f"{rank:>2}. [{doc_id}] p={score:.4f}  {snippet}")


def print_savings(summary: dict[str, Any]) -> None:
    print(
        f"tokens: {summary['tokens_in']} retrieved -> {summary['tokens_kept']} sent to the LLM "
        f"({summary['tokens_saved']} saved, {summary['percent_saved']:.1f}%) over {summary['calls']} call(s), "
        f"counted for {summary['llm']} ({summary['encoding']})"
    )
    cost = summary.get("cost_saved_usd")
    if cost is not None:
        print(f"input cost saved: ${cost:.6f}")
