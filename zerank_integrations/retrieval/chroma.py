"""Chroma as the first stage: an embedded database by default, a Chroma server by URL.

Vectors are always computed here (by :class:`SentenceTransformerEmbedder`) and handed to Chroma, so
Chroma's own default embedding function, which downloads a model at run time, is never involved. Each
collection records the embedding model it was built with in its metadata; querying or extending it with
another model is refused, because similarities across two vector spaces are meaningless and fail silently.
Documents are stored as chunks (see :mod:`zerank_integrations.retrieval.chunking`): one per document unless
it is longer than the chunk size. chromadb is imported only when a store is opened.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from zerank_integrations.paths import user_data_dir
from zerank_integrations.retrieval.base import Hit
from zerank_integrations.retrieval.chunking import Chunk, ChunkingPolicy, chunk_documents, hold_contexts
from zerank_integrations.retrieval.corpus import Document
from zerank_integrations.retrieval.dedup import DedupReport, dedupe_chunks, dedupe_documents
from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder, canonical_model_name
from zerank_integrations.retrieval.errors import (
    ChromaConnectionError,
    CollectionNameError,
    CollectionNotFoundError,
    EmbedderMismatchError,
)

CHROMA_PATH_ENV = "ZERANK_CHROMA_PATH"
CHROMA_URL_ENV = "ZERANK_CHROMA_URL"
DEFAULT_COLLECTION = "zerank-docs"
EMBEDDING_MODEL_KEY = "zerank_embedding_model"
EMBEDDING_DIM_KEY = "zerank_embedding_dim"
_QUERY_CHUNK = 64
_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]")
_NAME_RULE = (
    "Chroma collection names are 3-512 characters of letters, digits, '.', '_' and '-', start and end with a "
    "letter or digit, hold no '..' and are not an IP address"
)


def validate_collection_name(name: object) -> str:
    """Return ``name`` if Chroma accepts it, else raise :class:`CollectionNameError` saying what is wrong."""
    if not isinstance(name, str):
        raise CollectionNameError(f"collection name must be a string, got {type(name).__name__}")
    problem = None
    if not 3 <= len(name) <= 512:
        problem = f"it has {len(name)} characters"
    elif not _NAME_CHARS.fullmatch(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        problem = (
            f"it contains {', '.join(repr(c) for c in bad)}"
            if bad
            else "it does not start and end with a letter or digit"
        )
    elif ".." in name:
        problem = "it contains '..'"
    else:
        try:
            ipaddress.ip_address(name)
            problem = "it is an IP address"
        except ValueError:
            pass
    if problem is not None:
        raise CollectionNameError(f"invalid collection name {name!r}: {problem}; {_NAME_RULE}")
    return name


def default_chroma_path() -> Path:
    """Where the embedded database lives: ``$ZERANK_CHROMA_PATH``, else the per-user data folder.

    Linux: ``$XDG_DATA_HOME/zerank-integrations/chroma`` (``~/.local/share/...``);
    macOS: ``~/Library/Application Support/zerank-integrations/chroma``;
    Windows: ``%LOCALAPPDATA%\\zerank-integrations\\chroma``.
    """
    env = os.environ.get(CHROMA_PATH_ENV)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "chroma"


def _settings() -> Any:
    from chromadb.config import Settings

    return Settings(anonymized_telemetry=False)


def connect(path: str | os.PathLike[str] | None = None, url: str | None = None) -> Any:
    """A Chroma client: ``HttpClient`` for ``url`` (or ``$ZERANK_CHROMA_URL``), else ``PersistentClient``.

    ``url`` looks like ``http://host:8000``; a server that does not answer is reported as a
    :class:`ChromaConnectionError` right here, not at the first query.
    """
    import chromadb

    if path is not None and url is not None:
        raise ValueError("give either a Chroma path or a Chroma URL, not both")
    url = url if url is not None or path is not None else os.environ.get(CHROMA_URL_ENV) or None
    if url:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChromaConnectionError(f"invalid Chroma URL {url!r}: expected http(s)://host:port")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 8000)
        except ValueError:
            raise ChromaConnectionError(f"invalid Chroma URL {url!r}: bad port") from None
        try:
            client = chromadb.HttpClient(
                host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=_settings()
            )
            client.heartbeat()
        except Exception as exc:
            raise ChromaConnectionError(
                f"cannot reach the Chroma server at {url} ({type(exc).__name__}: {exc}); "
                "start one with `chroma run --path DIR --port PORT`, or drop --chroma-url to use the local "
                "database"
            ) from None
        return client
    folder = Path(path).expanduser() if path is not None else default_chroma_path()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ChromaConnectionError(
            f"cannot create the Chroma folder {folder}: {exc.strerror or exc}; pass --chroma-path "
            f"or set ${CHROMA_PATH_ENV}"
        ) from None
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        raise ChromaConnectionError(f"cannot use the Chroma folder {folder}: permission denied")
    try:
        return chromadb.PersistentClient(path=str(folder), settings=_settings())
    except Exception as exc:
        raise ChromaConnectionError(f"cannot open the Chroma database at {folder}: {exc}") from None


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did, counted in chunks (stored passages).

    Re-ingesting unchanged documents counts their chunks ``unchanged`` and writes nothing; ``removed`` counts
    chunks of re-ingested documents that their new text no longer has.
    """

    added: int
    updated: int
    unchanged: int
    total: int
    documents: int = 0
    chunks: int = 0
    removed: int = 0
    stored_documents: int = 0  # after deduplication
    stored_chunks: int = 0
    #: seconds per step: dedupe, chunk (tokenising), compare (with what is stored), embed, write (Chroma)
    timings: dict[str, float] = field(default_factory=dict)


