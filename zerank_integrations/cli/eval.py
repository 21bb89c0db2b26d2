"""``zerank-integrations eval --beir DIR --out OUT``: retrieval alone vs. retrieval + rerank, with reports.

The evaluation itself (and its rules: collection naming, the stray-document guard) lives in
:mod:`zerank_integrations.evaluation`; this module parses options, loads the reranker before any ingest, and
prints and writes the results.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerank_integrations.cli import support
from zerank_integrations.cli.options import (
    DEFAULT_LLM,
    add_chroma_arguments,
    add_chunking_arguments,
    add_rerank_arguments,
    positive_int,
)
from zerank_integrations.cli.progress import Progress

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"  # as zerank_integrations.billing.openai_compatible (not imported for --help)

if TYPE_CHECKING:
    from zerank_integrations.evaluation import EvalResult
    from zerank_integrations.retrieval import BeirCollection


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="retrieval alone vs. retrieval + rerank on a BEIR collection: metrics, tokens, report files",
        description="Writes OUT/eval.json, OUT/eval.md and OUT/eval.png. Rerank metrics rank the whole "
        "reranked top-k; the selection options decide what is kept for the prompt (its NDCG@10, Recall@10 "
        "and the tokens saved); Recall@100 uses a top-100 retrieval, with the remaining retrieved documents "
        "appended after the reranked top-k.",
    )
    parser.add_argument("--beir", type=Path, required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels.tsv")
    parser.add_argument("--out", type=Path, required=True, help="folder for eval.json, eval.md, eval.png")
    add_eval_arguments(
        parser,
        collection_default=None,
        collection_help="beir-<name of the --beir folder>, or an "
        "existing collection holding exactly that corpus with the same embedding model",
    )
    add_engine_arguments(parser)
    parser.set_defaults(handler=run)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the rerank stage runs: here, or on Ray Data workers (the ``[ray]`` extra)."""
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="run the rerank stage in this process (local, default) or on Ray Data workers (ray: joins "
        "$RAY_ADDRESS when set, else starts a local Ray; one GPU per worker when the cluster has GPUs)",
    )
    group.add_argument(
        "--workers", type=positive_int, default=None, help="Ray Data workers, each with its own scorer (default: 1)"
    )


def add_eval_arguments(
    parser: argparse.ArgumentParser, *, collection_default: str | None, collection_help: str | None = None
) -> None:
    """What ``eval`` and ``demo`` share."""
    add_chroma_arguments(parser, collection_default=collection_default, collection_help=collection_help)
    add_chunking_arguments(parser)
    add_rerank_arguments(parser)
    parser.add_argument("--max-queries", type=positive_int, default=None, help="only the first N judged queries")
    add_llm_arguments(parser)


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """The LLM whose bill is checked: where it runs, its name, its key, and how its tokens are counted."""
    group = parser.add_argument_group(
        "LLM bill",
        "send each question's prompt (with the kept passages) to an OpenAI-compatible LLM and reconcile the input "
        "tokens it bills with the ledger's count",
    )
    group.add_argument(
        "--llm-url",
        default=None,
        help="OpenAI-compatible /v1 base URL: vLLM, Ollama (http://127.0.0.1:11434/v1), TGI, transformers serve, "
        "https://api.openai.com/v1",
    )
    group.add_argument(
        "--llm-model",
        default=None,
        help="the model name the server knows; also what counts the tokens unless --llm/--tokenizer/--encoding say "
        "otherwise (an OpenAI model: tiktoken; an open model's hub id, local folder or Ollama tag: its tokenizer)",
    )
    group.add_argument(
        "--llm-api-key-env",
        default=DEFAULT_API_KEY_ENV,
        metavar="VAR",
        help=f"environment variable holding the API key (default: {DEFAULT_API_KEY_ENV}; local servers need none)",
    )
    group.add_argument(
        "--llm-max-tokens",
        type=positive_int,
        default=1,
        help="answer tokens per request (default: 1: the input is billed)",
    )
    group.add_argument(
        "--llm-timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="per request, after which it is retried (twice) and then reported as timed out (default: 120)",
    )
    group.add_argument(
        "--llm-counterfactual",
        action="store_true",
        help="also send every question once with all top-k candidates, to bill the prompt without reranking",
    )
    group.add_argument(
        "--tokenizer",
        default=None,
        help="Hugging Face tokenizer that counts the tokens (hub id in the local cache, or a folder): exact for "
        "open models",
    )
    parser.set_defaults(llm=None)  # resolved in run_eval: --llm, else --llm-model with --llm-url, else the default


