"""The ``zerank-integrations`` entry point: builds the parser from the subcommand modules and runs one.

Problems a user can fix (missing folder, malformed jsonl line, unknown or invalid collection, unreachable
server, model not found) print one line to stderr and exit with status 1; usage errors exit with 2
(argparse's convention); an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from zerank_integrations import __version__
from zerank_integrations.cli import demo, ingest, make_test_model, search, serve
from zerank_integrations.cli import eval as eval_command
from zerank_integrations.cli.support import PROG, user_error_types

SUBCOMMANDS = (ingest, search, eval_command, demo, serve, make_test_model)


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class _Parser(argparse.ArgumentParser):
    """argparse with a close match for a mistyped subcommand or choice ("did you mean 'ingest'?")."""

    def error(self, message: str) -> NoReturn:
        found = _INVALID_CHOICE.search(message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (``serve`` options are added lazily, when ``serve`` runs)."""
    parser = _Parser(
        prog=PROG,
        description="Retrieve with Chroma, rerank with a cross-encoder reranker (zerank-2 by default), count the "
        "prompt tokens saved, and serve reranking over HTTP in the Cohere, Voyage, Jina, TEI, Mixedbread, "
        "ZeroEntropy and vLLM dialects.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    parser.set_defaults(_commands=subparsers.choices)
    return parser


def unknown_arguments(subparser: argparse.ArgumentParser, extra: Sequence[str]) -> NoReturn:
    """A subcommand's own usage and error for arguments it does not take, with the closest flag for each typo
    (``--chunksize`` -> ``--chunk-size``, ``--top_n`` -> ``--top-n``)."""
    flags = [flag for action in subparser._actions for flag in action.option_strings]
    hints = []
    for argument in extra:
        if argument.startswith("-"):
            name = argument.split("=", 1)[0]
            close = difflib.get_close_matches(name.replace("_", "-"), flags, n=1, cutoff=0.6)
            if close:
                hints.append(f"{name} -> {close[0]}")
    message = f"unrecognized arguments: {' '.join(extra)}"
    if hints:
        message += f" (did you mean: {', '.join(hints)}?)"
    subparser.error(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 a user-fixable error, 2 bad usage, 130 interrupted)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(list(argv) if argv is not None else None)
        if args.command != "serve" and extra:
            unknown_arguments(args._commands[args.command], extra)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return serve.exit_code(exc)
    try:
        if args.command == "serve":
            return serve.run(extra)
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
        if isinstance(exc, user_error_types()):
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
