"""The ``ZerankScorer`` options, declared once for every place that builds a scorer from settings.

The adapters' pydantic fields, the CLI's ``--model``/``--device``/... flags and ``serve``'s option parser are
all generated from :data:`SCORER_OPTIONS`; a test checks that the table names exactly the keyword
parameters of ``ZerankScorer.__init__``, so a new scorer option cannot be forgotten in one place.
No torch or framework import here: argparse and pydantic only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, SecretStr

from zerank_integrations.base import DEFAULT_MODEL
from zerank_integrations.families import FAMILY_NAMES

__all__ = [
    "SCORER_OPTIONS",
    "ScorerOption",
    "add_scorer_arguments",
    "positive_int",
    "scorer_fields",
    "scorer_options",
]


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1, with a message naming the bad value."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(text, 0)


def _prefix_reuse(text: str) -> bool | str:
    value = {"auto": "auto", "on": True, "off": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")
    return value


@dataclass(frozen=True)
class ScorerOption:
    """One ``ZerankScorer`` keyword option and how each front end exposes it.

    ``annotation`` is the pydantic type of the adapter field (``None`` always allowed: the scorer's default);
    ``cli_type``/``cli_choices``/``cli_flag`` describe the ``--name`` flag; ``cli=False`` keeps an option off
    the command line (with ``cli_reason`` saying why).
    """

    name: str
    annotation: Any
    help: str
    cli: bool = True
    cli_type: Callable[[str], Any] | None = None
    cli_choices: tuple[str, ...] | None = None
    cli_flag: bool = False
    cli_metavar: str | None = None
    cli_reason: str = ""
    ge: int | None = None
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SCORER_OPTIONS: tuple[ScorerOption, ...] = (
    ScorerOption(
        "family",
        str,
        f"reranker family: {', '.join(FAMILY_NAMES)} (default: read from the checkpoint, then known hub ids)",
        cli_choices=FAMILY_NAMES,
    ),
    ScorerOption("revision", str, "model revision (branch, tag or commit) on the Hugging Face Hub"),
    ScorerOption("device", str, "torch device: cpu, cuda, cuda:1, mps (default: best available)"),
    ScorerOption("dtype", str, "float32, bfloat16, float16 (default: per device)"),
    ScorerOption(
        "max_length",
        int,
        "max tokens per (query, document) prompt (default: the family's); longer pairs are shortened, document "
        "first, or split into windows with long_documents=max_chunk",
        cli_type=positive_int,
        ge=1,
    ),
    ScorerOption(
        "batch_tokens", int, "padded token slots per forward pass (default: per device)", cli_type=positive_int, ge=1
    ),
    ScorerOption("local_files_only", bool, "never reach the Hugging Face Hub", cli_flag=True),
    ScorerOption(
        "prefix_reuse",
        bool | Literal["auto"],
        "compute a long query's keys/values once for all its documents: auto, on or off (default: auto)",
        cli_type=_prefix_reuse,
        cli_metavar="{auto,on,off}",
    ),
    ScorerOption("cache_dir", str, "Hugging Face cache folder for downloaded models"),
    ScorerOption(
        "token",
        SecretStr,
        "Hugging Face access token for gated or private models (kept as a SecretStr, never shown)",
        cli=False,
        cli_reason="a token on a command line is visible to other users; the Hub reads $HF_TOKEN instead",
        secret=True,
    ),
    ScorerOption(
        "cache_size",
        int,
        "score cache entries: repeated (query, document) pairs are not scored again (default: 0, off)",
        cli_type=non_negative_int,
        ge=0,
    ),
    ScorerOption(
        "long_documents",
        Literal["truncate", "max_chunk"],
        "a document longer than the prompt leaves room for: truncate it (default), or score overlapping windows "
        "and keep the best (max_chunk; the best window's character span is reported)",
        cli_choices=("truncate", "max_chunk"),
    ),
    ScorerOption(
        "chunk_tokens",
        int,
        "max_chunk window, in reranker tokens (default: the room the query and template leave)",
        cli_type=positive_int,
        ge=1,
    ),
    ScorerOption(
        "chunk_stride",
        int,
        "max_chunk stride, in reranker tokens (default: 3/4 of the window)",
        cli_type=positive_int,
        ge=1,
    ),
    ScorerOption(
        "quantization",
        Literal["int8"],
        "int8: the CPU int8 path (OpenVINO for cross-encoders, torchao for causal rerankers; weights prepared "
        "once and cached; needs the [int8] extra). Default: float32, exact",
        cli_choices=("int8",),
    ),
    ScorerOption(
        "threads",
        int,
        "CPU threads of this process (default: $ZERANK_THREADS, else the cores no other zerank process holds)",
        cli_type=positive_int,
        ge=1,
    ),
)


def add_scorer_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--model`` and one flag per command-line scorer option (search, eval, demo and serve use it).

    Every flag defaults to ``None`` (the scorer's own default), so :func:`scorer_options` passes on only what
    the user set.
    """
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"reranker: hub id or local checkpoint folder (default: {DEFAULT_MODEL})"
    )
    for option in SCORER_OPTIONS:
        if not option.cli:
            continue
        if option.cli_flag:
            parser.add_argument(option.flag, action="store_true", default=None, help=option.help)
            continue
        kwargs: dict[str, Any] = {"default": None, "help": option.help}
        if option.cli_type is not None:
            kwargs["type"] = option.cli_type
        if option.cli_choices is not None:
            kwargs["choices"] = option.cli_choices
        if option.cli_metavar is not None:
            kwargs["metavar"] = option.cli_metavar
        parser.add_argument(option.flag, **kwargs)


def scorer_options(args: argparse.Namespace) -> dict[str, Any]:
    """``ZerankScorer`` keyword arguments from a namespace parsed with :func:`add_scorer_arguments`.

    Only options the user gave are returned; the rest keep the scorer's defaults.
    """
    return {
        option.name: getattr(args, option.name)
        for option in SCORER_OPTIONS
        if option.cli and getattr(args, option.name, None) is not None
    }


def scorer_fields() -> dict[str, tuple[Any, Any]]:
    """Pydantic field definitions (``create_model`` form) for the adapters: frozen, default ``None``."""
    fields: dict[str, tuple[Any, Any]] = {}
    for option in SCORER_OPTIONS:
        extra: dict[str, Any] = {}
        if option.ge is not None:
            extra["ge"] = option.ge
        if option.secret:
            extra.update(exclude=True, repr=False)
        fields[option.name] = (
            option.annotation | None,
            Field(default=None, frozen=True, description=f"{option.help} (with `model`).", **extra),
        )
    return fields
