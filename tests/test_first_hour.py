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


def test_offline_search_without_a_model_says_it_in_one_line(med_chroma: Path, tmp_path: Path) -> None:
    """The default model, not cached, with the Hub out of reach (a closed loopback port): one line, no warning
    before it, and the advice given once."""
    import socket

    from zerank_integrations.cli import DEMO_COLLECTION

    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed}", HF_HOME=str(tmp_path / "hf-home"))
    command = [sys.executable, "-m", "zerank_integrations.cli", "search", "what causes scurvy?"]
    command += ["--chroma-path", str(med_chroma), "--collection", DEMO_COLLECTION]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    (line,) = lines
    assert line.startswith("zerank-integrations: error: could not load reranker model 'zeroentropy/zerank-2-reranker'")
    assert "the Hugging Face Hub cannot be reached" in line and "trying the local cache" not in line
    assert line.count("--model") == 1 and "make-test-model DIR" in line


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


# -- ingest: the documents people have --------------------------------------------------------------------------


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A minimal valid PDF (Helvetica text, one line per page) written by hand: no PDF library involved."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        page_no, content_no = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_no} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R "
            f"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(out)
    return path


HTML_PAGE = """<!doctype html><html><head><title>Eye  anatomy</title><style>p {color: red}</style>
<script>var lens = "not text";</script></head><body><nav>Home</nav><h1>The lens</h1>
<p>The crystalline lens focuses light&nbsp;on the retina.</p><ul><li>Cornea</li><li>Iris</li></ul></body></html>"""


def test_readers_extract_html_and_pdf_text(tmp_path: Path) -> None:
    from zerank_integrations.retrieval.readers import read_file

    (tmp_path / "eye.html").write_text(HTML_PAGE, encoding="utf-8")
    title, text = read_file(tmp_path / "eye.html")
    assert title == "Eye anatomy"
    # no <main>: the body is walked without its <nav>; headings and list items keep their structure
    assert text == "# The lens\n\nThe crystalline lens focuses light on the retina.\n\n- Cornea\n- Iris"
    assert "not text" not in text and "color" not in text
    pdf = write_pdf(tmp_path / "scurvy.pdf", ["Scurvy is caused by a lack of vitamin C.", "Second page here."])
    assert read_file(pdf) == ("", "Scurvy is caused by a lack of vitamin C.\n\nSecond page here.")


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "mixed"
    (folder / "web").mkdir(parents=True)
    (folder / "notes.txt").write_text("Cataract is a clouding of the lens.", encoding="utf-8")
    (folder / "web" / "eye.html").write_text(HTML_PAGE, encoding="utf-8")
    write_pdf(folder / "scurvy.pdf", ["Scurvy is caused by a lack of vitamin C."])
    write_pdf(folder / "scan.pdf", [""])  # no text layer
    (folder / "table.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (folder / "more.csv").write_text("a,b\n", encoding="utf-8")
    (folder / "slides.docx").write_bytes(b"PK\x03\x04")
    return folder


def test_ingest_reads_pdf_and_html_and_says_what_it_skipped(
    capsys: pytest.CaptureFixture[str], mixed_folder: Path, tmp_path: Path
) -> None:
    from zerank_integrations.retrieval import ChromaStore

    chroma = tmp_path / "chroma"
    code, out, err = run(capsys, "ingest", mixed_folder, "--chroma-path", chroma, "--collection", "mixed")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("ingested 3 documents")
    assert lines[1] == (
        "skipped 4 files: 2 .csv, 1 .docx (not a supported type: .txt, .md, .markdown, .html, .htm, .pdf); "
        "1 .pdf (no text (a scanned PDF needs OCR first))"
    )
    stored = ChromaStore.open("mixed", path=chroma).collection.get()
    by_id = dict(zip(stored["ids"], stored["documents"], strict=True))
    assert sorted(by_id) == ["notes.txt", "scurvy.pdf", "web/eye.html"]
    assert by_id["scurvy.pdf"] == "Scurvy is caused by a lack of vitamin C."
    assert by_id["web/eye.html"].startswith("Eye anatomy\n# The lens\n")
    # a single file is accepted as well as a folder; its id is its name
    code, out, err = run(capsys, "ingest", mixed_folder / "scurvy.pdf", "--chroma-path", chroma, "--collection", "one")
    assert code == 0, err
    assert "ingested 1 documents" in out and "1 added" in out
    assert ChromaStore.open("one", path=chroma).collection.get()["ids"] == ["scurvy.pdf"]


def test_ingest_file_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], mixed_folder: Path, tmp_path: Path
) -> None:
    for path, expected in [
        (mixed_folder / "table.csv", "table.csv: not a supported file type (supported: .txt, .md"),
        (mixed_folder / "scan.pdf", "scan.pdf: no text (a scanned PDF needs OCR first)"),
    ]:
        code, _, err = run(capsys, "ingest", path, "--chroma-path", tmp_path / "c")
        assert code == 1 and err.count("\n") == 1 and expected in err, err


def test_pdf_without_pypdf_is_skipped_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, mixed_folder: Path
) -> None:
    from zerank_integrations.retrieval import CorpusError, read_documents

    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if the [pdf] extra were not installed
    documents, skipped = read_documents(mixed_folder)
    assert sorted(d.id for d in documents) == ["notes.txt", "web/eye.html"]
    assert "2 .pdf (needs pypdf: pip install 'zerank-integrations[pdf]')" in skipped.describe()
    with pytest.raises(CorpusError, match=r"scurvy\.pdf: reading \.pdf files needs pypdf: pip install"):
        read_documents(mixed_folder / "scurvy.pdf")


