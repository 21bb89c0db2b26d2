"""``zerank-integrations``: put documents in Chroma, ask, see what reranking changes in quality and tokens.

Subcommands: ``ingest``, ``search``, ``eval``, ``demo``, ``serve``, ``make-test-model``. Heavy modules
(chromadb, sentence-transformers, torch, FastAPI) are imported inside the subcommand that needs them, so
``--help`` is instant and ``serve`` works without the Chroma extra. Problems a user can fix (missing folder,
malformed jsonl line, unknown collection, unreachable server, model not found) print one line to stderr and
exit with status 1; usage errors exit with 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerank_integrations import __version__
from zerank_integrations.base import DEFAULT_MODEL

if TYPE_CHECKING:
    from zerank_integrations.accounting import TokenLedger
    from zerank_integrations.evaluation import EvalResult
    from zerank_integrations.retrieval import BeirCollection, ChromaStore
    from zerank_integrations.scoring import ZerankScorer

PROG = "zerank-integrations"
DEFAULT_LLM = "gpt-4o"
DEMO_COLLECTION = "zerank-demo-med"
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"


class CliError(Exception):
    """A problem the user can fix: printed as ``zerank-integrations: error: <message>``, no traceback."""


# -- argument parsing ----------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_chroma_arguments(parser: argparse.ArgumentParser, *, collection_default: str | None) -> None:
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
        help="collection name" + (f" (default: {collection_default})" if collection_default else ""),
    )
    group.add_argument(
        "--embedding-model",
        default=None,
        help="sentence-transformers model name or local path (default: the collection's recorded model; "
        "all-MiniLM-L6-v2, bundled offline, for new collections)",
    )


SCORER_OPTIONS = ("revision", "device", "dtype", "max_length", "batch_tokens", "local_files_only")


def add_scorer_arguments(group: argparse._ArgumentGroup) -> None:
    """The reranker options of every subcommand that loads a model (search, eval, demo and serve)."""
    group.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"reranker: hub id or local checkpoint folder (default: {DEFAULT_MODEL})"
    )
    group.add_argument("--revision", default=None, help="model revision (branch, tag or commit) on the hub")
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    group.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: per device)")
    group.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        help="max tokens per pair (default: the family's); longer are cut",
    )
    group.add_argument("--batch-tokens", type=_positive_int, default=None, help="token budget per forward pass")
    group.add_argument("--local-files-only", action="store_true", help="never reach the Hugging Face Hub")


def scorer_options(args: argparse.Namespace) -> dict[str, Any]:
    """``ZerankScorer`` keyword arguments from options added by :func:`add_scorer_arguments`."""
    return {name: getattr(args, name) for name in SCORER_OPTIONS}


def _add_rerank_arguments(parser: argparse.ArgumentParser, *, with_depth: bool = True) -> None:
    group = parser.add_argument_group("reranking")
    add_scorer_arguments(group)
    if with_depth:
        group.add_argument(
            "--top-k", type=_positive_int, default=50, help="documents retrieved and reranked (default: 50)"
        )
        group.add_argument("--top-n", type=_positive_int, default=5, help="documents kept for the prompt (default: 5)")
    group.add_argument(
        "--llm",
        default=DEFAULT_LLM,
        help=f"LLM whose tokenizer and input price count the savings (default: {DEFAULT_LLM})",
    )
    group.add_argument(
        "--encoding",
        default=None,
        help="tiktoken encoding for counting, needed for LLMs tiktoken does not know (Claude, Gemini: "
        "an approximation), e.g. o200k_base",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (``serve`` options are added lazily, when ``serve`` runs)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Retrieve with Chroma, rerank with zerank-2, and count the prompt tokens saved.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingest = sub.add_parser(
        "ingest",
        help="add a BEIR folder (corpus.jsonl) or a folder of .txt/.md files to a collection",
        description="Upsert documents by id: re-running on unchanged documents writes nothing.",
    )
    ingest.add_argument("path", type=Path, help="BEIR folder, corpus .jsonl file, or folder of .txt/.md files")
    _add_chroma_arguments(ingest, collection_default="zerank-docs")
    ingest.add_argument("--batch-size", type=_positive_int, default=256, help="documents per upsert")
    ingest.set_defaults(handler=_cmd_ingest)

    search = sub.add_parser(
        "search",
        help="retrieved top-k vs. reranked top-n for one question, with tokens saved",
    )
    search.add_argument("question", help="the question to search for")
    _add_chroma_arguments(search, collection_default="zerank-docs")
    _add_rerank_arguments(search)
    search.add_argument("--no-rerank", action="store_true", help="retrieval only (no reranker is loaded)")
    search.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    search.set_defaults(handler=_cmd_search)

    evaluate = sub.add_parser(
        "eval",
        help="retrieval alone vs. retrieval + rerank on a BEIR collection: metrics, tokens, report files",
        description="Writes OUT/eval.json, OUT/eval.md and OUT/eval.png. Rerank metrics rank the whole "
        "reranked top-k; --top-n decides what is kept for the prompt (and so the tokens saved); Recall@100 "
        "uses a top-100 retrieval, with retrieval ranks k+1..100 appended after the reranked top-k.",
    )
    evaluate.add_argument(
        "--beir", type=Path, required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels.tsv"
    )
    evaluate.add_argument("--out", type=Path, required=True, help="folder for eval.json, eval.md, eval.png")
    _add_chroma_arguments(evaluate, collection_default=None)
    _add_rerank_arguments(evaluate)
    evaluate.add_argument("--max-queries", type=_positive_int, default=None, help="evaluate the first N judged queries")
    evaluate.set_defaults(handler=_cmd_eval)

    demo = sub.add_parser(
        "demo",
        help="the whole job on the bundled MED collection (1,033 medical abstracts, 30 queries)",
        description="Ingests the MED test collection shipped with the package, runs its 30 judged queries, "
        "reranks, and prints the before/after table and the tokens saved.",
    )
    _add_chroma_arguments(demo, collection_default=DEMO_COLLECTION)
    _add_rerank_arguments(demo)
    demo.add_argument("--max-queries", type=_positive_int, default=None, help="only the first N queries")
    demo.add_argument("--out", type=Path, default=None, help="also write eval.json, eval.md, eval.png here")
    demo.set_defaults(handler=_cmd_demo)

    # Options are added by zerank_integrations.serving.cli when `serve` runs (FastAPI is imported only then).
    serve = sub.add_parser(
        "serve",
        help="serve POST /v1/rerank over HTTP (needs the 'server' extra); see `serve --help`",
        add_help=False,
    )
    serve.set_defaults(handler=None)

    make = sub.add_parser(
        "make-test-model",
        help="write a tiny random-weight zerank-shaped checkpoint (scores are MEANINGLESS; offline tryouts)",
        description="Writes a randomly initialised Qwen3ForCausalLM with the real Qwen3 tokenizer. It runs "
        "through exactly the same code as zerank-2, so the whole pipeline can be tried offline, but its "
        "scores are random: never judge quality with it.",
    )
    make.add_argument("dir", type=Path, help="output folder")
    make.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with the Qwen3 tokenizer files (default: $ZERANK_QWEN3_TOKENIZER or shared/tokenizers/qwen3)",
    )
    make.set_defaults(handler=_cmd_make_test_model)
    return parser


# -- entry point ---------------------------------------------------------------------------------------


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story; the model-loading one only if scoring was imported."""
    from zerank_integrations.retrieval.errors import RetrievalError

    types: list[type[BaseException]] = [CliError, RetrievalError]
    loading = sys.modules.get("zerank_integrations.scoring.loading")
    if loading is not None:
        types.append(loading.ModelLoadError)
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a user-fixable error, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(list(argv) if argv is not None else None)
        if args.command != "serve" and extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return _exit_code(exc)
    try:
        if args.command == "serve":
            return _cmd_serve(extra)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as shell tools do
        if not _stdout_pipe_closed():
            raise
        _silence_stdout()
        return 1
    except Exception as exc:
        if isinstance(exc, _user_error_types()):
            message = " ".join(str(exc).split())
            print(f"{PROG}: error: {message}", file=sys.stderr)
            return 1
        raise


