"""Options shared by several subcommands: where Chroma is, how documents are chunked, how results are reranked.

The reranker's own options come from the one scorer-option table (:mod:`zerank_integrations.options`), which
``serve`` uses too. Parsing helpers only: nothing heavy is imported here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zerank_integrations.options import add_scorer_arguments, non_negative_int, positive_int

__all__ = [
    "DEFAULT_LLM",
    "add_chroma_arguments",
    "add_chunking_arguments",
    "add_rerank_arguments",
    "positive_int",
    "probability",
]

DEFAULT_LLM = "gpt-4o"


def probability(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_chroma_arguments(
    parser: argparse.ArgumentParser, *, collection_default: str | None, collection_help: str | None = None
) -> None:
    """``collection_help`` describes a default that is not a fixed name (``eval``'s is derived from --beir)."""
    group = parser.add_argument_group("Chroma")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--chroma-path",
        type=Path,
        default=None,
        help="folder of the embedded Chroma database (default: $ZERANK_CHROMA_PATH, else "
        "~/.local/share/zerank-integrations/chroma on Linux)",
    )
    where.add_argument(
        "--chroma-url",
        default=None,
        help="use a Chroma server instead, e.g. http://localhost:8000 (default: $ZERANK_CHROMA_URL if set)",
    )
    group.add_argument(
        "--collection",
        default=collection_default,
        help="collection name: 3-512 letters, digits, '.', '_', '-'"
        + (f" (default: {collection_help or collection_default})" if collection_help or collection_default else ""),
    )
    group.add_argument(
        "--embedding-model",
        default=None,
        help="sentence-transformers model name or local path (default: the collection's recorded model; "
        "all-MiniLM-L6-v2, bundled offline, for new collections)",
    )
    group.add_argument(
        "--embedding-quantization",
        choices=("int8",),
        default=None,
        help="int8: embed on the CPU int8 path (OpenVINO; embedding about 4x faster on CPU, vectors within cosine "
        "0.99 of float32; needs the [int8] extra). Default: float32, exact",
    )


def add_chunking_arguments(parser: argparse.ArgumentParser) -> None:
    from zerank_integrations.retrieval.chunking import DEFAULT_CONTEXT_SIZE

    group = parser.add_argument_group("chunking")
    group.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="longest chunk, in embedding-model tokens; longer documents are split (default: what the embedding "
        "model reads of a text, from the model: 254 for all-MiniLM-L6-v2)",
    )
    group.add_argument(
        "--context-size",
        type=non_negative_int,
        default=DEFAULT_CONTEXT_SIZE,
        help="small to big: a retrieved chunk hands the reranker and the prompt its enclosing sections, merged up "
        f"to this many embedding-model tokens (default: {DEFAULT_CONTEXT_SIZE}; 0: the chunk itself)",
    )
    group.add_argument(
        "--chunk-overlap",
        type=non_negative_int,
        default=None,
        help="tokens shared by consecutive chunks of a split document (default: an eighth of --chunk-size)",
    )
    group.add_argument("--batch-size", type=positive_int, default=256, help="documents per upsert (default: 256)")


def add_rerank_arguments(parser: argparse.ArgumentParser, *, with_depth: bool = True) -> None:
    """Reranker (scorer options), selection policy and token counting."""
    group = parser.add_argument_group("reranking")
    add_scorer_arguments(group)
    group.add_argument(
        "--instruction",
        default=None,
        help="task instruction sent with the query, for reranker families that take one",
    )
    selection = parser.add_argument_group("selection (applied in this order)")
    if with_depth:
        group.add_argument(
            "--top-k", type=positive_int, default=50, help="passages retrieved and reranked (default: 50)"
        )
    selection.add_argument(
        "--score-threshold",
        type=probability,
        default=None,
        help="drop passages whose rerank probability is below this",
    )
    selection.add_argument("--top-n", type=positive_int, default=5, help="passages kept for the prompt (default: 5)")
    selection.add_argument(
        "--max-prompt-tokens",
        type=positive_int,
        default=None,
        help="keep passages, best first, while the kept ones fit this many prompt tokens (counted like the "
        "savings: --llm's tokenizer, passages joined by a blank line); one that does not fit is skipped and a "
        "later, shorter one may still fit",
    )
    tokens = parser.add_argument_group("token accounting")
    tokens.add_argument(
        "--llm",
        default=DEFAULT_LLM,
        help=f"LLM whose tokenizer and input price count the savings (default: {DEFAULT_LLM})",
    )
    tokens.add_argument(
        "--encoding",
        default=None,
        help="tiktoken encoding for counting, needed for LLMs tiktoken does not know (Claude, Gemini: "
        "an approximation), e.g. o200k_base",
    )
