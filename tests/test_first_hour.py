"""A new user's first hour (issue #18): what the package needs to ship, and each rough edge met on the way."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from zerank_integrations import bundled
from zerank_integrations.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- the bundled Qwen3 tokenizer -------------------------------------------------------------------------------


def test_bundled_tokenizer_is_the_real_one(tmp_path: Path, qwen3_tokenizer_dir: Path) -> None:
    folder = bundled.qwen3_tokenizer(tmp_path)
    for name in bundled.QWEN3_TOKENIZER_FILES:
        assert filecmp.cmp(folder / name, qwen3_tokenizer_dir / name, shallow=False), name
    assert sorted(p.name for p in folder.iterdir()) == sorted(bundled.QWEN3_TOKENIZER_FILES)
    assert bundled.qwen3_tokenizer(tmp_path) == folder  # the second call finds it


def test_bundled_tokenizer_unpacks_once_under_concurrency(tmp_path: Path) -> None:
    """Threads and processes racing to unpack all get the same complete folder and leave no staging debris."""
    code = "import sys; from zerank_integrations.bundled import qwen3_tokenizer; print(qwen3_tokenizer(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        for _ in range(3)
    ]
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(bundled.qwen3_tokenizer(tmp_path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outputs = [Path(p.communicate()[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len({*results, *outputs}) == 1
    assert [p.name for p in (tmp_path / "tokenizers").iterdir()] == [results[0].name]


def test_bundled_tokenizer_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(bundled.CACHE_DIR_ENV, str(tmp_path / "cache"))
    assert bundled.qwen3_tokenizer().parent == tmp_path / "cache" / "tokenizers"
    monkeypatch.delenv(bundled.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert bundled.cache_dir() == tmp_path / "xdg" / "zerank-integrations"


def test_make_test_model_needs_no_argument_and_no_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """From a folder with no ``shared/`` above it and no tokenizer variable, the bundled tokenizer is used."""
    monkeypatch.delenv("ZERANK_QWEN3_TOKENIZER", raising=False)
    monkeypatch.setenv(bundled.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "make-test-model", "m")
    assert code == 0, err
    assert "random-weight test model" in out
    assert (tmp_path / "m" / "RANDOM_WEIGHTS.txt").is_file()
    assert (tmp_path / "m" / "tokenizer_config.json").is_file()
    from zerank_integrations import ZerankScorer

    scores = ZerankScorer(str(tmp_path / "m")).score("what is the lens?", ["The lens focuses light.", "Paris."])
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)


def test_find_qwen3_tokenizer_falls_back_to_the_bundled_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from zerank_integrations.testing import find_qwen3_tokenizer

    monkeypatch.delenv("ZERANK_QWEN3_TOKENIZER", raising=False)
    monkeypatch.setenv(bundled.CACHE_DIR_ENV, str(tmp_path / "cache"))
    found = find_qwen3_tokenizer(tmp_path)
    assert found.parent == tmp_path / "cache" / "tokenizers"


def test_main_command_and_examples_need_nothing_beside_the_clone() -> None:
    """The main command, the CLI and the examples never reach for the development layout (``../shared``)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    main_command = readme.split("<!-- main-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "shared" not in main_command and "ZERANK_QWEN3_TOKENIZER" not in main_command
    for path in [*(REPO_ROOT / "examples").glob("*.py"), *(REPO_ROOT / "zerank_integrations" / "cli").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "shared/" not in text and '"shared"' not in text, path


# -- no noise from the library's own calls ---------------------------------------------------------------------

_LOAD_TWICE = """
import os, sys
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging
from zerank_integrations.scoring.quiet import quiet_loading
with quiet_loading():
    AutoModelForCausalLM.from_pretrained(sys.argv[1])
assert hf_logging.is_progress_bar_enabled(), "the switch was not put back"
print("---", file=sys.stderr, flush=True)
os.environ["ZERANK_SHOW_PROGRESS"] = "1"
with quiet_loading():
    AutoModelForCausalLM.from_pretrained(sys.argv[1])
print("---", file=sys.stderr, flush=True)
from zerank_integrations import ZerankScorer
scorer = ZerankScorer(sys.argv[1], prefix_reuse=True)
scorer.score("what is the lens of the eye?", ["The lens focuses light.", "Paris is in France."])
"""


def test_weight_loading_bars_only_when_asked_and_no_deprecation_warning(checkpoint_dir: Path) -> None:
    """A fresh process (transformers warns once per process): a quiet load draws no bar, an asked-for one does,
    and scoring with prefix reuse (the cache of a forward pass) logs no deprecation warning about our call."""
    env = {k: v for k, v in os.environ.items() if k != "ZERANK_SHOW_PROGRESS"}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_TWICE, str(checkpoint_dir)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    quiet, asked, _scoring = done.stderr.split("---\n")
    assert "Loading weights" not in quiet, quiet
    assert "Loading weights" in asked
    assert "deprecated" not in done.stderr, done.stderr


def test_quiet_loading_is_shared_across_threads() -> None:
    """Overlapping blocks in two threads: the bars stay off until the last one ends, then come back."""
    from transformers.utils import logging as hf_logging

    from zerank_integrations.scoring.quiet import quiet_loading

    hf_logging.enable_progress_bar()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with quiet_loading():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with quiet_loading():
            second_in.set()
            first_out.wait(5)
            seen.append(hf_logging.is_progress_bar_enabled())  # the first block ended: still off for us

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [False]
    assert hf_logging.is_progress_bar_enabled()
