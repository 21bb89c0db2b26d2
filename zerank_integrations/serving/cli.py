"""``zerank-integrations serve``: arguments and entry point, registered by the main CLI.

Kept here (not in ``zerank_integrations/cli.py``) so the main CLI imports nothing from FastAPI or uvicorn
until ``serve`` actually runs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from zerank_integrations.hosts import is_loopback, url_host
from zerank_integrations.options import add_scorer_arguments, scorer_options
from zerank_integrations.ray_support import REACHABLE_HEAD_ENV
from zerank_integrations.serving.app import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_BATCH_PAIRS,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_MAX_REQUEST_BYTES,
)
from zerank_integrations.serving.logs import LOG_FORMATS, configure_logging
from zerank_integrations.serving.protocol import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
)
from zerank_integrations.serving.ray_engine import DEFAULT_PLACEMENT_TIMEOUT_S

API_KEY_ENV = "ZERANK_API_KEY"
DEFAULT_KEEP_ALIVE_S = 5
DEFAULT_SHUTDOWN_TIMEOUT_S = 30
DEFAULT_DRAIN_S = 0.0
OTLP_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENGINES = ("local", "ray")

logger = logging.getLogger("zerank_integrations.serving")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` options to ``parser`` (the main CLI's ``serve`` sub-parser)."""
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, local only)")
    net.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    net.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer <key>' on rerank routes; prefer the ${API_KEY_ENV} environment "
        "variable, since command lines are visible to other users",
    )
    net.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"larger request bodies get HTTP 413 (default: {DEFAULT_MAX_REQUEST_BYTES})",
    )
    net.add_argument(
        "--max-documents",
        type=int,
        default=DEFAULT_MAX_DOCUMENTS,
        help=f"more documents in one request get HTTP 413 (default: {DEFAULT_MAX_DOCUMENTS})",
    )
    net.add_argument(
        "--batch-wait-ms",
        type=float,
        default=DEFAULT_BATCH_WAIT_MS,
        help="how long a request waits for others to share its forward passes; 0 scores what is queued "
        f"as soon as the model is free (default: {DEFAULT_BATCH_WAIT_MS})",
    )
    net.add_argument(
        "--max-batch-pairs",
        type=int,
        default=DEFAULT_MAX_BATCH_PAIRS,
        help=f"most (query, document) pairs gathered into one scoring call (default: {DEFAULT_MAX_BATCH_PAIRS})",
    )
    net.add_argument(
        "--max-queued-requests",
        type=int,
        default=DEFAULT_MAX_QUEUED_REQUESTS,
        help=f"requests waiting for the model beyond this get HTTP 429 (default: {DEFAULT_MAX_QUEUED_REQUESTS})",
    )
    net.add_argument(
        "--max-json-depth",
        type=int,
        default=DEFAULT_MAX_JSON_DEPTH,
        help=f"request bodies nested deeper get HTTP 400 before they are decoded (default: {DEFAULT_MAX_JSON_DEPTH})",
    )
    limits = parser.add_argument_group("connections")
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help=f"seconds a client has to send the request line and headers (default: {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help=f"seconds a client has to send the body after its headers (default: {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    limits.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=DEFAULT_KEEP_ALIVE_S,
        help=f"seconds an idle kept-alive connection stays open (default: {DEFAULT_KEEP_ALIVE_S})",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"open connections beyond this get HTTP 503 and are closed (default: {DEFAULT_MAX_CONNECTIONS})",
    )
    limits.add_argument(
        "--shutdown-timeout",
        type=int,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        help="on SIGTERM, seconds in-flight requests get to finish before the process exits; connections still "
        f"sending a request are cut at once (default: {DEFAULT_SHUTDOWN_TIMEOUT_S})",
    )
    net.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=None,
        help="rerank requests in progress beyond this get HTTP 429 with Retry-After (default: no limit besides "
        "--max-queued-requests)",
    )
    limits.add_argument(
        "--drain-seconds",
        type=float,
        default=DEFAULT_DRAIN_S,
        help="on SIGTERM, keep serving this long with /ready answering 503, so load balancers stop sending work, "
        f"before shutting down (default: {DEFAULT_DRAIN_S:g}; in Kubernetes a few seconds)",
    )
    ops = parser.add_argument_group("operations")
    ops.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    ops.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text lines, or one JSON object per line (one per request: id, route, status, documents, tokens, "
        "timings; never any text)",
    )
    ops.add_argument(
        "--otlp-endpoint",
        default=os.environ.get(OTLP_ENV) or None,
        help=f"send OpenTelemetry traces to this OTLP/gRPC collector (default: ${OTLP_ENV}; needs the tracing extra)",
    )
    ops.add_argument(
        "--ledger-llm",
        default=None,
        help="count the LLM prompt tokens selection keeps and saves (zerank_selection_tokens_* metrics) with this "
        "model's tiktoken encoding, e.g. gpt-4o (default: off)",
    )
    engine = parser.add_argument_group("engine")
    engine.add_argument(
        "--engine",
        default="local",
        choices=ENGINES,
        help="local: this process (uvicorn); ray: a Ray Serve application, one scorer per replica (the ray extra)",
    )
    engine.add_argument("--replicas", type=int, default=None, help="ray: a fixed number of replicas (default: 1)")
    engine.add_argument("--min-replicas", type=int, default=None, help="ray: autoscaling lower bound")
    engine.add_argument("--max-replicas", type=int, default=None, help="ray: autoscaling upper bound")
    engine.add_argument(
        "--ray-address", default=None, help="ray: join this cluster (e.g. auto, ray://head:10001); default: start one"
    )
    engine.add_argument("--replica-cpus", type=float, default=1.0, help="ray: CPUs reserved per replica (default: 1)")
    engine.add_argument(
        "--placement-timeout",
        type=float,
        default=DEFAULT_PLACEMENT_TIMEOUT_S,
        help="ray: seconds to wait for the cluster to place every replica's CPUs and GPUs before exiting with "
        f"code 3 and one line naming what is missing (default: {DEFAULT_PLACEMENT_TIMEOUT_S:g}; a local cluster "
        "that can never hold them is refused at once)",
    )
    engine.add_argument(
        "--ray-reachable-head",
        action="store_true",
        default=None,
        help=f"ray: the local cluster this command starts listens on the machine's network address so other "
        f"machines can join (default: 127.0.0.1 only; also ${REACHABLE_HEAD_ENV}=1). Ray runs any code a "
        "connected driver sends: use it on a trusted network only",
    )
    engine.add_argument(
        "--verbose", action="store_true", help="ray: show Ray's own log lines (workers, Serve) in this terminal"
    )

    add_scorer_arguments(parser.add_argument_group("model"))


