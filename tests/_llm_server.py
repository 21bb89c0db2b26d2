"""A real OpenAI-compatible LLM server for the bill tests: ``transformers serve`` on loopback, serving a small
random-weight Qwen3 chat checkpoint (real Qwen3 tokenizer and chat template), started once per test session.

Measured here (2 shared cores): the server answers ~13 s after start; a request with max_tokens=1 takes
0.03-0.5 s. Not a test module itself."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _processes import free_port, running_service

from zerank_integrations.testing import build_chat_checkpoint


@dataclass(frozen=True)
class LLMServer:
    base_url: str
    """The OpenAI-compatible ``/v1`` base."""
    model: str
    """The model name requests use (the checkpoint folder, as transformers serve names a local model)."""
    folder: Path


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory: pytest.TempPathFactory, qwen3_tokenizer_dir: Path) -> Iterator[LLMServer]:
    folder = build_chat_checkpoint(tmp_path_factory.mktemp("qwen3-chat"), qwen3_tokenizer_dir)
    executable = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if executable is None:
        pytest.fail("`transformers serve` is not installed: pip install 'transformers[serving]' (the test extra)")
    port = free_port()
    command = [executable, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    command += ["--log-level", "warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = tmp_path_factory.mktemp("llm-server") / "serve.log"
    with running_service(command, f"http://127.0.0.1:{port}/v1/models", log, env=env, timeout=180):
        yield LLMServer(f"http://127.0.0.1:{port}/v1", str(folder), folder)
