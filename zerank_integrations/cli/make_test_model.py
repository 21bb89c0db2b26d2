"""``zerank-integrations make-test-model DIR``: a tiny random-weight checkpoint for offline tryouts."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from zerank_integrations.cli.support import PROG, CliError, progress_bars_only_on_terminal


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "make-test-model",
        help="write a tiny random-weight zerank-shaped checkpoint (scores are MEANINGLESS; offline tryouts)",
        description="Writes a randomly initialised Qwen3ForCausalLM with the real Qwen3 tokenizer. It runs "
        "through exactly the same code as zerank-2, so the whole pipeline can be tried offline, but its "
        "scores are random: never judge quality with it.",
    )
    parser.add_argument("dir", type=Path, help="output folder")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="folder with the Qwen3 tokenizer files (default: the copy bundled in the package)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from zerank_integrations.bundled import qwen3_tokenizer
    from zerank_integrations.testing import build_test_checkpoint

    try:
        tokenizer = args.tokenizer if args.tokenizer is not None else qwen3_tokenizer()
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot unpack the bundled Qwen3 tokenizer: {exc}; or pass --tokenizer PATH") from None
    if not (Path(tokenizer) / "vocab.json").is_file():
        raise CliError(f"--tokenizer {tokenizer} does not hold a Qwen3 tokenizer (no vocab.json)")
    out: Path = args.dir.expanduser()
    if out.exists() and not out.is_dir():
        raise CliError(f"{out} exists and is not a folder")
    try:
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            with progress_bars_only_on_terminal():
                build_test_checkpoint(tmp, tokenizer)  # writes RANDOM_WEIGHTS.txt itself
            shutil.copytree(tmp, out, dirs_exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot write the test model to {out}: {exc.strerror or exc}") from None
    print(
        f"wrote a random-weight test model to {out}: scores are MEANINGLESS; use it only to try the pipeline "
        f"offline, e.g. `{PROG} demo --model {out}`"
    )
    return 0
