"""Structure-aware chunking, small to big: chunks that fit the embedder, larger context for the reranker.

A document whose content fits the chunk ``size`` (by default the embedder's own window, read from the model)
stays one chunk with the document's own id. A longer one is first cut into **contexts**: its Markdown sections
(HTML headings become them, see :mod:`~zerank_integrations.retrieval.readers`) merged in order up to
``context`` tokens, a longer section cut into windows at natural breaks. Each context is then cut into
overlapping **chunks** of at most ``size`` tokens, each ending at the best natural break (paragraph, line,
sentence, word) in its last eighth, the last one a whole window ending at the context's end (no short scraps).
The chunk is what is embedded and matched (a later chunk of a titled document is embedded after its title, as
LlamaIndex embeds a node's metadata); its context is what the reranker and the prompt get (LangChain's
parent-document and LlamaIndex's sentence-window idea). Chunk ids are the document id plus the chunk's position
(``doc#0``, ``doc#1``, ...), so re-ingesting the same text gives the same ids; each chunk carries its document
id and [start, end) span, and its context's id and span, the context's text stored once, with its first chunk.

Tokens are counted with the embedding model's own tokenizer (it is what each chunk has to fit).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from zerank_integrations.retrieval.corpus import Document

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONTEXT_SIZE",
    "Chunk",
    "ChunkingPolicy",
    "chunk_documents",
    "split_spans",
]

#: Chunks fit the embedder's window by default (all-MiniLM-L6-v2: 256 tokens less its 2 special ones), read from
#: the model; ``--chunk-size N`` sets it by hand. Kept for callers that named the old fixed default.
DEFAULT_CHUNK_SIZE: int | None = None
#: The larger unit handed to the reranker and the prompt (small to big), in embedder tokens: a document's
#: sections merged up to this size; 0 hands on the chunk itself.
DEFAULT_CONTEXT_SIZE = 512

#: (texts) -> per text, the [start, end) characters of each token
TokenSpans = Callable[[Sequence[str]], list[list[tuple[int, int]]]]


def _tokens(value: object, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum} (tokens), got {value!r}")


@dataclass(frozen=True)
class ChunkingPolicy:
    """Chunk ``size`` and ``overlap`` in tokens, and the ``context`` handed on in their place.

    ``size=None``: the embedder's window (:meth:`fit` sets it from the model). ``overlap=None``: an eighth of the
    size. ``context``: a document's sections are merged up to this many tokens into the passage the reranker
    and the prompt get when one of its chunks is retrieved (0: the chunk itself).
    """

    size: int | None = DEFAULT_CHUNK_SIZE
    overlap: int | None = None
    context: int = DEFAULT_CONTEXT_SIZE

    def __post_init__(self) -> None:
        if self.size is not None:
            _tokens(self.size, "chunk size", 1)
        _tokens(self.context, "context size", 0)
        overlap = self.overlap
        if overlap is None:
            if self.size is not None:
                object.__setattr__(self, "overlap", self.size // 8)
            return
        _tokens(overlap, "chunk overlap", 0)
        if self.size is not None and overlap >= self.size:
            raise ValueError(f"chunk overlap ({overlap}) must be smaller than the chunk size ({self.size})")

    def fit(self, window: int) -> ChunkingPolicy:
        """This policy with ``size=None`` replaced by the embedder's ``window`` (tokens it reads of a text)."""
        if self.size is not None:
            return self
        return ChunkingPolicy(size=window, overlap=self.overlap, context=self.context)

    @property
    def chunk_size(self) -> int:
        if self.size is None:
            raise ValueError("the chunk size follows the embedder: call policy.fit(embedder.max_tokens) first")
        return self.size


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
    #: the larger context (small to big): ``context`` id, ``context_start``/``context_end`` characters and, on
    #: the context's first chunk only, ``context_text``; empty when the chunk is its own context
    context: dict[str, str | int] = field(default_factory=dict)

    @property
    def titled(self) -> bool:
        """A later chunk of a titled document: embedded after the title (the first chunk starts with it)."""
        return self.index > 0 and bool(self.document.title)

    @property
    def embedded_text(self) -> str:
        """What the embedder reads: the text, after the document's title where :attr:`titled` (measured: the
        shared BEIR collections keep their NDCG@10 only with it, BENCHMARKS.md "small to big")."""
        return f"{self.document.title}\n{self.text}" if self.titled else self.text

    @property
    def metadata(self) -> dict[str, str | int]:
        """What Chroma stores next to the text: title, source, document id and character span."""
        meta: dict[str, str | int] = {"title": self.document.title}
        if self.document.source:
            meta["source"] = self.document.source
        meta.update(doc_id=self.document.id, start=self.start, end=self.end, chunk=self.index, chunks=self.count)
        if self.titled:
            meta["embedded_after_title"] = 1  # vectors of an ingest without this are made again
        meta.update(self.context)
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