def run(args: argparse.Namespace) -> int:
    from zerank_integrations.evaluation import collection_name_for
    from zerank_integrations.retrieval import load_beir

    name = args.collection or collection_name_for(args.beir)
    support.check_collection_name(name)
    collection = load_beir(args.beir)
    # without --collection, an identical collection (e.g. the demo's MED) is reused, not embedded again
    run_eval(args, collection, name, out=args.out, reuse=args.collection is None)
    return 0


def run_eval(
    args: argparse.Namespace,
    collection: BeirCollection,
    collection_name: str,
    *,
    out: Path | None,
    reuse: bool = False,
) -> EvalResult:
    """Check everything cheap, load the reranker, then ingest, evaluate, print and write the report."""
    from zerank_integrations.accounting import TiktokenCounter
    from zerank_integrations.evaluation import evaluate, kept_table, metrics_table, prepare_collection, tokens_table

    policy = support.selection_policy(args)
    support.check_collection_name(collection_name)
    engine = _engine(args)  # a missing Ray fails here, before any model is loaded
    if out is not None:  # before minutes of embedding and scoring, not after
        support.check_writable_folder(out)
    chunking = support.chunking(args)
    llm = _billing_llm(args)
    ledger = support.make_ledger(args, prompt=_eval_prompt())
    if getattr(args, "engine", "local") == "ray" and not isinstance(ledger.counter, TiktokenCounter):
        raise support.CliError(
            f"--engine ray counts tokens with tiktoken encodings only, not the tokenizer {ledger.encoding!r}; "
            "use --engine local, or --encoding for an approximate count"
        )
    scorer = support.load_scorer(args)  # a wrong --model fails here, before any ingest
    note = support.random_weights_note(scorer)
    if reuse:
        from zerank_integrations.cli.reuse import identical_collection

        reused = identical_collection(args, collection, chunking, collection_name)
        if reused is not None:
            print(f"reusing collection {reused!r}: it holds exactly this corpus with the same embedding model")
            collection_name = reused
    store = support.open_store(args, collection_name, create=True)
    with Progress(len(collection.corpus), f"ingest {store.name}", "document") as bar:
        prepare_collection(store, collection, batch_size=args.batch_size, chunking=chunking, progress=bar.update)
    n_queries = len(collection.judged_query_ids())
    if args.max_queries is not None:
        n_queries = min(n_queries, args.max_queries)
    with (
        engine as stage,
        Progress(n_queries, "retrieve", "query") as retrieving,
        Progress(n_queries, "rerank", "query") as reranking,
        Progress(n_queries, "LLM bill", "query") if llm is not None else contextlib.nullcontext() as billing,
    ):
        result = evaluate(
            store,
            collection,
            scorer,
            ledger,
            top_k=args.top_k,
            top_n=policy.top_n,
            score_threshold=policy.score_threshold,
            max_prompt_tokens=policy.max_prompt_tokens,
            instruction=args.instruction,
            max_queries=args.max_queries,
            retrieve_progress=retrieving.update,
            rerank_progress=reranking.update,
            rerank_stage=stage,
            llm=llm,
            llm_counterfactual=args.llm_counterfactual,
            llm_progress=billing.update if billing is not None else None,
        )
    print(
        f"{collection.name}: {len(result.queries)} queries, {len(collection.corpus):,} documents "
        f"({store.count():,} passages); retrieval: {result.retriever}, top {args.top_k}; "
        f"rerank: {scorer.model_name}; kept: {policy.describe()}"
    )
    if note:
        print(note)
    print()
    print(metrics_table(result))
    print()
    print(kept_table(result))
    print()
    print(tokens_table(result.tokens, args.top_k, policy, result.bill, result.bill_error))
    if result.bill_error is not None:
        print(f"\nLLM bill: {result.bill_error}")
    if out is not None:
        from zerank_integrations.evaluation import write_report

        try:
            paths = write_report(result, out)
        except OSError as exc:
            raise support.CliError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
        print(f"\nwrote {paths['json']}, {paths['md']}, {paths['png']}")
    return result


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _eval_prompt() -> Any:
    """The RAG prompt eval sends: a system instruction, then the passages and the question."""
    from zerank_integrations.accounting import DEFAULT_RAG_PROMPT, DEFAULT_RAG_SYSTEM, PromptShape

    return PromptShape.from_format_string(DEFAULT_RAG_PROMPT, system=DEFAULT_RAG_SYSTEM)


