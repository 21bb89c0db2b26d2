"""Store each passage once: pages that repeat other pages, boilerplate repeated on many pages, and identical or
near-identical chunks are dropped before anything is embedded, and the ingest summary says what and why.

Three passes, cheapest first:

1. **Documents made of other documents** (a ``print.html`` that concatenates every chapter, a mirrored copy):
   a document is dropped when at least ``containment`` of its paragraphs appear in documents that are kept.
   Larger documents are judged first, so the concatenation goes and the chapters stay; of two identical copies
   the one with the longer path goes.
2. **Boilerplate paragraphs** (a notice repeated on every page, or many times on one): a prose paragraph (not
   code, not a heading) found ``boilerplate_min`` or more times stays where it is first found and is removed
   everywhere else; a document left with nothing but headings is dropped.
3. **Chunks** (after chunking): a chunk whose normalised text equals an earlier one's, or whose word 5-grams
   overlap an earlier one's by at least ``near`` (Jaccard), is not stored.

Only files people bring are deduplicated: BEIR corpora keep every judged id.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from zerank_integrations.retrieval.corpus import Document

if TYPE_CHECKING:
    from zerank_integrations.retrieval.chunking import Chunk

__all__ = ["DedupReport", "dedupe_chunks", "dedupe_documents", "paragraphs"]

_MIN_PARAGRAPH = 40  # characters: shorter paragraphs ("}", "Listing 3-1") say nothing about duplication
_FENCE = "```"


@dataclass
class DedupReport:
    """What was dropped and why (for the ingest summary)."""

    documents: dict[str, str] = field(default_factory=dict)  # document id -> reason
    boilerplate: int = 0  # paragraphs removed as repeats of boilerplate
    boilerplate_kinds: int = 0  # distinct boilerplate paragraphs
    chunks: dict[str, str] = field(default_factory=dict)  # chunk id -> reason

    def describe(self) -> str:
        """One line per kind of drop; "" when nothing was dropped."""
        lines = []
        if self.documents:
            by_reason: dict[str, list[str]] = {}
            for doc_id, reason in self.documents.items():
                by_reason.setdefault(reason.split(":")[0], []).append(doc_id)
            for reason, ids in by_reason.items():
                named = ", ".join(ids[:5]) + (f", … ({len(ids) - 5:,} more)" if len(ids) > 5 else "")
                lines.append(f"dropped {len(ids):,} document{'s' if len(ids) != 1 else ''} ({reason}): {named}")
        if self.boilerplate:
            lines.append(
                f"removed {self.boilerplate:,} repeats of {self.boilerplate_kinds:,} boilerplate "
                "paragraph(s) (found 3+ times; each kept once)"
            )
        if self.chunks:
            identical = sum(reason.startswith("identical") for reason in self.chunks.values())
            near = len(self.chunks) - identical
            lines.append(f"dropped {identical:,} identical and {near:,} near-identical chunks (stored once)")
        return "\n".join(lines)


def paragraphs(text: str) -> list[tuple[int, int, bool]]:
    """[start, end) of each paragraph of ``text`` (blank-line separated; a code fence is one), and whether it
    is code."""
    out: list[tuple[int, int, bool]] = []
    pos = 0
    n = len(text)
    while pos < n:
        while pos < n and text[pos] == "\n":
            pos += 1
        if pos >= n:
            break
        if text.startswith(_FENCE, pos):
            close = text.find("\n" + _FENCE, pos + 3)
            end = n if close < 0 else text.find("\n", close + 1)
            end = n if end < 0 else end
            out.append((pos, end, True))
        else:
            end = text.find("\n\n", pos)
            fence = text.find("\n" + _FENCE, pos)
            if fence >= 0 and (end < 0 or fence < end):
                end = fence
            end = n if end < 0 else end
            out.append((pos, end, False))
        pos = end
    return out


def _key(text: str) -> str:
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=12).hexdigest()


def dedupe_documents(
    documents: Sequence[Document],
    report: DedupReport,
    *,
    containment: float = 0.8,
    boilerplate_min: int = 3,
) -> list[Document]:
    """``documents`` without those made of other documents, and without repeated boilerplate (see the module)."""
    keys: list[list[tuple[str, int, int, bool]]] = []
    holders: dict[str, set[int]] = {}
    for i, doc in enumerate(documents):
        found = []
        for start, end, code in paragraphs(doc.text):
            piece = doc.text[start:end]
            key = _key(piece)
            found.append((key, start, end, code))
            if len(piece.strip()) >= _MIN_PARAGRAPH:
                holders.setdefault(key, set()).add(i)
        keys.append(found)

    live = set(range(len(documents)))

    def long_count(i: int) -> int:
        return sum(len(documents[i].text[s:e].strip()) >= _MIN_PARAGRAPH for _, s, e, _c in keys[i])

    # largest first (a concatenation goes before its parts); among equals the longer path, then the later one
    order = sorted(range(len(documents)), key=lambda i: documents[i].id, reverse=True)
    order.sort(key=lambda i: (-long_count(i), -len(documents[i].id)))
    for i in order:
        long_keys = {k for k, s, e, _c in keys[i] if len(documents[i].text[s:e].strip()) >= _MIN_PARAGRAPH}
        if not long_keys:
            continue
        shared = sum(any(j != i and j in live for j in holders[k]) for k in long_keys)
        if shared / len(long_keys) >= containment:
            live.discard(i)
            report.documents[documents[i].id] = f"its passages are in other pages: {shared}/{len(long_keys)} paragraphs"

    counts: dict[str, int] = {}  # occurrences of each prose paragraph (not code, not a heading) in kept pages
    for i in sorted(live):
        text = documents[i].text
        for key, start, end, code in keys[i]:
            piece = text[start:end].strip()
            if not code and not piece.startswith("#") and len(piece) >= _MIN_PARAGRAPH:
                counts[key] = counts.get(key, 0) + 1
    boilerplate = {k for k, n in counts.items() if n >= boilerplate_min}
    seen: set[str] = set()
    out: list[Document] = []
    for i, doc in enumerate(documents):
        if i not in live:
            continue
        kept: list[str] = []
        removed = 0
        for key, start, end, _code in keys[i]:
            if key in boilerplate and key in seen:
                removed += 1
                continue
            seen.add(key)
            kept.append(doc.text[start:end])
        if not removed:
            out.append(doc)
            continue
        report.boilerplate += removed
        text = "\n\n".join(kept)
        if not any(not p.lstrip().startswith("#") for p in kept if p.strip()):
            report.documents[doc.id] = "only boilerplate: repeated paragraphs and headings"
            continue
        out.append(replace(doc, text=text))
    report.boilerplate_kinds = len(boilerplate & seen) if report.boilerplate else 0
    return out


def _shingles(text: str) -> set[int]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < 5:
        return {zlib.crc32(" ".join(words).encode())}
    return {zlib.crc32(" ".join(words[i : i + 5]).encode()) for i in range(len(words) - 4)}


def dedupe_chunks(chunks: Sequence[Chunk], report: DedupReport, *, near: float = 0.9) -> list[Chunk]:
    """``chunks`` without repeats of an earlier chunk: identical after whitespace and case, or near-identical
    (Jaccard of word 5-grams >= ``near``; candidates share one of their 4 smallest 5-gram hashes)."""
    first: dict[str, str] = {}
    sketches: dict[int, list[int]] = {}
    kept: list[Chunk] = []
    kept_shingles: list[set[int]] = []
    for chunk in chunks:
        key = _key(chunk.text)
        if key in first:
            report.chunks[chunk.id] = f"identical to {first[key]}"
            continue
        shingles = _shingles(chunk.text)
        sketch = sorted(shingles)[:4]
        candidates = {j for h in sketch for j in sketches.get(h, ())}
        match = next(
            (
                j
                for j in sorted(candidates)
                if len(shingles & kept_shingles[j]) / len(shingles | kept_shingles[j]) >= near
            ),
            None,
        )
        if match is not None:
            report.chunks[chunk.id] = f"near-identical to {kept[match].id}"
            continue
        first[key] = chunk.id
        for h in sketch:
            sketches.setdefault(h, []).append(len(kept))
        kept.append(chunk)
        kept_shingles.append(shingles)
    return kept
