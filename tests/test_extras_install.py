"""Each extra, installed alone into a fresh virtualenv from the built wheel, runs what README says it runs.

Installing torch (about a minute from a local wheel) dominates, so it is installed once, with the core
dependencies, into a base virtualenv that each extra's virtualenv sees through a ``.pth`` file: every extra's
own requirements are then resolved and installed by pip into its own empty virtualenv, alone. The package is
built once as a wheel (what a user installs), so the tokenizer and MED data must really be in it. Nothing here
uses the development layout: the subprocesses run outside the repository, with no ``PYTHONPATH``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import tomllib
from _processes import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
pytestmark = pytest.mark.slow


def _env(tmp: Path) -> dict[str, str]:
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "ZERANK_QWEN3_TOKENIZER", "ZERANK_SHARED_DIR", "PYTHONHOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ZERANK_CACHE_DIR=str(tmp / "cache"))
    env.update(ZERANK_CHROMA_PATH=str(tmp / "chroma"), ANONYMIZED_TELEMETRY="False", TOKENIZERS_PARALLELISM="false")
    return env


def _run(command: list[str], tmp: Path, timeout: float = 600, **kwargs: object) -> str:
    done = subprocess.run(command, cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _bin(venv: Path, name: str) -> str:
    return str(venv / ("Scripts" if os.name == "nt" else "bin") / name)


def _site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel from a copy of the working tree (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out)]  # isolated: as pip builds it
    _run([*build, str(source)], out)
    (found,) = out.glob("zerank_integrations-*.whl")
    return found


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch 2.13.0 and the core dependencies only (README's first step), shared read-only by the extras."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    core = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    pip = [_bin(venv, "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "torch==2.13.0"], venv.parent)
    _run([*pip, *core], venv.parent)
    return venv


def _install_extra(base: Path, wheel: Path, extra: str, root: Path) -> Path:
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], root)
    (_site_packages(venv) / "_zerank_base.pth").write_text(f"{_site_packages(base)}\n", encoding="utf-8")
    pip = [_bin(venv, "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, f"{wheel}[{extra}]"], root)
    return venv


EXTRAS = ("langchain", "llama-index", "chroma", "server", "pdf", "embeddings")


@pytest.fixture(scope="module")
def extra_venvs(base_venv: Path, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fresh virtualenv per extra, installed two at a time."""
    roots = {extra: tmp_path_factory.mktemp(f"extra-{extra}") for extra in EXTRAS}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {extra: pool.submit(_install_extra, base_venv, wheel, extra, roots[extra]) for extra in EXTRAS}
        return {extra: future.result() for extra, future in futures.items()}


def readme_section(heading: str) -> str:
    """The Python blocks of one README section (up to the next heading of the same level), in order."""
    text = README.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0] + " "
    body = text.split(f"\n{heading}\n", 1)[1]
    body = body.split(f"\n{level}", 1)[0]
    blocks = [part.split("\n```", 1)[0] for part in body.split("```python\n")[1:]]
    assert blocks, f"no python block under {heading!r}"
    return "\n\n".join(blocks)


def _with_checkpoint(code: str, checkpoint: Path) -> str:
    import re

    return re.sub(r"""(["'])zeroentropy/zerank-[\w.-]+\1""", repr(str(checkpoint)), code)


def _python(venv: Path, code: str, root: Path) -> str:
    script = root / "snippet.py"
    script.write_text(code, encoding="utf-8")
    return _run([_bin(venv, "python"), str(script)], root)


def test_installed_wheel_ships_tokenizer_and_data(extra_venvs: dict[str, Path]) -> None:
    venv = extra_venvs["langchain"]
    checkpoint = venv.parent / "tiny"
    out = _run([_bin(venv, "zerank-integrations"), "make-test-model", str(checkpoint)], venv.parent)
    assert "random-weight test model" in out and (checkpoint / "model.safetensors").is_file()