class ChromaStore:
    """One Chroma collection plus the embedder that fits it: upsert documents (as chunks), query by text.

    A :class:`~zerank_integrations.retrieval.Retriever`. Thread-safe for concurrent queries (Chroma clients
    are); ingests into the same store are serialised.
    """

    def __init__(self, client: Any, collection: Any, embedder: SentenceTransformerEmbedder) -> None:
        self.client = client
        self.collection = collection
        self.embedder = embedder
        self._write_lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.collection.name)

    @property
    def description(self) -> str:
        """For reports: ``Chroma collection 'x' (cosine, embedding model m)``."""
        return f"Chroma collection {self.name!r} (cosine, embedding model {self.embedder.model_name})"

    @classmethod
    def open(
        cls,
        name: str = DEFAULT_COLLECTION,
        *,
        client: Any | None = None,
        path: str | os.PathLike[str] | None = None,
        url: str | None = None,
        embedding_model: str | os.PathLike[str] | None = None,
        create: bool = False,
        device: str | None = None,
        embedding_quantization: str | None = None,
    ) -> ChromaStore:
        """Open (or with ``create=True`` create) a collection and check its embedding model.

        The name is checked first (:class:`CollectionNameError` says what Chroma would refuse).
        ``embedding_model=None`` means "the model recorded in the collection" (all-MiniLM-L6-v2 for a new
        one); naming a different model than the recorded one raises :class:`EmbedderMismatchError`.
        ``embedding_quantization="int8"`` embeds on the int8 CPU path (vectors within cosine 0.99 of float32;
        the collection's model stays the same, so float32 and int8 vectors can share it).
        """
        from zerank_integrations.retrieval.chroma_embedding import ChromaEmbeddingFunction

        validate_collection_name(name)
        if client is None:
            client = connect(path=path, url=url)
        requested = canonical_model_name(embedding_model) if embedding_model is not None else None
        collection = _get_collection(client, name)
        if collection is None:
            if not create:
                raise CollectionNotFoundError(_not_found_message(client, name))
            embedder = ChromaEmbeddingFunction(requested, device=device, quantization=embedding_quantization)
            try:
                client.get_or_create_collection(
                    name,
                    embedding_function=embedder,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={
                        EMBEDDING_MODEL_KEY: embedder.model_name,
                        EMBEDDING_DIM_KEY: embedder.dimension,
                    },
                )
            except ValueError as exc:  # conflicting settings
                raise ChromaConnectionError(f"cannot create collection {name!r}: {exc}") from None
            # Work with a handle that has no embedding function: vectors always come from ``embedder``.
            return cls(client, _get_collection(client, name), embedder)
        recorded = (collection.metadata or {}).get(EMBEDDING_MODEL_KEY)
        if recorded is None and requested is None:
            raise EmbedderMismatchError(
                f"collection {name!r} was not created by zerank-integrations and records no embedding model; "
                "pass --embedding-model with the model its vectors were made with"
            )
        if recorded is not None and requested is not None and requested != recorded:
            raise EmbedderMismatchError(
                f"collection {name!r} was built with embedding model {recorded!r}, not {requested!r}; "
                f"use --embedding-model {recorded} (or leave it out), or ingest into a new --collection"
            )
        return cls(
            client,
            collection,
            ChromaEmbeddingFunction(requested or recorded, device=device, quantization=embedding_quantization),
        )

    def count(self) -> int:
        """Stored passages (chunks); equal to the number of documents when none was split."""
        return int(self.collection.count())

    def ids(self) -> list[str]:
        """Every chunk id in the collection (ids only: no texts or vectors are fetched)."""
        return list(self.collection.get(include=[])["ids"])

    def document_ids(self) -> set[str]:
        """The ids of the documents the stored chunks belong to."""
        stored = self.collection.get(include=["metadatas"])
        return {
            _doc_id(chunk_id, meta) for chunk_id, meta in zip(stored["ids"], stored["metadatas"] or [], strict=False)
        }

    def _check_dimension(self) -> None:
        """Catch a same-named but different model (e.g. a moved folder) by vector size before Chroma does."""
        meta = dict(self.collection.metadata or {})
        dim = self.embedder.dimension
        recorded = meta.get(EMBEDDING_DIM_KEY)
        if recorded is not None and int(recorded) != dim:
            raise EmbedderMismatchError(
                f"collection {self.name!r} holds {recorded}-dimensional vectors but "
                f"{self.embedder.model_name!r} makes {dim}-dimensional ones"
            )

    def upsert(
        self,
        documents: Sequence[Document],
        *,
        batch_size: int = 256,
        progress: Callable[[int], None] | None = None,
        chunking: ChunkingPolicy | None = None,
        dedupe: DedupReport | None = None,
        chunk_progress: Callable[[int, int], None] | None = None,
    ) -> IngestReport:
        """Insert or update documents by id, as chunks, embedding only new or changed chunks.

        Each document is split by ``chunking`` (default: :class:`ChunkingPolicy`: chunks that fit the embedder's
        window, each with its section-sized context). Re-running on the same documents compares chunk ids, texts
        and metadata with what is stored and writes nothing, so re-ingesting is cheap and idempotent; chunks
        that a changed document no longer has are deleted. Documents missing from ``documents`` are never
        touched. With a ``dedupe`` report, documents and chunks that repeat others are not stored (and stored
        chunks of them are deleted); the report says which and why (:mod:`~zerank_integrations.retrieval.dedup`).

        Every chunk is tokenised once, then the new or changed ones are embedded longest first in the embedder's
        batches and written to Chroma in large batches. ``progress(n)`` is called with the number of documents
        finished; ``chunk_progress(done, total)`` with the chunks embedded so far of those to embed.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        seen: set[str] = set()
        for doc in documents:
            if doc.id in seen:
                raise ValueError(f"duplicate document id {doc.id!r}")
            seen.add(doc.id)
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[step] = timings.get(step, 0.0) + now - clock
            clock = now

        with self._write_lock:
            policy = (chunking if chunking is not None else ChunkingPolicy()).fit(self.embedder.max_tokens)
            kept_docs = list(documents) if dedupe is None else dedupe_documents(documents, dedupe)
            lap("dedupe")
            chunks: list[Chunk] = []
            for start in range(0, len(kept_docs), batch_size):
                batch = kept_docs[start : start + batch_size]
                per_document = chunk_documents(batch, policy, self.embedder.token_spans)
                chunks.extend(c for per_doc in per_document for c in per_doc)
            chunk_count = len(chunks)
            lap("chunk")
            if dedupe is not None:
                chunks = hold_contexts(dedupe_chunks(chunks, dedupe))
            lap("dedupe")
            max_batch = int(self.client.get_max_batch_size())
            removed = self._delete_stale_chunks(documents, chunks, max_batch)
            todo, added, updated, unchanged = self._changed(chunks, max_batch)
            lap("compare")
            if todo:
                self._check_dimension()
            left = Counter(c.document.id for c in todo)
            if progress is not None and len(documents) > len(left):
                progress(len(documents) - len(left))  # documents with nothing to embed are done already
            if chunk_progress is not None:
                chunk_progress(0, len(todo))
            self._embed_and_write(todo, max_batch, left, progress, chunk_progress, timings)
        return IngestReport(
            added=added,
            updated=updated,
            unchanged=unchanged,
            total=self.count(),
            documents=len(documents),
            chunks=chunk_count,
            removed=removed,
            stored_documents=len({c.document.id for c in chunks}),
            stored_chunks=len(chunks),
            timings=timings,
        )

    def _changed(self, chunks: list[Chunk], max_batch: int) -> tuple[list[Chunk], int, int, int]:
        """The chunks to (re)write, and how many are added, updated and unchanged."""
        todo: list[Chunk] = []
        added = updated = unchanged = 0
        for part in range(0, len(chunks), max_batch):
            window = chunks[part : part + max_batch]
            existing = self.collection.get(ids=[c.id for c in window], include=["documents", "metadatas"])
            stored = dict(
                zip(
                    existing["ids"],
                    zip(existing["documents"] or [], existing["metadatas"] or [], strict=False),
                    strict=False,
                )
            )
            for chunk in window:
                if chunk.id not in stored:
                    added += 1
                    todo.append(chunk)
                elif stored[chunk.id] != (chunk.text, chunk.metadata):
                    updated += 1
                    todo.append(chunk)
                else:
                    unchanged += 1
        return todo, added, updated, unchanged

    def _embed_and_write(
        self,
        todo: list[Chunk],
        max_batch: int,
        left: Counter[str],
        progress: Callable[[int], None] | None,
        chunk_progress: Callable[[int, int], None] | None,
        timings: dict[str, float],
    ) -> None:
        """Embed ``todo`` longest first (batches of similar length pad little), in steps of the embedder's batch so
        progress moves every few seconds, and write Chroma in batches of up to ``max_batch`` (few, large writes)."""
        step = max(1, int(getattr(self.embedder, "batch_size", 32)))
        order = sorted(todo, key=lambda c: -len(c.text))
        write = max(step, min(max_batch, 4096))
        done = 0
        for part in range(0, len(order), write):
            window = order[part : part + write]
            vectors = []
            t0 = time.perf_counter()
            for sub in range(0, len(window), step):
                piece = window[sub : sub + step]
                vectors.append(self.embedder.encode([c.embedded_text for c in piece]))
                done += len(piece)
                if chunk_progress is not None:
                    chunk_progress(done, len(order))
                finished = 0
                for chunk in piece:  # a document counts as done once its last chunk is embedded
                    left[chunk.document.id] -= 1
                    finished += left[chunk.document.id] == 0
                if progress is not None and finished:
                    progress(finished)
            t1 = time.perf_counter()
            self.collection.upsert(
                ids=[c.id for c in window],
                documents=[c.text for c in window],
                metadatas=[c.metadata for c in window],
                embeddings=np.concatenate(vectors) if vectors else [],
            )
            timings["embed"] = timings.get("embed", 0.0) + t1 - t0
            timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t1

    def _delete_stale_chunks(self, documents: Sequence[Document], chunks: list[Chunk], max_batch: int) -> int:
        """Delete stored chunks of these documents that their current text (or deduplication) no longer keeps."""
        keep = {c.id for c in chunks}
        stale: list[str] = []
        for part in range(0, len(documents), 512):
            doc_ids = [doc.id for doc in documents[part : part + 512]]
            stored = self.collection.get(where={"doc_id": {"$in": doc_ids}}, include=[])["ids"]
            stale.extend(chunk_id for chunk_id in stored if chunk_id not in keep)
        for part in range(0, len(stale), max_batch):
            self.collection.delete(ids=stale[part : part + max_batch])
        return len(stale)

    def search(self, query: str, k: int = 50) -> list[Hit]:
        """The ``k`` nearest chunks to ``query``, best first."""
        return self.search_many([query], k)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 50, *, progress: Callable[[int], None] | None = None
    ) -> list[list[Hit]]:
        """Top-``k`` for many queries: one embedding pass, then Chroma queries in batches.

        Small to big: chunks that share a context count once (at the rank of the best), and each hit carries
        that context as its ``content`` (the chunk that matched in ``matched``); Chroma is asked for more
        nearest chunks until ``k`` distinct passages are found or the collection is exhausted.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        self._check_dimension()
        vectors = self.embedder.encode(list(queries))
        total = self.count()
        results: list[list[Hit]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            block = vectors[start : start + _QUERY_CHUNK]
            rows: list[list[tuple[str, str, dict[str, Any], float]]] = [[] for _ in block]
            pending = list(range(len(block)))
            n = min(k, total)
            while pending and n > 0:
                reply = self.collection.query(
                    query_embeddings=block[pending], n_results=n, include=["documents", "metadatas", "distances"]
                )
                again = []
                for slot, ids, docs, metas, dists in zip(
                    pending, reply["ids"], reply["documents"], reply["metadatas"], reply["distances"], strict=True
                ):
                    rows[slot] = list(zip(ids, [d or "" for d in docs], [m or {} for m in metas], dists, strict=True))
                    if len({_context_key(i, m) for i, _, m, _ in rows[slot]}) < k and len(ids) < total:
                        again.append(slot)
                pending, n = again, min(n * 4, total)
            results.extend(self._collapse(row, k) for row in rows)
            if progress is not None:
                progress(len(block))
        return results

    def _collapse(self, row: list[tuple[str, str, dict[str, Any], float]], k: int) -> list[Hit]:
        """The best chunk of each context, in rank order, with the context's text fetched where it is held."""
        best: dict[str, tuple[str, str, dict[str, Any], float]] = {}
        for item in row:
            best.setdefault(_context_key(item[0], item[2]), item)
        chosen = list(best.values())[:k]
        texts = {str(m["context"]): str(m["context_text"]) for _, _, m, _ in chosen if "context_text" in m}
        missing = {str(m["context"]) for _, _, m, _ in chosen if "context" in m} - set(texts)
        if missing:
            reply = self.collection.get(
                where={"context": {"$in": sorted(missing)}},
                include=["metadatas"],
            )
            for meta in reply["metadatas"] or []:
                if meta and "context_text" in meta:
                    texts[str(meta["context"])] = str(meta["context_text"])
        return [_hit(i, text, meta, dist, rank, texts) for rank, (i, text, meta, dist) in enumerate(chosen, start=1)]


def _context_key(chunk_id: str, meta: dict[str, Any]) -> str:
    return str(meta.get("context") or chunk_id)


def _doc_id(chunk_id: str, meta: Any) -> str:
    doc_id = (meta or {}).get("doc_id")
    return str(doc_id) if doc_id else chunk_id


def _hit(chunk_id: str, text: str, meta: dict[str, Any], distance: float, rank: int, contexts: dict[str, str]) -> Hit:
    span = None
    if isinstance(meta.get("start"), int) and isinstance(meta.get("end"), int):
        span = (int(meta["start"]), int(meta["end"]))
    context = str(meta.get("context") or "")
    if context and context in contexts:
        return Hit(
            id=chunk_id,
            content=contexts[context],
            score=1.0 - float(distance),
            rank=rank,
            title=str(meta.get("title") or ""),
            document_id=_doc_id(chunk_id, meta),
            span=(int(meta["context_start"]), int(meta["context_end"])),
            matched=text,
            matched_span=span,
            context_id=context,
        )
    return Hit(
        id=chunk_id,
        content=text,
        score=1.0 - float(distance),
        rank=rank,
        title=str(meta.get("title") or ""),
        document_id=_doc_id(chunk_id, meta),
        span=span,
    )


def _get_collection(client: Any, name: str) -> Any | None:
    from chromadb.errors import NotFoundError

    try:
        return client.get_collection(name, embedding_function=None)
    except NotFoundError:
        return None
    except ValueError as exc:
        if "does not exist" in str(exc):
            return None
        raise


def _not_found_message(client: Any, name: str) -> str:
    try:
        names = sorted(c.name for c in client.list_collections())
    except Exception:  # listing is only for the message
        names = []
    available = ", ".join(repr(n) for n in names) if names else "none"
    return (
        f"collection {name!r} does not exist (available: {available}); "
        "create it with `zerank-integrations ingest PATH --collection NAME`"
    )
