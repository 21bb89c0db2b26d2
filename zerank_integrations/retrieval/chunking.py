"""Token-aware chunking of documents before they are embedded, retrieved and reranked.

A document whose content fits ``size`` tokens stays one chunk with the document's own id, so
collections of short documents (every document of the shared scifact, med and cran sets fits the default
2,048) are stored exactly as before and their retrieval baselines reproduce. A longer one is cut into
overlapping windows of at most ``size`` tokens, each ending at the best natural break (paragraph,
line, sentence, word) in its last quarter, the next one starting about ``overlap`` tokens earlier at a
word start. Chunk ids are the document id plus the chunk's position (``doc#0``, ``doc#1``, ...), so
re-ingesting the same text gives the same ids; each chunk carries its document id and the [start, end)
character span of the chunk in the document's content.

Tokens are counted with the embedding model's own tokenizer (it is what each chunk has to fit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zerank_integrations.retrieval.corpus import Document

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "Chunk",
    "ChunkingPolicy",
    "chunk_documents",
    "split_spans",
]

#: Long enough that every document of the shared BEIR sets stays whole (the longest scifact abstract has
#: 1,937 all-MiniLM-L6-v2 tokens), so their baselines reproduce. all-MiniLM-L6-v2 itself reads only the first
#: 256 tokens of a chunk: for long files, ``size=256`` lets every part of the text be found.
DEFAULT_CHUNK_SIZE = 2048

#: (texts) -> per text, the [start, end) characters of each token
TokenSpans = Callable[[Sequence[str]], list[list[tuple[int, int]]]]


@dataclass(frozen=True)
class ChunkingPolicy:
    """Chunk ``size`` and ``overlap`` in tokens (``overlap=None``: an eighth of the size)."""

    size: int = DEFAULT_CHUNK_SIZE
    overlap: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"chunk size must be an int >= 1 (tokens), got {self.size!r}")
        overlap = self.overlap
        if overlap is None:
            object.__setattr__(self, "overlap", self.size // 8)
            return
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise ValueError(f"chunk overlap must be an int >= 0 (tokens), got {overlap!r}")
        if overlap >= self.size:
            raise ValueError(f"chunk overlap ({overlap}) must be smaller than the chunk size ({self.size})")


@dataclass(frozen=True)
class Chunk:
    """One stored passage: ``text`` is ``document.content[start:end]``."""

    id: str
    document: Document
    text: str
    start: int
    end: int
    index: int
    count: int

    @property
    def metadata(self) -> dict[str, str | int]:
        """What Chroma stores next to the text: title, source, document id and character span."""
        meta: dict[str, str | int] = {"title": self.document.title}
        if self.document.source:
            meta["source"] = self.document.source
        meta.update(doc_id=self.document.id, start=self.start, end=self.end, chunk=self.index, chunks=self.count)
        return meta


def _break_quality(text: str, end: int, next_start: int) -> int:
    """How natural a cut between a token ending at ``end`` and the next starting at ``next_start`` is."""
    gap = text[end:next_start]
    if "\n\n" in gap:
        return 4
    if "\n" in gap:
        return 3
    if gap and text[end - 1 : end] in (".", "!", "?", ";", ":"):
        return 2
    if gap or text[next_start - 1 : next_start].isspace():
        return 1
    return 0  # inside a word


def split_spans(text: str, spans: Sequence[tuple[int, int]], policy: ChunkingPolicy) -> list[tuple[int, int]]:
    """[start, end) character spans of the chunks of ``text`` whose tokens have character ``spans``."""
    size, overlap = policy.size, int(policy.overlap or 0)
    n = len(spans)
    if n <= size:
        return [(0, len(text))]
    out: list[tuple[int, int]] = []
    first = 0
    while True:
        last = min(first + size, n)  # exclusive token index
        if last < n:
            floor = first + max(1, (3 * size) // 4)
            best = max(range(floor, last + 1), key=lambda k: (_break_quality(text, spans[k - 1][1], spans[k][0]), k))
            last = best
        out.append((spans[first][0], spans[last - 1][1]))
        if last >= n:
            return out
        nxt = max(last - overlap, first + 1)
        while nxt < last and _break_quality(text, spans[nxt - 1][1], spans[nxt][0]) == 0:
            nxt += 1  # start at a word start, not in the middle of a word
        first = nxt


def chunk_documents(
    documents: Sequence[Document], policy: ChunkingPolicy, token_spans: TokenSpans
) -> list[list[Chunk]]:
    """The chunks of each document, in input order (one list per document).

    ``token_spans`` is only called for documents that might not fit: a text of ``b`` UTF-8 bytes has at most
    ``b`` tokens in any WordPiece or byte-level BPE vocabulary.
    """
    long_docs = [i for i, doc in enumerate(documents) if len(doc.content.encode("utf-8")) > policy.size]
    spans = (
        dict(zip(long_docs, token_spans([documents[i].content for i in long_docs]), strict=True)) if long_docs else {}
    )
    out: list[list[Chunk]] = []
    for i, doc in enumerate(documents):
        content = doc.content
        cuts = split_spans(content, spans[i], policy) if i in spans else [(0, len(content))]
        if len(cuts) == 1:
            out.append([Chunk(doc.id, doc, content, 0, len(content), 0, 1)])
            continue
        out.append(
            [
                Chunk(f"{doc.id}#{k}", doc, content[start:end], start, end, k, len(cuts))
                for k, (start, end) in enumerate(cuts)
            ]
        )
    return out
