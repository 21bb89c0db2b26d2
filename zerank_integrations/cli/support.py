"""Helpers the subcommands share: user-facing errors, opening stores, loading the reranker and the ledger.

Heavy modules (chromadb, sentence-transformers, torch, tiktoken) are imported inside the helpers, so
``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerank_integrations.cli.progress import Progress
from zerank_integrations.options import scorer_options

if TYPE_CHECKING:
    from zerank_integrations.accounting import TokenLedger
    from zerank_integrations.retrieval import ChromaStore, ChunkingPolicy
    from zerank_integrations.selection import SelectionPolicy

PROG = "zerank-integrations"


class CliError(Exception):
    """A problem the user can fix: printed as ``zerank-integrations: error: <message>``, no traceback."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story; the model-loading one only if scoring was imported."""
    from zerank_integrations.retrieval.errors import RetrievalError

    types: list[type[BaseException]] = [CliError, RetrievalError]
    loading = sys.modules.get("zerank_integrations.scoring.loading")
    if loading is not None:
        types.append(loading.ModelLoadError)
    return tuple(types)


def check_collection_name(name: str) -> str:
    """Refuse a name Chroma would refuse, before any model is loaded or anything is read."""
    from zerank_integrations.retrieval.chroma import validate_collection_name

    return validate_collection_name(name)


def open_store(args: argparse.Namespace, name: str, *, create: bool) -> ChromaStore:
    from zerank_integrations.retrieval import ChromaStore

    return ChromaStore.open(
        name,
        path=args.chroma_path,
        url=args.chroma_url,
        embedding_model=args.embedding_model,
        create=create,
        embedding_quantization=getattr(args, "embedding_quantization", None),
    )


def where(args: argparse.Namespace) -> str:
    """The Chroma location a command uses, for messages."""
    from zerank_integrations.retrieval import CHROMA_URL_ENV, default_chroma_path

    if args.chroma_url:
        return str(args.chroma_url)
    if args.chroma_path is None and os.environ.get(CHROMA_URL_ENV):
        return os.environ[CHROMA_URL_ENV]
    return str(args.chroma_path or default_chroma_path())


def chunking(args: argparse.Namespace) -> ChunkingPolicy:
    from zerank_integrations.retrieval import ChunkingPolicy

    try:
        return ChunkingPolicy(size=args.chunk_size, overlap=args.chunk_overlap, context=args.context_size)
    except ValueError as exc:
        raise CliError(
            str(exc).replace("chunk size", "--chunk-size").replace("chunk overlap", "--chunk-overlap")
        ) from None


def ingest(store: ChromaStore, documents: list[Any], args: argparse.Namespace, dedupe: Any = None) -> Any:
    """Upsert with a progress bar counting chunks embedded, with rate and ETA (or progress lines off a terminal)."""
    with Progress(None, f"ingest {store.name}", "chunk") as bar:
        return store.upsert(
            documents,
            batch_size=args.batch_size,
            chunking=chunking(args),
            dedupe=dedupe,
            chunk_progress=bar.advance_to,
        )


@contextlib.contextmanager
def progress_bars_only_on_terminal() -> Iterator[None]:
    """transformers draws its weight-loading bar even into logs and pipes; keep it for terminals only."""
    if sys.stderr.isatty():
        yield
        return
    from zerank_integrations.scoring.quiet import quiet_loading

    with quiet_loading():
        yield


def load_scorer(args: argparse.Namespace) -> Any:
    """Load the reranker, turning 'model not found' into advice: a local path or a test model."""
    from zerank_integrations.scoring import ModelLoadError, ZerankScorer

    local = Path(args.model).expanduser()
    model = str(local) if local.exists() else args.model
    try:
        with progress_bars_only_on_terminal(), Progress(None, f"loading reranker {model}", "step"):
            return ZerankScorer(model, **scorer_options(args))
    except ModelLoadError as exc:
        if local.exists():
            raise
        # The library's advice names its own argument; here it is a flag, said once.
        message = str(exc).replace(
            "pass its local directory instead of the hub id", "pass that folder with --model /path/to/zerank-2"
        )
        if "--model" not in message:
            message += ". Pass a local checkpoint folder with --model /path/to/zerank-2"
        raise CliError(
            f"{message}; to try the pipeline offline, `{PROG} make-test-model DIR` writes a tiny random-weight model "
            "(meaningless scores)"
        ) from None
    except (ValueError, TypeError) as exc:  # bad --device / --dtype / --max-length
        raise CliError(f"cannot set up reranker {model!r}: {exc}") from None


def make_ledger(args: argparse.Namespace, *, prompt: Any = None) -> TokenLedger:
    """The ledger ``--llm``/``--encoding``/``--tokenizer`` ask for; ``prompt`` makes it count the whole input."""
    from zerank_integrations.accounting import TokenizerUnavailableError, TokenLedger

    try:
        return TokenLedger(
            llm=args.llm, encoding=args.encoding, tokenizer=getattr(args, "tokenizer", None), prompt=prompt
        )
    except TokenizerUnavailableError as exc:
        raise CliError(str(exc)) from None
    except (ValueError, KeyError) as exc:
        hint = "" if args.encoding else " (for such LLMs pass --encoding, e.g. --encoding o200k_base)"
        raise CliError(f"cannot count tokens for --llm {args.llm!r}: {exc}{hint}") from None


def selection_policy(args: argparse.Namespace) -> SelectionPolicy:
    from zerank_integrations.selection import SelectionPolicy

    top_k = getattr(args, "top_k", None)
    if top_k is not None and args.top_n > top_k:
        raise CliError(f"--top-n ({args.top_n}) cannot exceed --top-k ({top_k})")
    return SelectionPolicy(
        score_threshold=args.score_threshold, top_n=args.top_n, max_prompt_tokens=args.max_prompt_tokens
    )


def random_weights_note(scorer: Any) -> str | None:
    """The warning for a random-weight checkpoint, or ``None`` for a real one."""
    from zerank_integrations.evaluation import is_random_weights_model, random_weights_note

    return random_weights_note(scorer.model_name) if is_random_weights_model(scorer) else None


def check_writable_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliError(f"cannot write the report to {out}: permission denied")


def format_money(value: Any) -> str:
    if value is None:
        return "n/a (no price known for this LLM)"
    return f"${float(value):.4f}" if abs(float(value)) >= 0.01 else f"${float(value):.6f}"