def _stdout_pipe_closed() -> bool:
    """Whether stdout is the broken pipe (its reader is gone), not some other connection of ours."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real stdout: it is the likeliest
        return True


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


# -- shared helpers ------------------------------------------------------------------------------------


def _progress(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr, hidden when stderr is not a terminal (logs, pipes, tests)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr, leave=False)


def _open_store(args: argparse.Namespace, name: str, *, create: bool) -> ChromaStore:
    from zerank_integrations.retrieval import ChromaStore

    return ChromaStore.open(
        name,
        path=args.chroma_path,
        url=args.chroma_url,
        embedding_model=args.embedding_model,
        create=create,
    )


def _where(args: argparse.Namespace) -> str:
    from zerank_integrations.retrieval import CHROMA_URL_ENV, default_chroma_path

    if args.chroma_url:
        return args.chroma_url
    if args.chroma_path is None and os.environ.get(CHROMA_URL_ENV):
        return os.environ[CHROMA_URL_ENV]
    return str(args.chroma_path or default_chroma_path())


def _ingest(store: ChromaStore, documents: Sequence[Any], batch_size: int = 256) -> Any:
    with _progress(len(documents), f"ingest {store.name}", "doc") as bar:
        return store.upsert(documents, batch_size=batch_size, progress=bar.update)


@contextlib.contextmanager
def _progress_bars_only_on_terminal() -> Iterator[None]:
    """transformers draws its weight-loading bar even into logs and pipes; keep it for terminals only."""
    if sys.stderr.isatty():
        yield
        return
    from zerank_integrations.retrieval.embeddings import quiet_transformers_progress_bars

    with quiet_transformers_progress_bars():
        yield


def _load_scorer(args: argparse.Namespace) -> ZerankScorer:
    """Load the reranker, turning 'model not found' into advice: a local path or a test model."""
    from zerank_integrations.scoring import ModelLoadError, ZerankScorer

    model = str(Path(args.model).expanduser()) if Path(args.model).expanduser().exists() else args.model
    try:
        with _progress_bars_only_on_terminal():
            return ZerankScorer(model, **scorer_options(args))
    except ModelLoadError as exc:
        if Path(model).exists():
            raise
        raise CliError(
            f"{exc}. Pass a local checkpoint folder with --model /path/to/zerank-2; to try the pipeline "
            f"offline, `{PROG} make-test-model DIR` writes a tiny random-weight model (meaningless scores)"
        ) from None
    except (ValueError, TypeError) as exc:  # bad --device / --dtype / --max-length
        raise CliError(f"cannot set up reranker {model!r}: {exc}") from None


def _make_ledger(args: argparse.Namespace) -> TokenLedger:
    from zerank_integrations.accounting import TokenLedger

    try:
        return TokenLedger(llm=args.llm, encoding=args.encoding)
    except (ValueError, KeyError) as exc:
        hint = "" if args.encoding else " (for such LLMs pass --encoding, e.g. --encoding o200k_base)"
        raise CliError(f"cannot count tokens for --llm {args.llm!r}: {exc}{hint}") from None


def _random_weights_note(model: str) -> str | None:
    if (Path(model).expanduser() / RANDOM_WEIGHTS_MARKER).is_file():
        return (
            f"note: {model} is a random-weight test model (make-test-model): its rerank scores are "
            "meaningless; the numbers below only show that the pipeline runs"
        )
    return None


def _check_top(args: argparse.Namespace) -> None:
    if args.top_n > args.top_k:
        raise CliError(f"--top-n ({args.top_n}) cannot exceed --top-k ({args.top_k})")


def _format_money(value: Any) -> str:
    if value is None:
        return "n/a (no price known for this LLM)"
    return f"${float(value):.4f}" if abs(float(value)) >= 0.01 else f"${float(value):.6f}"


# -- ingest --------------------------------------------------------------------------------------------


def _cmd_ingest(args: argparse.Namespace) -> int:
    from zerank_integrations.retrieval import load_documents

    documents = load_documents(args.path)
    store = _open_store(args, args.collection, create=True)
    report = _ingest(store, documents, args.batch_size)
    print(
        f"ingested {len(documents):,} documents from {args.path} into collection {store.name!r} "
        f"at {_where(args)}: {report.added:,} added, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged; "
        f"{report.total:,} in the collection (embedding model: {store.embedder.model_name})"
    )
    return 0


# -- search --------------------------------------------------------------------------------------------


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return textwrap.shorten(flat, width=max(width, 10), placeholder="…") if flat else "(empty)"


def _cmd_search(args: argparse.Namespace) -> int:
    import json

    from zerank_integrations.base import validate_query

    try:
        question = validate_query(args.question)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None
    _check_top(args)
    store = _open_store(args, args.collection, create=False)
    if store.count() == 0:
        raise CliError(f"collection {store.name!r} is empty; add documents with `{PROG} ingest PATH`")
    hits = store.search(question, args.top_k)
    texts = [h.content for h in hits]
    reranked: list[tuple[int, float]] = []
    savings: Any = None
    if not args.no_rerank:
        ledger = _make_ledger(args)
        scorer = _load_scorer(args)
        reranked = scorer.rank(question, texts, top_n=args.top_n)
        savings = ledger.record(question, texts, [texts[i] for i, _ in reranked])

    if args.json:
        payload: dict[str, Any] = {
            "query": question,
            "collection": store.name,
            "retrieved": [{"rank": h.rank, "id": h.id, "similarity": h.score, "text": h.content} for h in hits],
        }
        if not args.no_rerank:
            payload["reranked"] = [
                {
                    "rank": r,
                    "id": hits[i].id,
                    "score": s,
                    "retrieval_rank": hits[i].rank,
                    "text": hits[i].content,
                }
                for r, (i, s) in enumerate(reranked, start=1)
            ]
            payload["tokens"] = savings.to_dict()
            payload["tokens"]["llm"] = args.llm
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0

    width = shutil.get_terminal_size((120, 24)).columns
    print(f"query: {question}")
    print(f"collection {store.name!r}: {store.count():,} documents, embedding model {store.embedder.model_name}")
    if args.no_rerank:
        print(f"\nretrieved top-{min(args.top_n, len(hits))} of {len(hits)} (cosine similarity):")
        for h in hits[: args.top_n]:
            print(f"{h.rank:>3}  {h.score:6.3f}  {h.id}  {_shorten(h.content, width - 20 - len(h.id))}")
        return 0
    note = _random_weights_note(args.model)
    if note:
        print(note)
    rows = max(args.top_n, 1)
    col = max((width - 8) // 2, 30)
    print(f"\n{'#':>3}  {'retrieval (cosine)':<{col}}  reranked by {scorer.model_name}")
    for r in range(min(rows, len(hits))):
        left = f"{hits[r].score:6.3f}  {hits[r].id}"
        i, s = reranked[r]
        right = f"{s:6.3f}  {hits[i].id}  (was #{hits[i].rank})"
        print(f"{r + 1:>3}  {left:<{col}}  {right}".rstrip())
    print(f"\nkept for the prompt (top-{args.top_n} after reranking {len(hits)}):")
    for r, (i, _) in enumerate(reranked, start=1):
        print(f"{r:>3}. [{hits[i].id}] {_shorten(hits[i].content, width - 12 - len(hits[i].id))}")
    print(
        f"\ntokens ({args.llm}): {savings.tokens_in:,} for all {savings.candidates} candidates -> "
        f"{savings.tokens_kept:,} kept; saved {savings.tokens_saved:,} ({savings.percent_saved:.1f}%), "
        f"{_format_money(savings.cost_saved_usd)} per call"
    )
    return 0


# -- eval and demo -------------------------------------------------------------------------------------


def _collection_name(folder: Path) -> str:
    """A valid Chroma name derived from a BEIR folder: 3-512 chars of [a-zA-Z0-9._-], alphanumeric ends."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.expanduser().resolve().name).strip("._-") or "collection"
    return f"beir-{stem}"[:512]


