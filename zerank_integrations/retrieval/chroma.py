"""Chroma as the first stage: an embedded database by default, a Chroma server by URL.

Vectors are always computed here (by :class:`SentenceTransformerEmbedder`) and handed to Chroma, so
Chroma's own default embedding function, which downloads a model at run time, is never involved. Each
collection records the embedding model it was built with in its metadata; querying or extending it with
another model is refused, because similarities across two vector spaces are meaningless and fail silently.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zerank_integrations.retrieval.corpus import Document
from zerank_integrations.retrieval.embeddings import SentenceTransformerEmbedder, canonical_model_name
from zerank_integrations.retrieval.errors import (
    ChromaConnectionError,
    CollectionNotFoundError,
    EmbedderMismatchError,
)

CHROMA_PATH_ENV = "ZERANK_CHROMA_PATH"
CHROMA_URL_ENV = "ZERANK_CHROMA_URL"
DEFAULT_COLLECTION = "zerank-docs"
EMBEDDING_MODEL_KEY = "zerank_embedding_model"
EMBEDDING_DIM_KEY = "zerank_embedding_dim"
_QUERY_CHUNK = 64


def default_chroma_path() -> Path:
    """Where the embedded database lives: ``$ZERANK_CHROMA_PATH``, else the per-user data folder.

    Linux: ``$XDG_DATA_HOME/zerank-integrations/chroma`` (``~/.local/share/...``);
    macOS: ``~/Library/Application Support/zerank-integrations/chroma``;
    Windows: ``%LOCALAPPDATA%\\zerank-integrations\\chroma``.
    """
    env = os.environ.get(CHROMA_PATH_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "zerank-integrations" / "chroma"


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
class Hit:
    """One retrieved document: ``score`` is the cosine similarity (1 - Chroma's cosine distance)."""

    id: str
    content: str
    score: float
    rank: int
    title: str = ""


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did: re-ingesting unchanged documents counts them ``unchanged`` and writes nothing."""

    added: int
    updated: int
    unchanged: int
    total: int


def _metadata(doc: Document) -> dict[str, Any]:
    meta: dict[str, Any] = {"title": doc.title}
    if doc.source:
        meta["source"] = doc.source
    return meta


class ChromaStore:
    """One Chroma collection plus the embedder that fits it: upsert documents, query by text.

    Thread-safe for concurrent queries (Chroma clients are); ingests into the same store are serialised.
    """

    def __init__(self, client: Any, collection: Any, embedder: SentenceTransformerEmbedder) -> None:
        self.client = client
        self.collection = collection
        self.embedder = embedder
        self._write_lock = threading.Lock()

    @property
    def name(self) -> str:
        return str(self.collection.name)

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
    ) -> ChromaStore:
        """Open (or with ``create=True`` create) a collection and check its embedding model.

        ``embedding_model=None`` means "the model recorded in the collection" (all-MiniLM-L6-v2 for a new
        one);
        naming a different model than the recorded one raises :class:`EmbedderMismatchError`.
        """
        if client is None:
            client = connect(path=path, url=url)
        requested = canonical_model_name(embedding_model) if embedding_model is not None else None
        collection = _get_collection(client, name)
        if collection is None:
            if not create:
                raise CollectionNotFoundError(_not_found_message(client, name))
            embedder = SentenceTransformerEmbedder(requested, device=device)
            try:
                collection = client.get_or_create_collection(
                    name,
                    embedding_function=embedder,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={
                        EMBEDDING_MODEL_KEY: embedder.model_name,
                        EMBEDDING_DIM_KEY: embedder.dimension,
                    },
                )
            except ValueError as exc:  # invalid collection name, conflicting settings
                raise ChromaConnectionError(f"cannot create collection {name!r}: {exc}") from None
            # Work with a handle that has no embedding function: vectors always come from ``embedder``.
            collection = _get_collection(client, name)
            return cls(client, collection, embedder)
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
        return cls(client, collection, SentenceTransformerEmbedder(requested or recorded, device=device))

    def count(self) -> int:
        return int(self.collection.count())

    def ids(self) -> list[str]:
        """Every document id in the collection (ids only: no texts or vectors are fetched)."""
        return list(self.collection.get(include=[])["ids"])

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
    ) -> IngestReport:
        """Insert or update documents by id, embedding only new or changed ones.

        Re-running on the same documents compares ids, texts and titles with what is stored and writes
        nothing, so re-ingesting is cheap and idempotent. ``progress(n)`` is called after each batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        seen: set[str] = set()
        for doc in documents:
            if doc.id in seen:
                raise ValueError(f"duplicate document id {doc.id!r}")
            seen.add(doc.id)
        batch_size = min(batch_size, int(self.client.get_max_batch_size()))
        added = updated = unchanged = 0
        checked = False
        with self._write_lock:
            for start in range(0, len(documents), batch_size):
                batch = list(documents[start : start + batch_size])
                existing = self.collection.get(ids=[d.id for d in batch], include=["documents", "metadatas"])
                stored = {
                    i: (doc, meta)
                    for i, doc, meta in zip(
                        existing["ids"],
                        existing["documents"] or [],
                        existing["metadatas"] or [],
                        strict=False,
                    )
                }
                todo = []
                for doc in batch:
                    if doc.id not in stored:
                        added += 1
                        todo.append(doc)
                    elif stored[doc.id] != (doc.content, _metadata(doc)):
                        updated += 1
                        todo.append(doc)
                    else:
                        unchanged += 1
                if todo:
                    if not checked:
                        self._check_dimension()
                        checked = True
                    vectors = self.embedder.encode([d.content for d in todo])
                    self.collection.upsert(
                        ids=[d.id for d in todo],
                        documents=[d.content for d in todo],
                        metadatas=[_metadata(d) for d in todo],
                        embeddings=vectors,
                    )
                if progress is not None:
                    progress(len(batch))
        return IngestReport(added=added, updated=updated, unchanged=unchanged, total=self.count())

    def search(self, query: str, k: int = 50) -> list[Hit]:
        """The ``k`` nearest documents to ``query``, best first."""
        return self.search_many([query], k)[0]

    def search_many(
        self, queries: Sequence[str], k: int = 50, *, progress: Callable[[int], None] | None = None
    ) -> list[list[Hit]]:
        """Top-``k`` for many queries: one embedding pass, then Chroma queries in chunks."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        self._check_dimension()
        vectors = self.embedder.encode(list(queries))
        results: list[list[Hit]] = []
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = vectors[start : start + _QUERY_CHUNK]
            reply = self.collection.query(
                query_embeddings=chunk, n_results=k, include=["documents", "metadatas", "distances"]
            )
            for ids, docs, metas, dists in zip(
                reply["ids"], reply["documents"], reply["metadatas"], reply["distances"], strict=True
            ):
                results.append(
                    [
                        Hit(
                            id=doc_id,
                            content=doc or "",
                            score=1.0 - float(dist),
                            rank=rank,
                            title=str((meta or {}).get("title") or ""),
                        )
                        for rank, (doc_id, doc, meta, dist) in enumerate(
                            zip(ids, docs, metas, dists, strict=True), start=1
                        )
                    ]
                )
            if progress is not None:
                progress(len(chunk))
        return results


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
