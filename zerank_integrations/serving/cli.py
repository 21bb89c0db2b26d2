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

from zerank_integrations.cli import add_scorer_arguments, scorer_options
from zerank_integrations.serving.app import (
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_MAX_BATCH_PAIRS,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_REQUEST_BYTES,
)

API_KEY_ENV = "ZERANK_API_KEY"

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
    net.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    add_scorer_arguments(parser.add_argument_group("model"))


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
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"zerank-integrations serve: {error}", file=sys.stderr)
        return 2
    print(
        f"serving {scorer.model_name} at http://{_url_host(args.host)}:{args.port}/v1/rerank "
        f"(auth {'on' if api_key else 'off'}, batch wait {args.batch_wait_ms:g} ms)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, lifespan="on")
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
