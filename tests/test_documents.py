"""Documents as people bring them: clean HTML text, redirect stubs, duplicates, small-to-big chunks, progress.

The end-to-end test ingests real Rust-book pages (copied at test time from the rustup toolchain's docs; skipped
with the reason when no toolchain docs are on the machine) into a real Chroma database through the CLI.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from zerank_integrations.cli.main import main as cli_main
from zerank_integrations.cli.progress import Progress
from zerank_integrations.retrieval import ChromaStore, ChunkingPolicy, Document, SentenceTransformerEmbedder
from zerank_integrations.retrieval.chunking import chunk_documents, section_starts
from zerank_integrations.retrieval.corpus import read_documents, selected
from zerank_integrations.retrieval.dedup import DedupReport, dedupe_chunks, dedupe_documents, paragraphs
from zerank_integrations.retrieval.readers import RedirectPage, html_text

CHROME = ("Keyboard shortcuts", "to navigate between chapters", "Search this book", "Auto Light Rust Coal Navy Ayu")


def _book() -> Path | None:
    found = sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/book")))
    return Path(found[0]) if found else None


BOOK = _book()
needs_book = pytest.mark.skipif(
    BOOK is None, reason="no Rust book under ~/.rustup/toolchains/*/share/doc/rust/html (install a rustup toolchain)"
)

# -- HTML text ----------------------------------------------------------------------------------------------

PAGE = """<html><head><title>Slices - A Book</title><style>p {}</style></head><body>
<div id="help"><h2>Keyboard shortcuts</h2><p>Press <kbd>?</kbd> to show this help</p></div>
<nav class="sidebar"><ol><li><a href="a.html">Chapter 1</a></li></ol></nav>
<main><h1 id="s"><a class="header" href="#s">The Slice Type</a></h1>
<p>A <em>slice</em> lets you   reference a run of elements.</p>
<pre><code>fn first_word(s: &amp;String) -&gt; usize {
    let bytes = s.as_bytes();
        // nested
}
</code></pre>
<h2>String Slices</h2><ul><li>one</li><li>two</li></ul>
<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>
<button>Copy</button></main>
<nav class="nav-wrapper"><a rel="next" href="b.html">Next chapter</a></nav></body></html>"""


def test_html_keeps_main_content_headings_and_code_whitespace() -> None:
    title, text = html_text(PAGE)
    assert title == "Slices - A Book"
    assert text == (
        "# The Slice Type\n\n"
        "A slice lets you reference a run of elements.\n\n"
        "```\n"
        "fn first_word(s: &String) -> usize {\n"
        "    let bytes = s.as_bytes();\n"
        "        // nested\n"
        "}\n"
        "```\n\n"
        "## String Slices\n\n"
        "- one\n"
        "- two\n\n"
        "a | b\n"
        "1 | 2"
    )


def test_page_without_main_drops_navigation_and_redirects_are_named(tmp_path: Path) -> None:
    page = PAGE.replace("<main>", "<div>").replace("</main>", "</div>")
    _, text = html_text(page)
    assert "Chapter 1" not in text and "Next chapter" not in text and "first_word" in text
    stub = '<html><head><meta http-equiv="refresh" content="0; URL=ch18-02.html"></head><body>Redirecting</body>'
    with pytest.raises(RedirectPage, match=r"stub\.html: a redirect to ch18-02\.html, not a document"):
        html_text(stub, "stub.html")
    (tmp_path / "stub.html").write_text(stub)
    (tmp_path / "page.html").write_text(PAGE)
    (tmp_path / "print.html").write_text(PAGE)
    docs, skipped = read_documents(tmp_path, exclude=["print.html"])
    assert [d.id for d in docs] == ["page.html"]
    assert "1 .html (redirect stubs (meta refresh), not documents: stub.html -> ch18-02.html)" in skipped.describe()
    assert "1 .html (excluded by --exclude/--include)" in skipped.describe()


def test_include_and_exclude_globs() -> None:
    assert selected("book/print.html", exclude=["print.html"]) is False
    assert selected("book/first-edition/a.html", exclude=["book/first-edition/*"]) is False
    assert selected("book/ch01.html", exclude=["book/first-edition/*"]) is True
    assert selected("book/ch01.html", include=["*.pdf"]) is False
    assert selected("notes/a.pdf", include=["*.pdf"], exclude=["notes/*"]) is False  # exclude wins


# -- duplicates ---------------------------------------------------------------------------------------------

LONG = [f"Paragraph {i} says something long enough to count as a passage of its own, number {i}." for i in range(6)]
NOTICE = "The 2018 edition of the book is no longer distributed with Rust's documentation, see the current one."


def test_documents_made_of_others_and_boilerplate_are_stored_once() -> None:
    chapters = [
        Document(id=f"ch{i}.html", text=f"# Chapter {i}\n\n{LONG[2 * i]}\n\n{LONG[2 * i + 1]}") for i in range(3)
    ]
    whole = Document(id="print.html", text="\n\n".join(d.text for d in chapters))
    old = [Document(id=f"old/p{i}.html", text=f"# Old {i}\n\n{NOTICE}\n\nOld page {i}: {LONG[i]}") for i in range(3)]
    stubs = [Document(id=f"old/s{i}.html", text=f"# Stub {i}\n\n{NOTICE}") for i in range(2)]
    mirror = Document(id="mirror/deep/ch0.html", text=chapters[0].text)
    report = DedupReport()
    kept = dedupe_documents([whole, *chapters, *old, *stubs, mirror], report)
    assert [d.id for d in kept] == ["ch0.html", "ch1.html", "ch2.html", "old/p0.html", "old/p1.html", "old/p2.html"]
    assert report.documents["print.html"] == "its passages are in other pages: 6/6 paragraphs"
    assert report.documents["old/s0.html"] == "its passages are in other pages: 1/1 paragraphs"
    assert set(report.documents) == {"print.html", "mirror/deep/ch0.html", "old/s0.html", "old/s1.html"}
    # the notice stays on the first page that has it and leaves the others; their own text stays
    assert kept[3] == old[0] and kept[4].text == f"# Old 1\n\nOld page 1: {LONG[1]}" and NOTICE not in kept[5].text
    described = report.describe()
    assert "dropped 4 documents (its passages are in other pages): print.html, mirror/deep/ch0.html" in described
    assert "removed 2 repeats of 1 boilerplate paragraph(s)" in described


def test_identical_and_near_identical_chunks_are_dropped() -> None:
    from zerank_integrations.retrieval.chunking import Chunk

    doc = Document(id="d", text="x")
    base = " ".join(f"word{i}" for i in range(60))
    texts = [base, base.upper(), base.replace("word59", "other"), "something else entirely, not like the others"]
    chunks = [Chunk(f"d#{k}", doc, t, 0, 1, k, 4) for k, t in enumerate(texts)]
    report = DedupReport()
    kept = dedupe_chunks(chunks, report)
    assert [c.id for c in kept] == ["d#0", "d#3"]
    assert report.chunks == {"d#1": "identical to d#0", "d#2": "near-identical to d#0"}


def test_paragraphs_keep_code_fences_whole() -> None:
    text = "intro\n\n```\nfn a() {\n\n    b();\n}\n```\nafter"
    parts = [(text[s:e], code) for s, e, code in paragraphs(text)]
    assert parts == [("intro", False), ("```\nfn a() {\n\n    b();\n}\n```", True), ("after", False)]


# -- chunks that fit every reader ---------------------------------------------------------------------------


def test_chunks_fit_the_embedder_and_carry_their_section_as_context() -> None:
    embedder = SentenceTransformerEmbedder()
    assert embedder.max_tokens == 254  # all-MiniLM-L6-v2: max_seq_length 256 less [CLS] and [SEP]
    sections = []
    for s in range(4):
        body = "\n\n".join(f"Sentence {s}.{i} about borrowing rules and the lifetime of references." for i in range(25))
        sections.append(f"## Section {s}\n\n{body}\n\n```\nfn main() {{\n    let x = {s};\n}}\n```")
    doc = Document(id="book.md", title="Ownership", text="\n\n".join(sections))
    policy = ChunkingPolicy().fit(embedder.max_tokens)
    assert (policy.size, policy.overlap, policy.context) == (254, 31, 512)
    [chunks] = chunk_documents([doc], policy, embedder.token_spans)
    content = doc.content
    tokenizer = embedder.model.tokenizer
    starts = section_starts(content)
    assert len(starts) == 4
    held: dict[str, int] = {}
    for chunk in chunks:
        assert chunk.text == content[chunk.start : chunk.end]
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 254
        meta = chunk.metadata
        c_start, c_end = meta["context_start"], meta["context_end"]
        assert c_start <= chunk.start and chunk.end <= c_end  # the context encloses the chunk
        assert len(tokenizer(content[c_start:c_end], add_special_tokens=False)["input_ids"]) <= 512
        assert c_start in starts or c_start == 0  # contexts begin at a section
        if "context_text" in meta:
            assert meta["context_text"] == content[c_start:c_end]
            held[str(meta["context"])] = held.get(str(meta["context"]), 0) + 1
    assert set(held.values()) == {1}  # each context's text stored once
    assert set(held) == {c.metadata["context"] for c in chunks}
    # a document that fits stays whole, with its own id and no context
    [[single]] = chunk_documents([Document(id="s", text="short")], policy, embedder.token_spans)
    assert (single.id, single.text, single.context) == ("s", "short", {})
    with pytest.raises(ValueError, match=r"call policy\.fit"):
        chunk_documents([doc], ChunkingPolicy(), embedder.token_spans)


def test_progress_counts_chunks_with_rate_and_eta() -> None:
    out = io.StringIO()
    with Progress(None, "ingest docs", "chunk", stream=out, interval=0.05) as bar:
        time.sleep(0.12)
        bar.advance_to(0, 100)
        bar.advance_to(40, 100)
        time.sleep(0.12)
        bar.advance_to(100, 100)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ingest docs: working")
    assert any(
        re.fullmatch(r"ingest docs: 40/100 chunks \(40%\), \d+ s, [\d.,]+ chunks/s, ETA \d+ s", x) for x in lines
    )
    assert lines[-1].startswith("ingest docs: 100/100 chunks (100%)")


# -- the Rust book, end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def book_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real pages of the Rust book, a redirect stub, old-edition stubs and a print.html made of the pages."""
    assert BOOK is not None
    folder = tmp_path_factory.mktemp("book")
    pages = ["ch04-02-references-and-borrowing.html", "ch03-04-comments.html", "ch14-04-installing-binaries.html"]
    for name in pages:
        shutil.copy(BOOK / name, folder / name)
    shutil.copy(BOOK / "ch17-02-trait-objects.html", folder / "ch17-02-trait-objects.html")  # a redirect stub
    (folder / "2018-edition").mkdir()
    for name in ["ch01-01-installation.html", "ch01-02-hello-world.html", "ch03-04-comments.html"]:
        shutil.copy(BOOK / "2018-edition" / name, folder / "2018-edition" / name)
    mains = [re.search(r"<main>.*?</main>", (BOOK / n).read_text(), re.S).group(0) for n in pages]  # type: ignore[union-attr]
    (folder / "print.html").write_text(f"<html><head><title>Book</title></head><body>{''.join(mains)}</body></html>")
    return folder