def _run_eval(
    args: argparse.Namespace, collection: BeirCollection, collection_name: str, *, out: Path | None
) -> EvalResult:
    from zerank_integrations.evaluation import evaluate, metrics_table, tokens_table, write_report

    _check_top(args)
    if out is not None:  # before minutes of embedding and scoring, not after
        _check_writable_folder(out)
    store = _open_store(args, collection_name, create=True)
    _refuse_stray_documents(store, collection)
    _ingest(store, collection.corpus)
    total = store.count()
    if total != len(collection.corpus):
        raise CliError(
            f"collection {store.name!r} holds {total:,} documents but {collection.path} has "
            f"{len(collection.corpus):,}; evaluate into a fresh --collection so stray documents do not "
            "skew the metrics"
        )
    ledger = _make_ledger(args)
    scorer = _load_scorer(args)
    note = _random_weights_note(args.model)
    n_queries = len(collection.judged_query_ids())
    if args.max_queries is not None:
        n_queries = min(n_queries, args.max_queries)
    with (
        _progress(n_queries, "retrieve", "query") as bar_retrieve,
        _progress(n_queries, "rerank", "query") as bar_rerank,
    ):
        result = evaluate(
            store,
            collection,
            scorer,
            ledger,
            top_k=args.top_k,
            top_n=args.top_n,
            max_queries=args.max_queries,
            retrieve_progress=bar_retrieve.update,
            rerank_progress=bar_rerank.update,
        )
    print(
        f"{collection.name}: {len(result.queries)} queries, {total:,} documents; retrieval: Chroma top "
        f"{args.top_k} ({store.embedder.model_name}); rerank: {scorer.model_name}, keep top {args.top_n}"
    )
    if note:
        print(note)
    print()
    print(metrics_table(result))
    print()
    print(tokens_table(result.tokens, args.top_k, args.top_n))
    if out is not None:
        try:
            paths = write_report(result, out)
        except OSError as exc:
            raise CliError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
        print(f"\nwrote {paths['json']}, {paths['md']}, {paths['png']}")
    return result


