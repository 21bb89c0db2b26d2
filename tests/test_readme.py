"""Every Python block of README.md runs, in order, offline: the test checkpoint stands in for hub ids.

Blocks share one namespace (a later block may use what an earlier one built, as a reader following the page
would), run in a scratch folder, and may use top-level ``await``. Addresses of a rerank server are pointed at
a real ``zerank-integrations serve`` on loopback, started only when a block needs one.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _processes import free_port, running_service
from llama_index.core.instrumentation import get_dispatcher

README = Path(__file__).resolve().parents[1] / "README.md"
HUB_ID = re.compile(r"""(["'])(?:zeroentropy/zerank-[\w.-]+)\1""")
SERVER_URL = re.compile(r"http://(?:rerank\.internal|localhost|127\.0\.0\.1):\d+")
API_KEY = "readme-test-key"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced ``python`` block."""
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    start = None
    for number, line in enumerate(lines, start=1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            blocks.append((start + 1, "\n".join(lines[start : number - 1])))
            start = None
    assert start is None, f"README.md:{start}: unterminated python block"
    return blocks


@pytest.fixture()
def rerank_server(checkpoint_dir: Path, tmp_path: Path) -> Iterator[str]:
    """``zerank-integrations serve`` with the test checkpoint on a free loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "zerank_integrations.cli", "serve", "--model", str(checkpoint_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, "ZERANK_API_KEY": API_KEY}
    with running_service(command, f"{url}/ready", tmp_path / "serve.log", env=env):  # /ready: model loaded
        yield url


def test_python_blocks_are_found() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    assert any("ZerankRerank" in code and "langchain" in code for _, code in blocks)
    assert any("SentenceTransformerEmbedding()" in code for _, code in blocks)


def test_every_python_block_runs(
    request: pytest.FixtureRequest, checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    needs_server = any(SERVER_URL.search(code) for _, code in blocks)
    server = request.getfixturevalue("rerank_server") if needs_server else None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZERANK_API_KEY", API_KEY)
    dispatcher = get_dispatcher()
    handlers_before = list(dispatcher.event_handlers)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    try:
        for line, code in blocks:
            source = HUB_ID.sub(repr(str(checkpoint_dir)), code)
            if server is not None:
                source = SERVER_URL.sub(server, source)
            compiled = compile(source, f"README.md:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            try:
                result = eval(compiled, namespace)  # the README's own code, run as documented
                if inspect.iscoroutine(result):
                    asyncio.run(result)
            except Exception as exc:
                pytest.fail(f"README.md python block at line {line} failed: {type(exc).__name__}: {exc}")
        # the serving block's adapter over a RemoteScorer shows the model the server really runs
        compressor = namespace["compressor"]
        assert f"model={str(checkpoint_dir)!r}" in repr(compressor)
        assert type(compressor.reranker).__name__ == "RemoteScorer"
    finally:
        dispatcher.event_handlers[:] = handlers_before  # blocks may register global event handlers
