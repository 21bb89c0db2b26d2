"""``zerank-integrations serve``: hands over to :mod:`zerank_integrations.serving.cli`, imported only now.

The serving module needs FastAPI and uvicorn (the ``server`` extra); every other subcommand works without it.
"""

from __future__ import annotations

import argparse
from typing import Any

from zerank_integrations.cli.support import PROG, CliError


def register(subparsers: Any) -> None:
    # Options are added by zerank_integrations.serving.cli when `serve` runs (FastAPI is imported only then).
    parser = subparsers.add_parser(
        "serve",
        help="serve the rerank API over HTTP in every common dialect: Cohere v1/v2, Jina, Voyage, vLLM, TEI, "
        "Mixedbread, ZeroEntropy (needs the 'server' extra); see `serve --help`",
        add_help=False,
    )
    parser.set_defaults(handler=None)


def run(extra: list[str]) -> int:
    """Parse ``extra`` (everything after ``serve``) with the serving module's options and run the server."""
    try:
        from zerank_integrations.serving import cli as serving_cli
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing.startswith("zerank_integrations"):
            raise CliError(f"`serve` is not available in this installation ({missing} is missing)") from None
        raise CliError(
            f"`serve` needs the server extra ({missing} is not installed): pip install 'zerank-integrations[server]'"
        ) from None
    from zerank_integrations.serving.dialects import DIALECTS

    routes = "; ".join(f"POST {dialect.path} ({dialect.summary})" for dialect in DIALECTS)
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        description=f"Serve one reranker model over HTTP: {routes}; GET /health (alive), /ready (loaded, not "
        "draining), /metrics (Prometheus), /v1/models and /openapi.json.",
    )
    serving_cli.add_serve_arguments(parser)
    try:
        serve_args = parser.parse_args(extra)
    except SystemExit as exc:
        return exit_code(exc)
    return int(serving_cli.run_serve(serve_args) or 0)


def exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1