def _check_writable_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CliError(f"cannot write the report to {out}: permission denied")


def _refuse_stray_documents(store: ChromaStore, collection: BeirCollection) -> None:
    """Refuse, before writing anything, a collection holding documents from elsewhere.

    Ingesting the evaluation corpus into, say, the user's own collection would both skew the metrics and
    leave a thousand stray documents in their data.
    """
    if store.count() == 0:
        return
    corpus_ids = {doc.id for doc in collection.corpus}
    stray = [doc_id for doc_id in store.ids() if doc_id not in corpus_ids]
    if stray:
        raise CliError(
            f"collection {store.name!r} holds {len(stray):,} documents that are not in {collection.path} "
            f"(e.g. {stray[0]!r}); nothing was written. Evaluate into a fresh --collection so stray documents "
            "do not skew the metrics"
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    from zerank_integrations.retrieval import load_beir

    collection = load_beir(args.beir)
    _run_eval(args, collection, args.collection or _collection_name(args.beir), out=args.out)
    return 0


@contextlib.contextmanager
def packaged_med() -> Iterator[Path]:
    """The MED collection shipped inside the package (gzip BEIR files), as a real folder."""
    from importlib.resources import as_file, files

    resource = files("zerank_integrations").joinpath("data", "med")
    with as_file(resource) as folder:
        path = Path(folder)
        if not (path / "corpus.jsonl.gz").is_file():
            raise CliError(f"the bundled MED collection is missing from {path}; reinstall zerank-integrations")
        yield path


def _cmd_demo(args: argparse.Namespace) -> int:
    from zerank_integrations.retrieval import load_beir

    with packaged_med() as folder:
        collection = load_beir(folder, name="MED (Medline abstracts)")
    print(
        f"demo: {len(collection.corpus):,} MED abstracts, "
        f"{len(collection.judged_query_ids())} judged queries; "
        f"Chroma at {_where(args)} (collection {args.collection!r})"
    )
    _run_eval(args, collection, args.collection, out=args.out)
    return 0


# -- serve ---------------------------------------------------------------------------------------------


def _cmd_serve(extra: list[str]) -> int:
    """Hand over to ``zerank_integrations.serving.cli``, imported only now (it needs FastAPI and uvicorn)."""
    try:
        from zerank_integrations.serving import cli as serving_cli
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing.startswith("zerank_integrations"):
            raise CliError(f"`serve` is not available in this installation ({missing} is missing)") from None
        raise CliError(
            f"`serve` needs the server extra ({missing} is not installed): pip install 'zerank-integrations[server]'"
        ) from None
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        description="Serve POST /v1/rerank (Cohere/Jina-compatible) and GET /health over one zerank model.",
    )
    serving_cli.add_serve_arguments(parser)
    try:
        serve_args = parser.parse_args(extra)
    except SystemExit as exc:
        return _exit_code(exc)
    return int(serving_cli.run_serve(serve_args) or 0)


# -- make-test-model -----------------------------------------------------------------------------------


def _cmd_make_test_model(args: argparse.Namespace) -> int:
    from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

    try:
        tokenizer = args.tokenizer if args.tokenizer is not None else find_qwen3_tokenizer()
    except FileNotFoundError as exc:
        raise CliError(f"{exc}; or pass --tokenizer PATH") from None
    if not (Path(tokenizer) / "vocab.json").is_file():
        raise CliError(f"--tokenizer {tokenizer} does not hold a Qwen3 tokenizer (no vocab.json)")
    out: Path = args.dir.expanduser()
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} exists and is not a folder")
    try:
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            build_test_checkpoint(tmp, tokenizer)  # writes RANDOM_WEIGHTS.txt itself
            shutil.copytree(tmp, out, dirs_exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot write the test model to {out}: {exc.strerror or exc}") from None
    print(
        f"wrote a random-weight test model to {out}: scores are MEANINGLESS; use it only to try the pipeline "
        f"offline, e.g. `{PROG} demo --model {out}`"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
