"""What a first stage returns, and the small interface ``evaluate`` and ``search`` take (no chromadb import).

Any object with ``search(query, k) -> list[Hit]`` is a :class:`Retriever`; :class:`ChromaStore` is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Hit", "Retriever", "check_hits", "describe_retriever", "documents_in_order"]


@dataclass(frozen=True)
class Hit:
    """One retrieved passage, best first by ``rank``.

    ``score`` is the retriever's similarity (Chroma: 1 - cosine distance). A passage is a whole document or one
    chunk of it: ``document_id`` names the document (empty: the passage ``id`` is the document id) and
    ``span`` its [start, end) characters in that document's content (``None`` when unknown).

    Small to big: when the matched chunk has a larger context, ``content`` is that context (what the reranker
    and the prompt get) and ``span`` its span, while ``matched`` holds the chunk that matched, ``matched_span``
    its span and ``context_id`` names the context (one hit per context). Otherwise ``matched`` is empty.
    """

    id: str
    content: str
    score: float
    rank: int
    title: str = ""
    document_id: str = ""
    span: tuple[int, int] | None = None
    matched: str = ""
    matched_span: tuple[int, int] | None = None
    context_id: str = ""

    @property
    def doc_id(self) -> str:
        """The document this passage belongs to (what per-document judgements are keyed by)."""
        return self.document_id or self.id


@runtime_checkable
class Retriever(Protocol):
    """A first stage: the ``k`` best passages for ``query``, best first.

    Implementations may also offer ``search_many(queries, k, progress=None) -> list[list[Hit]]`` for batch
    retrieval (``evaluate`` uses it when present) and ``description`` (a short human name for reports).
    """

    def search(self, query: str, k: int) -> list[Hit]: ...


def documents_in_order(ranked_ids: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """Per-document ranking from passages in rank order: each document at the place of its best passage.

    ``ranked_ids`` are ``(document id, score)`` of passages, best first; the result keeps the first (best)
    occurrence of each document, so a document scores as the best of its chunks.
    """
    seen: set[str] = set()
    out: list[tuple[str, float]] = []
    for doc_id, score in ranked_ids:
        if doc_id not in seen:
            seen.add(doc_id)
            out.append((doc_id, score))
    return out


def describe_retriever(retriever: object) -> str:
    """A short name for reports: the retriever's ``description`` if it has one, else its class name."""
    description = getattr(retriever, "description", None)
    return str(description) if isinstance(description, str) and description else type(retriever).__name__


def check_hits(hits: Sequence[object], source: object) -> list[Hit]:
    """``hits`` as a list of :class:`Hit`, or a ``TypeError`` naming the retriever and the bad item."""
    out = list(hits)
    for index, hit in enumerate(out):
        if not isinstance(hit, Hit):
            raise TypeError(
                f"{type(source).__name__}.search returned {type(hit).__name__} at index {index}; expected "
                "zerank_integrations.retrieval.Hit"
            )
    return out
