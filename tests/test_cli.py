"""The ``zerank-integrations`` command, in process (``main([...])``), against a real Chroma server, and once
as a real console-script subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _processes import free_port, running_service

from zerank_integrations.cli import DEMO_COLLECTION, main, progress
from zerank_integrations.retrieval import ChromaStore, load_beir

BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _progress_lines_only_where_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a loaded machine a step may pass the 5 s mark; only the progress test wants those lines."""
    monkeypatch.setattr(progress, "INTERVAL_S", 3600.0)


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("zerank-integrations: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    """Twelve real MED abstracts as .txt files, plus one .md note."""
    folder = tmp_path_factory.mktemp("docs")
    for doc in load_beir(datasets_dir / "med").corpus[:12]:
        (folder / f"med-{doc.id}.txt").write_text(doc.text, encoding="utf-8")
    (folder / "notes").mkdir()
    (folder / "notes" / "eye.md").write_text("# Eye\nThe crystalline lens focuses light.", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def chroma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chroma-cli")


@pytest.fixture(scope="module")
def ingested(chroma_dir: Path, docs_dir: Path) -> Path:
    assert main(["ingest", str(docs_dir), "--chroma-path", str(chroma_dir), "--collection", "cli-docs"]) == 0
    return chroma_dir


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``chroma run`` on loopback for this module, stopped afterwards."""
    chroma = shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")
    if chroma is None:
        pytest.fail("the `chroma` command (installed with chromadb) was not found")
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    command = [chroma, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    with running_service(command, f"{url}/api/v2/heartbeat", data.parent / f"chroma-{port}.log", env=env):
        yield url


# -- ingest / search -------------------------------------------------------------------------------------


def test_ingest_is_idempotent(capsys: pytest.CaptureFixture[str], ingested: Path, docs_dir: Path) -> None:
    code, out, _ = run(capsys, "ingest", docs_dir, "--chroma-path", ingested, "--collection", "cli-docs")
    assert code == 0
    store = ChromaStore.open("cli-docs", path=ingested)
    n = store.count()  # chunks: the longer abstracts are split to fit the embedder's 254 tokens
    assert n > 13 and "ingested 13 documents as" in out
    assert f"0 added, 0 updated, {n} unchanged; {n} in the collection" in out
    assert sorted(store.collection.get()["ids"])[-1] == "notes/eye.md"


def test_search_without_rerank_matches_library(capsys: pytest.CaptureFixture[str], ingested: Path) -> None:
    question = "crystalline lens proteins"
    code, out, _ = run(
        capsys, "search", question, "--chroma-path", ingested, "--collection", "cli-docs", "--no-rerank", "--json"
    )
    assert code == 0
    payload = json.loads(out)
    expected = ChromaStore.open("cli-docs", path=ingested).search(question, 50)
    assert [r["id"] for r in payload["retrieved"]] == [h.id for h in expected]
    assert len(payload["retrieved"]) == 13 and "reranked" not in payload
    code, out, _ = run(capsys, "search", question, "--chroma-path", ingested, "--collection", "cli-docs", "--no-rerank")
    assert code == 0 and f"  1  {expected[0].score:6.3f}  {expected[0].id}" in out


def test_search_reranks_with_checkpoint(
    capsys: pytest.CaptureFixture[str], ingested: Path, checkpoint_dir: Path
) -> None:
    args = ["search", "lens of the eye", "--chroma-path", ingested, "--collection", "cli-docs"]
    args += ["--model", checkpoint_dir, "--top-k", "8", "--top-n", "3"]
    code, out, _ = run(capsys, *args, "--json")
    assert code == 0
    payload = json.loads(out)
    retrieved = [r["id"] for r in payload["retrieved"]]
    reranked = payload["reranked"]
    assert len(retrieved) == 8 and len(reranked) == 3
    assert all(r["id"] == retrieved[r["retrieval_rank"] - 1] for r in reranked)
    assert len({r["id"] for r in reranked}) == 3
    assert [r["score"] for r in reranked] == sorted((r["score"] for r in reranked), reverse=True)
    tokens = payload["tokens"]
    assert (tokens["candidates"], tokens["kept"]) == (8, 3)
    assert 0 < tokens["tokens_kept"] <= tokens["tokens_in"]
    assert payload["selection"] == {"score_threshold": None, "top_n": 3, "max_prompt_tokens": None}
    assert payload["reranker"] == {"model": str(checkpoint_dir), "random_weights": True}
    assert [d["document"] for d in payload["documents"]][:3] == [r["id"] for r in reranked]
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert "kept for the prompt (top 3; 3 of 8 reranked)" in out
    assert out.count("random-weight test model") == 1  # the library's test checkpoints are flagged, once
    assert f"tokens (gpt-4o): {tokens['tokens_in']:,} for all 8 candidates -> {tokens['tokens_kept']:,} kept" in out
    # a token budget: the kept passages fit it exactly as the savings count them
    code, out, _ = run(capsys, *args, "--max-prompt-tokens", "300", "--json")
    payload = json.loads(out)
    from zerank_integrations.accounting import get_encoding

    kept_text = "\n\n".join(r["text"] for r in payload["reranked"])
    assert len(get_encoding("o200k_base").encode_ordinary(kept_text)) == payload["tokens"]["tokens_kept"] <= 300
    assert len(payload["reranked"]) + len(payload["over_budget"]) == 3


def test_long_files_are_chunked_and_searched_per_chunk(
    capsys: pytest.CaptureFixture[str], chroma_dir: Path, tmp_path: Path, datasets_dir: Path, checkpoint_dir: Path
) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    text = "\n\n".join(d.text for d in load_beir(datasets_dir / "med").corpus[:12])
    (folder / "handbook.txt").write_text(text, encoding="utf-8")
    args = ["--chroma-path", chroma_dir, "--collection", "cli-long"]
    code, out, _ = run(capsys, "ingest", folder, *args, "--chunk-size", "200", "--chunk-overlap", "20")
    assert code == 0
    store = ChromaStore.open("cli-long", path=chroma_dir)
    n = store.count()
    assert n > 5 and f"ingested 1 documents as {n} chunks (size 200, overlap 20, context up to 512 tokens)" in out
    assert f"{n} added" in out
    code, out, _ = run(capsys, "search", "lens proteins", *args, "--model", checkpoint_dir, "--top-k", "6", "--json")
    payload = json.loads(out)
    for row in payload["reranked"]:
        start, end = row["span"]
        assert (
            row["document"] == "handbook.txt"
            and text[start:end] == row["text"]  # the context handed on: the chunk's enclosing window
            and row["id"].startswith("handbook.txt#")
        )
    assert payload["documents"] == [{"document": "handbook.txt", "score": payload["reranked"][0]["score"]}]
    code, _, err = run(capsys, "ingest", folder, *args, "--chunk-size", "100", "--chunk-overlap", "100")
    assert_one_line_error(code, err, "--chunk-overlap (100) must be smaller than the --chunk-size (100)")


# -- errors a user can act on ----------------------------------------------------------------------------


def test_unreadable_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "ingest", tmp_path / "missing", "--chroma-path", tmp_path / "db")
    assert_one_line_error(code, err, "folder not found:", "missing")


def test_malformed_jsonl_names_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    beir.mkdir()
    lines = ['{"_id": "1", "text": "fine"}', "", '{"_id": "2", "text": "fine"}', '{"_id": "3", "text": }']
    (beir / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = run(capsys, "ingest", beir, "--chroma-path", tmp_path / "db")
    assert_one_line_error(code, err, f"{beir / 'corpus.jsonl'}:4: malformed JSON")


def test_unknown_collection(capsys: pytest.CaptureFixture[str], ingested: Path) -> None:
    code, _, err = run(capsys, "search", "q", "--chroma-path", ingested, "--collection", "nope", "--no-rerank")
    assert_one_line_error(code, err, "collection 'nope' does not exist", "'cli-docs'", "zerank-integrations ingest")


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "search", "q", "--chroma-url", url, "--no-rerank")
    assert_one_line_error(code, err, f"cannot reach the Chroma server at {url}", "chroma run")


def test_other_embedder_is_refused(capsys: pytest.CaptureFixture[str], ingested: Path, tmp_path: Path) -> None:
    args = ["search", "q", "--chroma-path", ingested, "--collection", "cli-docs", "--no-rerank"]
    code, _, err = run(capsys, *args, "--embedding-model", tmp_path)
    assert_one_line_error(code, err, "built with embedding model 'sentence-transformers/all-MiniLM-L6-v2'")


def test_depth_and_usage_errors(capsys: pytest.CaptureFixture[str], ingested: Path) -> None:
    code, _, err = run(capsys, "search", "q", "--chroma-path", ingested, "--collection", "cli-docs", "--top-k", "3")
    assert_one_line_error(code, err, "--top-n (5) cannot exceed --top-k (3)")
    code, _, err = run(capsys, "search", "   ", "--chroma-path", ingested, "--collection", "cli-docs")
    assert_one_line_error(code, err, "query is empty")
    code, _, err = run(capsys, "eval", "--out", "x")
    assert code == 2 and "--beir" in err
    code, _, err = run(capsys, "search", "q", "--top-k", "0")
    assert code == 2 and "must be >= 1" in err


def test_default_model_offline_says_how_to_pass_a_path(
    capsys: pytest.CaptureFixture[str], ingested: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "search", "q", "--chroma-path", ingested, "--collection", "cli-docs")
    assert_one_line_error(code, err, "zeroentropy/zerank-2", "--model /path/to/zerank-2", "make-test-model")


# -- Chroma server ---------------------------------------------------------------------------------------


def test_ingest_and_search_through_chroma_server(
    capsys: pytest.CaptureFixture[str], chroma_server: str, docs_dir: Path, checkpoint_dir: Path
) -> None:
    code, out, _ = run(capsys, "ingest", docs_dir, "--chroma-url", chroma_server, "--collection", "srv-docs")
    n = ChromaStore.open("srv-docs", url=chroma_server).count()
    assert code == 0 and f"{n} added" in out and chroma_server in out
    code, out, _ = run(capsys, "ingest", docs_dir, "--chroma-url", chroma_server, "--collection", "srv-docs")
    assert code == 0 and f"{n} unchanged; {n} in the collection" in out
    args = ["search", "crystalline lens", "--chroma-url", chroma_server, "--collection", "srv-docs", "--json"]
    code, out, _ = run(capsys, *args, "--model", checkpoint_dir, "--top-k", "6", "--top-n", "2")
    assert code == 0
    payload = json.loads(out)
    expected = ChromaStore.open("srv-docs", url=chroma_server).search("crystalline lens", 6)
    assert [r["id"] for r in payload["retrieved"]] == [h.id for h in expected]
    assert {r["id"] for r in payload["reranked"]} <= {h.id for h in expected}
    code, _, err = run(capsys, "search", "q", "--chroma-url", chroma_server, "--collection", "absent", "--no-rerank")
    assert_one_line_error(code, err, "collection 'absent' does not exist", "'srv-docs'")


# -- eval and demo ---------------------------------------------------------------------------------------


def test_demo_prints_before_after_and_tokens(
    capsys: pytest.CaptureFixture[str], med_chroma: Path, checkpoint_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "model").mkdir()
    shutil.copytree(checkpoint_dir, tmp_path / "model", dirs_exist_ok=True)
    (tmp_path / "model" / "RANDOM_WEIGHTS.txt").write_text("random")
    args = ["demo", "--chroma-path", med_chroma, "--model", tmp_path / "model", "--max-queries", "3"]
    code, out, _ = run(capsys, *args, "--top-k", "10", "--top-n", "3", "--out", tmp_path / "out")
    assert code == 0
    assert "demo: 1,033 MED abstracts, 30 judged queries" in out
    assert out.count("random-weight test model") == 1  # said once, where the results are
    assert "RANDOM WEIGHTS" in (tmp_path / "out" / "eval.md").read_text()
    for label in ("NDCG@10", "Recall@10", "Recall@100", "MRR@10"):
        assert f"| {label} | " in out
    data = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert data["queries"] == 3
    assert f"| tokens saved | {data['tokens']['tokens_saved']:,} (" in out
    assert data["tokens"]["kept"] == 9 and data["tokens"]["candidates"] == 30


def test_eval_writes_the_report(
    capsys: pytest.CaptureFixture[str], med_chroma: Path, datasets_dir: Path, checkpoint_dir: Path, tmp_path: Path
) -> None:
    args = ["eval", "--beir", datasets_dir / "med", "--collection", DEMO_COLLECTION, "--chroma-path", med_chroma]
    args += ["--model", checkpoint_dir, "--out", tmp_path, "--max-queries", "4", "--top-k", "10", "--top-n", "2"]
    code, out, _ = run(capsys, *args, "--score-threshold", "0.2", "--max-prompt-tokens", "700")
    assert code == 0
    data = json.loads((tmp_path / "eval.json").read_text())
    assert {"retrieval", "rerank", "kept", "tokens", "queries", "retriever", "reranker", "selection", "machine"} <= set(
        data
    )
    assert data["selection"] == {"score_threshold": 0.2, "top_n": 2, "max_prompt_tokens": 700}
    assert data["reranker"]["model"] == str(checkpoint_dir)
    assert "Chroma collection 'zerank-demo-med'" in data["retriever"]["description"]
    assert data["tokens"]["tokens_kept"] <= 4 * 700
    assert data["queries"] == 4
    assert set(data["retrieval"]) == set(data["rerank"]) == {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert data["rerank"]["recall@100"] == pytest.approx(data["retrieval"]["recall@100"])
    assert 0 < data["tokens"]["tokens_kept"] <= data["tokens"]["tokens_in"]
    assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "| NDCG@10 |" in (tmp_path / "eval.md").read_text()
    assert f"wrote {tmp_path / 'eval.json'}" in out


def test_eval_refuses_a_foreign_collection_before_writing(
    capsys: pytest.CaptureFixture[str], ingested: Path, datasets_dir: Path, tmp_path: Path, checkpoint_dir: Path
) -> None:
    """Evaluating into the user's own collection must not first pour 1,033 MED abstracts into it."""
    before = sorted(ChromaStore.open("cli-docs", path=ingested).ids())
    args = ["eval", "--beir", datasets_dir / "med", "--collection", "cli-docs", "--chroma-path", ingested]
    code, _, err = run(capsys, *args, "--model", checkpoint_dir, "--out", tmp_path / "out")
    assert_one_line_error(code, err, "collection 'cli-docs' holds 13 documents that are not in", "nothing was written")
    store = ChromaStore.open("cli-docs", path=ingested)
    assert sorted(store.ids()) == before and len(store.document_ids()) == 13


def test_eval_checks_the_report_folder_first(
    capsys: pytest.CaptureFixture[str], datasets_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "report"
    args = ["eval", "--beir", datasets_dir / "med", "--chroma-path", tmp_path / "db", "--out", out]
    code, _, err = run(capsys, *args, "--model", tmp_path / "unused")
    assert_one_line_error(code, err, f"cannot write the report to {out}")
    assert not (tmp_path / "db").exists()  # failed before any Chroma or embedding work


def test_a_wrong_model_fails_before_any_ingest(
    capsys: pytest.CaptureFixture[str], datasets_dir: Path, tmp_path: Path
) -> None:
    for command in (["demo"], ["eval", "--beir", datasets_dir / "med", "--out", tmp_path / "out"]):
        code, _, err = run(capsys, *command, "--chroma-path", tmp_path / "db", "--model", "no-such-org/no-such-model")
        assert_one_line_error(code, err, "no-such-org/no-such-model", "make-test-model")
        assert not (tmp_path / "db").exists()  # failed before Chroma was touched or anything embedded


@pytest.mark.parametrize("name", ["q", "my docs"])
def test_collection_names_are_checked_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], docs_dir: Path, tmp_path: Path, name: str
) -> None:
    for command in (["ingest", docs_dir], ["search", "lens", "--no-rerank"], ["demo", "--model", tmp_path / "unused"]):
        code, _, err = run(capsys, *command, "--chroma-path", tmp_path / "db", "--collection", name)
        assert_one_line_error(code, err, f"invalid collection name {name!r}", "3-512 characters of letters, digits")
    assert not (tmp_path / "db").exists()


def test_progress_lines_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    med_chroma: Path,
    checkpoint_dir: Path,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(progress, "INTERVAL_S", 0.02)
    args = ["demo", "--chroma-path", med_chroma, "--model", checkpoint_dir, "--max-queries", "2", "--top-k", "5"]
    code, _out, err = run(capsys, *args)
    assert code == 0
    lines = err.splitlines()
    assert any(line.startswith("rerank: ") and "/2 queries (" in line for line in lines), err
    assert "rerank: 2/2 queries (100%)" in err
    assert any(line.startswith(f"ingest {DEMO_COLLECTION}: ") and "/1,033 documents" in line for line in lines), err
    assert "Loading weights" not in err and "\r" not in err  # no progress bars drawn into a pipe


def test_closed_output_pipe_is_not_a_traceback(ingested: Path) -> None:
    """`zerank-integrations search ... | head -1`: the reader leaves early; no traceback, no stray error."""
    script = shutil.which("zerank-integrations", path=str(BIN)) or shutil.which("zerank-integrations")
    assert script is not None, "console script not installed (pip install -e .)"
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first write fails with EPIPE
    try:
        proc = subprocess.run(
            [script, "search", "lens", "--chroma-path", str(ingested), "--collection", "cli-docs", "--no-rerank"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ""


# -- serve and make-test-model ---------------------------------------------------------------------------


def test_serve_help_comes_from_the_serving_module(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "serve", "--help")
    assert code == 0
    assert "usage: zerank-integrations serve" in out and "--port" in out


def test_serve_without_server_extra() -> None:
    """In a fresh interpreter where FastAPI cannot be imported (as without the extra); keeps this one clean."""
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from zerank_integrations.cli import main\n"
        "sys.exit(main(['serve', '--port', '9']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_one_line_error(
        proc.returncode, proc.stderr, "needs the server extra", "pip install 'zerank-integrations[server]'"
    )


def test_make_test_model(capsys: pytest.CaptureFixture[str], tmp_path: Path, qwen3_tokenizer_dir: Path) -> None:
    code, out, _ = run(capsys, "make-test-model", tmp_path / "m", "--tokenizer", qwen3_tokenizer_dir)
    assert code == 0 and "MEANINGLESS" in out
    assert {"config.json", "model.safetensors", "tokenizer.json", "RANDOM_WEIGHTS.txt"} <= {
        p.name for p in (tmp_path / "m").iterdir()
    }
    code, _, err = run(capsys, "make-test-model", tmp_path / "n", "--tokenizer", tmp_path)
    assert_one_line_error(code, err, "does not hold a Qwen3 tokenizer")


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("ingest", "search", "eval", "demo", "serve", "make-test-model"):
        assert command in out


def test_console_script_subprocess(tmp_path: Path) -> None:
    script = shutil.which("zerank-integrations", path=str(BIN)) or shutil.which("zerank-integrations")
    assert script is not None, "console script not installed (pip install -e .)"
    (tmp_path / "beir").mkdir()
    (tmp_path / "beir" / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": 2, "text": [1]}\n')
    proc = subprocess.run(
        [script, "ingest", str(tmp_path / "beir"), "--chroma-path", str(tmp_path / "db")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert_one_line_error(proc.returncode, proc.stderr, "corpus.jsonl:2: 'text' must be a string, got list")