def test_ingest_progress_moves_per_document(tmp_path: Path) -> None:
    """Progress is reported as each document is stored, not once per 256-document batch."""
    from zerank_integrations.retrieval import ChromaStore, Document

    docs = [Document(id=str(i), text=f"document number {i} about the lens of the eye") for i in range(70)]
    store = ChromaStore.open("progress", path=tmp_path / "chroma", create=True)
    steps: list[int] = []
    store.upsert(docs, progress=steps.append)
    assert sum(steps) == 70
    assert len(steps) >= 3 and max(steps) <= store.embedder.batch_size
    again: list[int] = []
    store.upsert(docs, progress=again.append)  # nothing to embed: all done at once
    assert again == [70]


# -- what README shows ------------------------------------------------------------------------------------------


def test_percent_saved_is_rounded_as_readme_shows() -> None:
    from zerank_integrations import TokenLedger

    ledger = TokenLedger(encoding="o200k_base")
    candidates = ["a b c d e f g", " h", "ij k l"]  # 13 tokens, 6 saved: 46.153846...
    saving = ledger.record("q", candidates, candidates[:1])
    exact = 100 * saving.tokens_saved / saving.tokens_in
    assert exact != round(exact, 2)  # the inputs do give a long fraction
    assert saving.percent_saved == round(exact, 2) == ledger.summary()["percent_saved"]
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    shown = readme.split("ledger.summary()\n# ", 1)[1].split("}", 1)[0]
    tokens_in = int(shown.split("'tokens_in': ", 1)[1].split(",")[0])
    saved = int(shown.split("'tokens_saved': ", 1)[1].split(",")[0])
    percent = shown.split("'percent_saved': ", 1)[1].split(",")[0]
    assert percent == repr(round(100 * saved / tokens_in, 2))  # README's example is what the ledger prints
    cost = float(shown.split("'cost_saved_usd': ", 1)[1].split(",")[0])
    assert cost == saved * 2.5 / 1_000_000


# -- the command line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["ingest", "docs", "--chunksize", "256"], "--chunksize -> --chunk-size"),
        (["search", "q", "--top_n", "2"], "--top_n -> --top-n"),
    ],
)
def test_flag_typo_prints_the_subcommands_usage_and_a_close_match(
    capsys: pytest.CaptureFixture[str], args: list[str], hint: str
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith(f"usage: zerank-integrations {args[0]} ")  # the subcommand's usage, not the top level
    assert f"zerank-integrations {args[0]}: error: unrecognized arguments: " in err
    assert f"(did you mean: {hint}?)" in err


def test_subcommand_typo_gets_a_close_match(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ingset", "docs")
    assert code == 2 and "invalid choice: 'ingset'" in err and "did you mean 'ingest'?" in err


def test_empty_question_without_reranker_does_not_blame_a_reranker(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "search", "  ", "--no-rerank", "--chroma-path", tmp_path)
    assert code == 1 and err.count("\n") == 1
    assert "query is empty or whitespace-only; a search needs a question to retrieve for" in err
    assert "reranker" not in err


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eval", "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "(default: beir-<name of the --beir folder>, or an existing collection holding exactly that corpus" in flat
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Cohere, Voyage, Jina, TEI, Mixedbread, ZeroEntropy and vLLM" in " ".join(out.split())


def test_serve_help_lists_every_route(capsys: pytest.CaptureFixture[str]) -> None:
    from zerank_integrations.serving.dialects import DIALECTS

    code, out, _ = run(capsys, "serve", "--help")
    flat = " ".join(out.split())
    assert code == 0 and len(DIALECTS) >= 5
    for dialect in DIALECTS:
        assert f"POST {dialect.path} ({dialect.summary})" in flat
    assert all(route in flat for route in ("/health", "/ready", "/metrics", "/v1/models"))
    code, out, _ = run(capsys, "--help")
    assert "Cohere v1/v2, Jina, Voyage, vLLM, TEI, Mixedbread, ZeroEntropy" in " ".join(out.split())


def test_eval_reuses_an_identical_collection(
    capsys: pytest.CaptureFixture[str], med_chroma: Path, datasets_dir: Path, checkpoint_dir: Path
) -> None:
    """``demo``'s MED collection holds the same texts and vectors: ``eval --beir med`` embeds nothing again."""
    from zerank_integrations.cli import DEMO_COLLECTION
    from zerank_integrations.retrieval import connect

    before = sorted(c.name for c in connect(path=med_chroma).list_collections())
    args = ["eval", "--beir", datasets_dir / "med", "--out", med_chroma.parent / "eval-reuse", "--model"]
    args += [checkpoint_dir, "--chroma-path", med_chroma, "--max-queries", "2", "--top-k", "10"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert f"reusing collection {DEMO_COLLECTION!r}" in out
    assert sorted(c.name for c in connect(path=med_chroma).list_collections()) == before
    assert "beir-med" not in before


def test_readme_cohere_snippet_runs_against_a_server_without_auth(
    checkpoint_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's Cohere block, exactly as printed but for the port, with no key in the environment."""
    import re

    from _processes import free_port, running_service

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("\n```", 1)[0] for b in readme.split("```python\n")[1:]]
    (block,) = [b for b in blocks if "cohere.ClientV2(" in b]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ZERANK_API_KEY"}
    command = [sys.executable, "-m", "zerank_integrations.cli", "serve", "--model", str(checkpoint_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    monkeypatch.delenv("ZERANK_API_KEY", raising=False)
    with running_service(command, f"http://127.0.0.1:{port}/ready", tmp_path / "serve.log", env=env):
        namespace: dict[str, object] = {}
        exec(re.sub(r"http://localhost:8000", f"http://127.0.0.1:{port}", block), namespace)
        reply = namespace["co"].rerank(model="m", query="lens?", documents=["The lens.", "Paris."], top_n=1)  # type: ignore[attr-defined]
        assert len(reply.results) == 1