def app_options(args: argparse.Namespace, api_key: str | None) -> dict[str, Any]:
    """The ``create_app`` settings ``serve`` passes, the same for every engine."""
    ledger = None
    if args.ledger_llm:
        from zerank_integrations.accounting import TokenLedger

        ledger = TokenLedger(llm=args.ledger_llm, max_records=0)
    return {
        "api_key": api_key,
        "max_request_bytes": args.max_request_bytes,
        "max_documents": args.max_documents,
        "batch_wait_ms": args.batch_wait_ms,
        "max_batch_pairs": args.max_batch_pairs,
        "max_queued_requests": args.max_queued_requests,
        "max_json_depth": args.max_json_depth,
        "max_concurrent_requests": args.max_concurrent_requests,
        "ledger": ledger,
    }


def tracer_provider(args: argparse.Namespace) -> Any | None:
    if not args.otlp_endpoint:
        return None
    from zerank_integrations.serving.tracing import otlp_tracer_provider

    return otlp_tracer_provider(args.otlp_endpoint)


def uvicorn_config(app: Any, args: argparse.Namespace) -> Any:
    """The uvicorn settings ``serve`` runs with: h11 with read deadlines and a connection cap, bounded shutdown."""
    import uvicorn

    from zerank_integrations.serving.protocol import guarded_protocol

    return uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        access_log=False,  # the app logs one line per request itself (with its id and timings)
        log_config=None if getattr(args, "log_format", "text") == "json" else uvicorn.config.LOGGING_CONFIG,
        http=guarded_protocol(
            header_timeout=args.header_timeout, body_timeout=args.body_timeout, max_connections=args.max_connections
        ),
        timeout_keep_alive=args.keep_alive_timeout,
        timeout_graceful_shutdown=args.shutdown_timeout,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (the model loads while ``/health`` already answers); returns the exit code."""
    if args.engine != "ray":  # usage mistakes first: a refused command leaves the process's logging as it was
        for flag in ("replicas", "min_replicas", "max_replicas", "ray_address", "ray_reachable_head"):
            if getattr(args, flag) is not None:
                print(f"zerank-integrations serve: --{flag.replace('_', '-')} needs --engine ray", file=sys.stderr)
                return 2
    configure_logging(args.log_level, args.log_format)
    if args.log_format == "json":
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no progress bars among the JSON lines
        os.environ.setdefault("TQDM_DISABLE", "1")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(args.host):
        logger.warning(
            "serving on %s without an API key: anyone who can reach this port can use the model (set $%s or --api-key)",
            args.host,
            API_KEY_ENV,
        )
    problem = missing_local_model(args.model)
    if problem:  # before any banner, cluster or port: a typo in a path is a usage error
        print(f"zerank-integrations serve: {problem}", file=sys.stderr)
        return 2
    if args.engine == "ray":
        from zerank_integrations.serving.ray_engine import run_ray

        return run_ray(args, api_key)
    from zerank_integrations import ZerankScorer
    from zerank_integrations.serving.app import create_app

    failure: list[BaseException] = []
    server: Any = None

    def load() -> Any:
        try:
            scorer = ZerankScorer(args.model, **scorer_options(args))
        except BaseException as error:
            failure.append(error)
            if server is not None:
                server.should_exit = True
            raise
        if getattr(scorer, "random_weights", False):
            logger.warning(
                "%s has random weights (a test checkpoint from make-test-model): its scores are meaningless",
                scorer.model_name,
            )
        return scorer

    try:
        app = create_app(
            load,
            model_name=args.model,
            warm_up=True,
            tracer_provider=tracer_provider(args),
            **app_options(args, api_key),
        )
        config = uvicorn_config(app, args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"zerank-integrations serve: {error}", file=sys.stderr)
        return 2
    banner = (
        f"serving {args.model} at http://{url_host(args.host)}:{args.port} "
        f"(auth {'on' if api_key else 'off'}, batch wait {args.batch_wait_ms:g} ms; /ready once loaded)"
    )
    if args.log_format == "json":
        logger.info("%s", banner)
    else:
        print(banner, file=sys.stderr, flush=True)
    server = draining_server(config, app.state.readiness, args.drain_seconds)
    server.run()
    if failure:
        print(f"zerank-integrations serve: {_one_line(failure[0])}", file=sys.stderr)
        return 2
    return 0


def missing_local_model(model: str) -> str | None:
    """The loader's one-line error for a model given as a local path that is not a checkpoint folder (checked
    without loading anything or reaching the network), else ``None`` (hub ids are resolved when loading)."""
    from zerank_integrations.scoring.source import CheckpointSource, ModelLoadError, _looks_like_path

    if not (_looks_like_path(model) or Path(model).expanduser().exists()):
        return None
    try:
        CheckpointSource.resolve(model, None, True, None, None)
    except ModelLoadError as error:
        return _one_line(error)
    return None


def draining_server(config: Any, readiness: Any, drain_s: float) -> Any:
    """A ``uvicorn.Server`` whose first SIGTERM starts a drain: ``/ready`` says 503 at once, requests keep being
    answered for ``drain_s`` seconds, then the usual graceful shutdown (bounded by ``--shutdown-timeout``)."""
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            """uvicorn raises the signal again once it has shut down (SIGTERM: exit 143, SIGINT: 0 or 1); a
            stop the user asked for exits 0 here, the same code for both signals (documented)."""
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            first = not readiness.draining
            readiness.drain()
            if first and drain_s > 0 and sig == signal.SIGTERM:
                logger.info("SIGTERM: draining for %g s before shutting down", drain_s)
                timer = threading.Timer(drain_s, uvicorn.Server.handle_exit, (self, sig, frame))
                timer.daemon = True
                timer.start()
                return
            super().handle_exit(sig, frame)

    return _DrainingServer(config)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """``python -m zerank_integrations.serving``: the same server without the main CLI."""
    parser = argparse.ArgumentParser(prog="python -m zerank_integrations.serving", description=__doc__)
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))