def _billing_llm(args: argparse.Namespace) -> Any:
    """The LLM client ``--llm-url`` asks for (``None`` without it); settles which LLM counts the tokens."""
    url = getattr(args, "llm_url", None)
    if url is None:
        for flag in ("llm_model", "llm_counterfactual"):
            if getattr(args, flag, None):
                raise support.CliError(f"--{flag.replace('_', '-')} needs --llm-url")
        args.llm = args.llm or DEFAULT_LLM
        return None
    if not args.llm_model:
        raise support.CliError("--llm-url needs --llm-model: the model name the server serves")
    args.llm = args.llm or (None if args.tokenizer else args.llm_model)
    from pydantic import SecretStr

    from zerank_integrations.billing.openai_compatible import OpenAICompatibleLLM

    # only the variable asked for: an unset --llm-api-key-env never falls back to another key
    key = SecretStr(os.environ.get(args.llm_api_key_env) or "no-key")  # local servers take any key
    try:
        return OpenAICompatibleLLM(
            url,
            args.llm_model,
            api_key=key,
            max_tokens=args.llm_max_tokens,
            timeout=args.llm_timeout,
        )
    except (ValueError, RuntimeError) as exc:
        raise support.CliError(str(exc)) from None


def _engine(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """The rerank stage ``--engine`` asks for, as a context (Ray runs for its duration); it gives ``None`` for
    ``local``: ``evaluate`` then reranks in this process."""
    engine = getattr(args, "engine", "local")  # ``demo`` shares run_eval without these flags
    workers = getattr(args, "workers", None)
    if engine != "ray":
        if workers is not None:
            raise support.CliError("--workers needs --engine ray")
        return contextlib.nullcontext()
    from zerank_integrations.ray_support import RayNotInstalledError, require_ray

    try:
        require_ray("eval --engine ray", "ray.data")
    except RayNotInstalledError as exc:
        raise support.CliError(str(exc)) from None
    return _ray_stage(args, workers or 1)


@contextlib.contextmanager
def _ray_stage(args: argparse.Namespace, workers: int) -> Iterator[Any]:
    from zerank_integrations.options import scorer_options
    from zerank_integrations.ray_data import RayRerankStage, ray_session

    local = Path(args.model).expanduser()
    model = str(local) if local.exists() else args.model
    options = scorer_options(args)
    # a local cluster gets a CPU per worker at least (each worker is an actor needing one)
    with ray_session(max(os.cpu_count() or 1, workers), feature="eval --engine ray") as ray:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and options.get("device") != "cpu" else None
        yield RayRerankStage(model, options, workers=workers, num_gpus=gpus)