def test_langchain_extra_runs_its_readme_section(extra_venvs: dict[str, Path]) -> None:
    venv = extra_venvs["langchain"]
    checkpoint = venv.parent / "tiny"
    if not checkpoint.is_dir():
        _run([_bin(venv, "zerank-integrations"), "make-test-model", str(checkpoint)], venv.parent)
    code = _with_checkpoint(readme_section("### LangChain: a document compressor"), checkpoint)
    out = _python(venv, code + "\nprint('SECTION-OK', len(docs))\n", venv.parent)
    assert "SECTION-OK 2" in out
    probe = "import importlib.util as u; print(u.find_spec('llama_index') is None)"
    assert _python(venv, probe, venv.parent).strip() == "True"  # really alone: no other extra came along


def test_llama_index_extra_runs_its_readme_section(extra_venvs: dict[str, Path], checkpoint_dir: Path) -> None:
    venv = extra_venvs["llama-index"]
    code = _with_checkpoint(readme_section("### LlamaIndex: a node postprocessor"), checkpoint_dir)
    out = _python(venv, code + "\nprint('SECTION-OK', len(response.source_nodes))\n", venv.parent)
    assert "SECTION-OK 2" in out
    probe = "import importlib.util as u; print(u.find_spec('langchain_core') is None)"
    assert _python(venv, probe, venv.parent).strip() == "True"


def test_chroma_extra_ingests_and_searches(extra_venvs: dict[str, Path]) -> None:
    venv = extra_venvs["chroma"]
    docs = venv.parent / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "lens.txt").write_text("The crystalline lens focuses light on the retina.", encoding="utf-8")
    (docs / "tower.md").write_text("The Eiffel tower was completed in 1889.", encoding="utf-8")
    cli = _bin(venv, "zerank-integrations")
    assert "ingested 2 documents" in _run([cli, "ingest", str(docs)], venv.parent)
    found = json.loads(_run([cli, "search", "what focuses light?", "--no-rerank", "--json"], venv.parent))
    assert found["retrieved"][0]["id"] == "lens.txt"


def test_server_extra_serves(extra_venvs: dict[str, Path], checkpoint_dir: Path) -> None:
    venv = extra_venvs["server"]
    port = free_port()
    client = textwrap.dedent(
        f"""
        import subprocess, sys, time, httpx
        server = subprocess.Popen([{_bin(venv, "zerank-integrations")!r}, "serve", "--model", {str(checkpoint_dir)!r},
                                   "--host", "127.0.0.1", "--port", "{port}"])
        try:
            for _ in range(600):
                try:
                    if httpx.get("http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            body = {{"model": "m", "query": "lens?", "documents": ["The lens focuses light.", "Paris."], "top_n": 1}}
            reply = httpx.post("http://127.0.0.1:{port}/v2/rerank", json=body, timeout=60)
            print("STATUS", reply.status_code, len(reply.json()["results"]))
        finally:
            server.terminate()
            server.wait(30)
        """
    )
    assert "STATUS 200 1" in _python(venv, client, venv.parent)


def test_pdf_extra_reads_a_pdf(extra_venvs: dict[str, Path]) -> None:
    from test_first_hour import write_pdf

    venv = extra_venvs["pdf"]
    pdf = write_pdf(venv.parent / "scurvy.pdf", ["Scurvy is caused by a lack of vitamin C."])
    code = f"from zerank_integrations.retrieval import load_documents\nprint(load_documents({str(pdf)!r})[0].text)"
    assert _python(venv, code, venv.parent).strip() == "Scurvy is caused by a lack of vitamin C."


def test_embeddings_extra_embeds_offline(extra_venvs: dict[str, Path]) -> None:
    code = (
        "from zerank_integrations.retrieval import SentenceTransformerEmbedder\n"
        "v = SentenceTransformerEmbedder().encode(['the lens of the eye'])\n"
        "print(v.shape, round(float((v * v).sum()), 4))"
    )
    assert _python(extra_venvs["embeddings"], code, extra_venvs["embeddings"].parent).strip() == "(1, 384) 1.0"