@needs_book
def test_rust_book_pages_ingest_clean_once_and_small_to_big(
    book_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    chroma = tmp_path / "chroma"
    assert cli_main(["ingest", str(book_copy), "--chroma-path", str(chroma), "--collection", "book"]) == 0
    out = capsys.readouterr().out
    assert "ch17-02-trait-objects.html -> ch18-02-trait-objects.html" in out  # the stub, named
    # print.html first (the largest), then the old-edition stubs but the first
    assert "dropped 3 documents (its passages are in other pages): print.html, 2018-edition/" in out
    store = ChromaStore.open("book", path=chroma)
    stored = store.collection.get(include=["documents", "metadatas"])
    docs = {m["doc_id"] for m in stored["metadatas"]}
    assert docs == {
        "ch04-02-references-and-borrowing.html",
        "ch03-04-comments.html",
        "ch14-04-installing-binaries.html",
        "2018-edition/ch03-04-comments.html",  # the notice, kept once (the shortest path of the copies)
    }
    texts = stored["documents"]
    assert not [t for t in texts if any(c in t for c in CHROME)]
    normalised = [" ".join(t.lower().split()) for t in texts]
    assert len(set(normalised)) == len(normalised)  # no passage twice
    code = "    let r1 = &mut s;"  # indented inside its <pre> on the borrowing page
    assert any(code in t.splitlines() for t in texts)
    hit = store.search("how do I borrow a value mutably?", 3)[0]
    assert hit.doc_id == "ch04-02-references-and-borrowing.html"
    assert hit.matched and hit.matched in hit.content and len(hit.content) > len(hit.matched)
    assert hit.span is not None and hit.matched_span is not None
    assert hit.span[0] <= hit.matched_span[0] and hit.matched_span[1] <= hit.span[1]
    # re-ingest of unchanged files writes nothing
    assert cli_main(["ingest", str(book_copy), "--chroma-path", str(chroma), "--collection", "book"]) == 0
    again = capsys.readouterr().out
    assert f"0 added, 0 updated, {len(texts):,} unchanged" in again
    # search --json shows the context handed on and the chunk that matched
    assert cli_main(["search", "how do I borrow a value mutably?", "--chroma-path", str(chroma), "--collection",
                     "book", "--no-rerank", "--json"]) == 0  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    first = payload["retrieved"][0]
    assert first["document"] == "ch04-02-references-and-borrowing.html" and first["matched"] in first["text"]
    # --interactive: one JSON answer per line of standard input, blank lines skipped
    monkeypatch.setattr("sys.stdin", io.StringIO("how do I borrow a value mutably?\n\nhow do I write a comment?\n"))
    assert cli_main(["search", "--interactive", "--chroma-path", str(chroma), "--collection", "book",
                     "--no-rerank", "--json"]) == 0  # fmt: skip
    answers = [json.loads(part) for part in capsys.readouterr().out.replace("}\n{", "}\0{").split("\0")]
    assert [a["query"] for a in answers] == ["how do I borrow a value mutably?", "how do I write a comment?"]
    assert answers[1]["retrieved"][0]["document"] == "ch03-04-comments.html"


def test_pdf_running_headers_and_footers_are_dropped() -> None:
    from zerank_integrations.retrieval.readers import without_running_lines

    topics = ["rotating keys", "audit logs", "backups", "access reviews", "incident response"]
    pages = [
        f"ACME Handbook 2026\n{topic.title()}\nHow we handle {topic}.\nAsk the {topic} owner.\n- {i} -"
        for i, topic in enumerate(topics, start=1)
    ]
    kept = without_running_lines(pages)
    assert kept[0] == "Rotating Keys\nHow we handle rotating keys.\nAsk the rotating keys owner."
    assert all("ACME Handbook" not in p and not p.endswith("-") for p in kept)
    assert without_running_lines(pages[:2]) == pages[:2]  # two pages say nothing about what repeats


# -- adapters: small to big ---------------------------------------------------------------------------------


def test_llama_index_scores_and_returns_sentence_windows(scorer: object) -> None:
    from llama_index.core import Document as LlamaDocument
    from llama_index.core.node_parser import SentenceWindowNodeParser
    from llama_index.core.schema import NodeWithScore, QueryBundle

    from zerank_integrations.llama_index import ZerankRerank

    text = (
        "Ownership is a set of rules. Each value has an owner. There can only be one owner at a time. "
        "When the owner goes out of scope, the value is dropped. References borrow a value without owning it. "
        "A mutable reference allows changing the borrowed value. You can have only one mutable reference at a time."
    )
    parser = SentenceWindowNodeParser.from_defaults(window_size=1)
    nodes = [NodeWithScore(node=n, score=0.5) for n in parser.get_nodes_from_documents([LlamaDocument(text=text)])]
    nodes.append(NodeWithScore(node=nodes[0].node.model_copy(deep=True), score=0.1))  # the same window again
    before = [n.node.model_copy(deep=True) for n in nodes]
    reranker = ZerankRerank(scorer=scorer, context_key="window", top_n=None)
    query = "how many mutable references can I have?"
    out = reranker.postprocess_nodes(nodes, query_bundle=QueryBundle(query))
    windows = list(dict.fromkeys(n.node.metadata["window"] for n in nodes))
    assert sorted(n.node.get_content() for n in out) == sorted(windows)  # each window once, as the text
    expected = dict(zip(windows, scorer.score(query, windows), strict=True))  # type: ignore[attr-defined]
    for item in out:
        assert item.score == pytest.approx(expected[item.node.get_content()], abs=1e-6)
        matched = item.node.metadata["matched_text"]
        assert matched in item.node.get_content() and "matched_text" in item.node.excluded_llm_metadata_keys
    assert [n.node.get_content() for n in nodes] == [n.get_content() for n in before]  # caller's nodes untouched


def test_langchain_scores_and_returns_the_parent_text(scorer: object) -> None:
    from langchain_core.documents import Document as LcDocument

    from zerank_integrations.langchain import ZerankRerank

    parents = ["Threads share data with Arc and Mutex.", "Channels send values between threads."]
    docs = [
        LcDocument(page_content="Arc and Mutex", metadata={"parent": parents[0], "id": 1}),
        LcDocument(page_content="Mutex", metadata={"parent": parents[0], "id": 2}),
        LcDocument(page_content="Channels", metadata={"parent": parents[1], "id": 3}),
        LcDocument(page_content="no parent here", metadata={"id": 4}),
    ]
    out = ZerankRerank(scorer=scorer, context_key="parent", top_n=None).compress_documents(docs, "share a counter")
    assert sorted(d.page_content for d in out) == sorted([*parents, "no parent here"])
    by_id = {d.metadata["id"]: d for d in out}
    assert set(by_id) == {1, 3, 4} and by_id[1].metadata["matched_text"] == "Arc and Mutex"
    assert "parent" not in by_id[1].metadata and "matched_text" not in by_id[4].metadata
    assert docs[0].metadata == {"parent": parents[0], "id": 1}  # the caller's document is untouched
