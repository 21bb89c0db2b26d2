"""``zerank-integrations serve``: arguments and entry point, registered by the main CLI.

Kept here (not in ``zerank_integrations/cli.py``) so the main CLI imports nothing from FastAPI or uvicorn
until ``serve`` actually runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Any

from zerank_integrations.cli import add_scorer_arguments, scorer_options
from zerank_integrations.serving.app import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_BATCH_PAIRS,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_MAX_REQUEST_BYTES,
)
from zerank_integrations.serving.protocol import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
)

API_KEY_ENV = "ZERANK_API_KEY"
DEFAULT_KEEP_ALIVE_S = 5
DEFAULT_SHUTDOWN_TIMEOUT_S = 30

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
    net.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    add_scorer_arguments(parser.add_argument_group("model"))


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
        http=guarded_protocol(
            header_timeout=args.header_timeout, body_timeout=args.body_timeout, max_connections=args.max_connections
        ),
        timeout_keep_alive=args.keep_alive_timeout,
        timeout_graceful_shutdown=args.shutdown_timeout,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Load the model once and serve it until interrupted; returns the process exit code."""
    import uvicorn

    from zerank_integrations import ZerankScorer
    from zerank_integrations.serving.app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not _is_loopback(args.host):
        logger.warning(
            "serving on %s without an API key: anyone who can reach this port can use the model (set $%s or --api-key)",
            args.host,
            API_KEY_ENV,
        )
    try:
        scorer = ZerankScorer(args.model, **scorer_options(args))
        app = create_app(
            scorer,
            api_key=api_key,
            max_request_bytes=args.max_request_bytes,
            max_documents=args.max_documents,
            batch_wait_ms=args.batch_wait_ms,
            max_batch_pairs=args.max_batch_pairs,
            max_queued_requests=args.max_queued_requests,
            max_json_depth=args.max_json_depth,
        )
        config = uvicorn_config(app, args)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"zerank-integrations serve: {error}", file=sys.stderr)
        return 2
    if getattr(scorer, "random_weights", False):
        logger.warning(
            "%s has random weights (a test checkpoint from make-test-model): its scores are meaningless",
            scorer.model_name,
        )
    print(
        f"serving {scorer.model_name} at http://{_url_host(args.host)}:{args.port} "
        f"(auth {'on' if api_key else 'off'}, batch wait {args.batch_wait_ms:g} ms)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.Server(config).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m zerank_integrations.serving``: the same server without the main CLI."""
    parser = argparse.ArgumentParser(prog="python -m zerank_integrations.serving", description=__doc__)
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