def _cut(
    text: str,
    spans: Sequence[tuple[int, int]],
    first: int,
    stop: int,
    size: int,
    overlap: int,
    *,
    full_tail: bool = False,
) -> list[tuple[int, int]]:
    """Token ranges [a, b) covering tokens ``first..stop`` in windows of at most ``size`` tokens, each ending at
    the best natural break in its last eighth, the next starting about ``overlap`` tokens earlier.

    ``full_tail``: the last window is a whole ``size`` tokens ending at ``stop`` (it overlaps its neighbour more),
    so that no window is a short scrap the embedder cannot place (measured: BENCHMARKS.md, "small to big").
    """
    if stop - first <= size:
        return [(first, stop)]
    out: list[tuple[int, int]] = []
    while True:
        last = min(first + size, stop)  # exclusive token index
        if last < stop:
            floor = first + max(1, (7 * size) // 8)
            last = max(range(floor, last + 1), key=lambda k: (_break_quality(text, spans[k - 1][1], spans[k][0]), k))
        out.append((first, last))
        if last >= stop:
            break
        first = _word_start(text, spans, max(last - overlap, first + 1), last)
    if full_tail and out[-1][1] - out[-1][0] < size:
        out[-1] = (_word_start(text, spans, max(out[-2][0] + 1, stop - size), out[-1][0]), stop)
    return out


def _word_start(text: str, spans: Sequence[tuple[int, int]], token: int, limit: int) -> int:
    """The first token from ``token`` (at most ``limit``) that starts a word, not the middle of one."""
    while token < limit and _break_quality(text, spans[token - 1][1], spans[token][0]) == 0:
        token += 1
    return token


def split_spans(text: str, spans: Sequence[tuple[int, int]], policy: ChunkingPolicy) -> list[tuple[int, int]]:
    """[start, end) character spans of the chunks of ``text`` whose tokens have character ``spans``."""
    size = policy.chunk_size
    if len(spans) <= size:
        return [(0, len(text))]
    cuts = _cut(text, spans, 0, len(spans), size, int(policy.overlap or 0), full_tail=True)
    return [(spans[a][0], spans[b - 1][1]) for a, b in cuts]


_HEADING = re.compile(r"^#{1,6} \S", re.M)


def section_starts(text: str) -> list[int]:
    """Character offsets where a Markdown heading line starts (outside ``` fences): where sections begin."""
    starts = []
    fenced = False
    pos = 0
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and _HEADING.match(line):
            starts.append(pos)
        pos += len(line) + 1
    return starts


def _contexts(text: str, spans: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Token ranges of the larger units: consecutive sections merged while they fit ``size`` tokens; a longer
    section cut into windows at natural breaks."""
    token_starts = [a for a, _ in spans]
    bounds = sorted({0, *(bisect.bisect_left(token_starts, c) for c in section_starts(text))} - {len(spans)})
    sections = list(zip(bounds, [*bounds[1:], len(spans)], strict=True))
    out: list[tuple[int, int]] = []
    for a, b in sections:
        if out and b - out[-1][0] <= size and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        elif b - a <= size:
            out.append((a, b))
        else:
            out.extend(_cut(text, spans, a, b, size, 0))
    return out


def _document_chunks(doc: Document, spans: Sequence[tuple[int, int]] | None, policy: ChunkingPolicy) -> list[Chunk]:
    content = doc.content
    size, overlap = policy.chunk_size, int(policy.overlap or 0)
    if spans is None or len(spans) <= size:
        return [Chunk(doc.id, doc, content, 0, len(content), 0, 1)]
    pieces: list[tuple[int, int, tuple[int, int] | None]] = []  # child token range, context token range
    if policy.context:
        for ca, cb in _contexts(content, spans, policy.context):
            children = _cut(content, spans, ca, cb, size, overlap, full_tail=True)
            pieces.extend((a, b, (ca, cb) if len(children) > 1 else None) for a, b in children)
    else:
        pieces = [(a, b, None) for a, b in _cut(content, spans, 0, len(spans), size, overlap, full_tail=True)]
    chunks = []
    for k, (a, b, context) in enumerate(pieces):
        start, end = spans[a][0], spans[b - 1][1]
        extra: dict[str, str | int] = {}
        if context is not None:
            c_start, c_end = spans[context[0]][0], spans[context[1] - 1][1]
            extra = {"context": f"{doc.id}@{c_start}", "context_start": c_start, "context_end": c_end}
        chunks.append(Chunk(f"{doc.id}#{k}", doc, content[start:end], start, end, k, len(pieces), extra))
    return hold_contexts(chunks)


def hold_contexts(chunks: Sequence[Chunk]) -> list[Chunk]:
    """``chunks`` with each context's text stored once: on the first chunk of that context that is kept."""
    held: set[str] = set()
    out = []
    for chunk in chunks:
        context = chunk.context
        name = context.get("context")
        holds = "context_text" in context
        if name is None or (name in held) != holds:
            out.append(chunk)
            if name is not None:
                held.add(str(name))
            continue
        extra = {k: v for k, v in context.items() if k != "context_text"}
        if name not in held:
            held.add(str(name))
            start, end = int(context["context_start"]), int(context["context_end"])
            extra["context_text"] = chunk.document.content[start:end]
        out.append(replace(chunk, context=extra))
    return out


def chunk_documents(
    documents: Sequence[Document], policy: ChunkingPolicy, token_spans: TokenSpans
) -> list[list[Chunk]]:
    """The chunks of each document, in input order (one list per document).

    ``token_spans`` is only called for documents that might not fit: a text of ``b`` UTF-8 bytes has at most
    ``b`` tokens in any WordPiece or byte-level BPE vocabulary.
    """
    long_docs = [i for i, doc in enumerate(documents) if len(doc.content.encode("utf-8")) > policy.chunk_size]
    spans = (
        dict(zip(long_docs, token_spans([documents[i].content for i in long_docs]), strict=True)) if long_docs else {}
    )
    return [_document_chunks(doc, spans.get(i), policy) for i, doc in enumerate(documents)]
