"""Reading documents to index: BEIR folders (corpus.jsonl, queries.jsonl, qrels.tsv), or folders and single
files of text, Markdown, HTML and PDF (:mod:`zerank_integrations.retrieval.readers`).

Every problem is reported as a :class:`CorpusError` naming the file (and line, for jsonl/tsv), because a
traceback from ``json.loads`` deep inside an ingest of 100k lines tells a user nothing they can fix.
``.gz`` variants of the BEIR files are read transparently (the packaged MED collection is shipped that way).
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from zerank_integrations.retrieval.errors import CorpusError
from zerank_integrations.retrieval.readers import SUPPORTED_SUFFIXES, ReaderUnavailable, RedirectPage, read_file

TEXT_SUFFIXES = SUPPORTED_SUFFIXES  # every file type a folder ingest reads


@dataclass(frozen=True)
class Document:
    """One document to index; ``content`` (title, newline, text) is what is embedded, reranked and counted."""

    id: str
    text: str
    title: str = ""
    source: str = ""

    @property
    def content(self) -> str:
        """Title and text joined by a newline, as in the shared BEIR baselines (no title: just the text)."""
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass
class BeirCollection:
    """A BEIR-layout test collection: documents, queries (file order) and graded judgements."""

    name: str
    path: Path
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def judged_query_ids(self) -> list[str]:
        """Queries with a positive judgement, in queries-file order: the ones metrics average over."""
        return [qid for qid in self.queries if any(g > 0 for g in self.qrels.get(qid, {}).values())]


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _open_text(path: Path) -> TextIO:
    """Open plain or gzip text as UTF-8; turn OS errors into a CorpusError naming the file."""
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
        return open(path, encoding="utf-8")
    except PermissionError:
        raise CorpusError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for non-blank lines, with decoding errors reported by line."""
    with _open_text(path) as handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError:
            raise CorpusError(f"{path}:{lineno + 1}: not valid UTF-8 text") from None
        except (OSError, EOFError) as exc:
            raise CorpusError(f"{path}:{lineno + 1}: cannot read ({exc})") from None


def _json_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _field(path: Path, lineno: int, obj: dict[str, Any], key: str, *, required: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise CorpusError(f"{path}:{lineno}: missing {key!r} field")
        return ""
    if key == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise CorpusError(f"{path}:{lineno}: {key!r} must be a string, got {type(value).__name__}")
    if key == "_id" and not value.strip():
        raise CorpusError(f"{path}:{lineno}: empty '_id'")
    return value


def read_corpus_jsonl(path: str | os.PathLike[str]) -> list[Document]:
    """BEIR ``corpus.jsonl``: one ``{"_id", "title"?, "text"}`` object per line; ids must be unique."""
    path = Path(path)
    docs: list[Document] = []
    first_line: dict[str, int] = {}
    for lineno, line in _lines(path):
        obj = _json_object(path, lineno, line)
        doc_id = _field(path, lineno, obj, "_id", required=True)
        text = _field(path, lineno, obj, "text", required=True)
        title = _field(path, lineno, obj, "title", required=False)
        if doc_id in first_line:
            raise CorpusError(f"{path}:{lineno}: duplicate _id {doc_id!r} (first seen on line {first_line[doc_id]})")
        first_line[doc_id] = lineno
        docs.append(Document(id=doc_id, text=text, title=title))
    if not docs:
        raise CorpusError(f"{path}: no documents (the file is empty)")
    return docs


def read_queries_jsonl(path: str | os.PathLike[str]) -> dict[str, str]:
    """BEIR ``queries.jsonl``: ``{"_id", "text"}`` per line, kept in file order."""
    path = Path(path)
    queries: dict[str, str] = {}
    for lineno, line in _lines(path):
        obj = _json_object(path, lineno, line)
        qid = _field(path, lineno, obj, "_id", required=True)
        text = _field(path, lineno, obj, "text", required=True)
        if qid in queries:
            raise CorpusError(f"{path}:{lineno}: duplicate query _id {qid!r}")
        queries[qid] = text
    return queries


def read_qrels_tsv(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """BEIR ``qrels.tsv``: ``query-id<TAB>corpus-id<TAB>score`` with an optional header line."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in _lines(path):
        parts = line.rstrip("\r\n").split("\t")
        if lineno == 1 and parts[:2] == ["query-id", "corpus-id"]:
            continue
        if len(parts) != 3:
            raise CorpusError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(parts)}")
        qid, did, grade = (p.strip() for p in parts)
        try:
            value = int(grade)
        except ValueError:
            raise CorpusError(f"{path}:{lineno}: relevance score {grade!r} is not an integer") from None
        qrels.setdefault(qid, {})[did] = value
    return qrels


def _check_folder(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"folder not found: {path}")
    if not path.is_dir():
        raise CorpusError(f"not a folder: {path}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CorpusError(f"cannot read folder {path}: permission denied")


@dataclass
class SkippedFiles:
    """Files a folder ingest did not read, by reason (each reason: extension -> count), to tell the user."""

    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    named: dict[str, list[str]] = field(default_factory=dict)  # reason -> the files, where they are worth naming

    def add(self, reason: str, file: Path, name: str | None = None) -> None:
        suffix = file.suffix.lower() or "(no extension)"
        counts = self.reasons.setdefault(reason, {})
        counts[suffix] = counts.get(suffix, 0) + 1
        if name is not None:
            self.named.setdefault(reason, []).append(name)

    @property
    def count(self) -> int:
        return sum(sum(counts.values()) for counts in self.reasons.values())

    def describe(self) -> str:
        """E.g. ``skipped 3 files: 2 .csv, 1 .docx (not a supported type: ...); 1 .pdf (no text)``; "" if none."""
        if not self.count:
            return ""
        groups = []
        for reason, counts in self.reasons.items():
            listed = ", ".join(f"{n} {suffix}" for suffix, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
            names = self.named.get(reason, [])
            if names:
                more = f", … ({len(names) - 5:,} more)" if len(names) > 5 else ""
                reason = f"{reason}: {', '.join(names[:5])}{more}"
            groups.append(f"{listed} ({reason})")
        return f"skipped {self.count:,} file{'s' if self.count != 1 else ''}: " + "; ".join(groups)


_UNSUPPORTED = f"not a supported type: {', '.join(SUPPORTED_SUFFIXES)}"
_NO_TEXT = "no text (a scanned PDF needs OCR first)"
_REDIRECT = "redirect stubs (meta refresh), not documents"
_EXCLUDED = "excluded by --exclude/--include"


def _file_document(file: Path, doc_id: str, skipped: SkippedFiles | None) -> Document | None:
    """One file as a document; ``None`` (and noted in ``skipped``) when it has no text or no reader here."""
    try:
        title, text = read_file(file)
    except RedirectPage as exc:
        if skipped is None:
            raise
        skipped.add(_REDIRECT, file, f"{doc_id} -> {exc.target}")
        return None
    except ReaderUnavailable as exc:
        if skipped is None:
            raise
        skipped.add(exc.hint, file)
        return None
    if not text.strip():
        if skipped is not None:
            skipped.add(_NO_TEXT if file.suffix.lower() == ".pdf" else "empty", file)
        return None
    return Document(id=doc_id, text=text.strip(), title=title, source=doc_id)


def selected(relative: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether a file (POSIX path relative to the ingested folder) passes ``--include``/``--exclude`` globs.

    A pattern without ``/`` matches the file name (``print.html``, ``*.pdf``); one with ``/`` matches the whole
    relative path, ``*`` crossing folders (``book/first-edition/*``). Excludes win; with includes, a file must
    match one of them.
    """
    name = relative.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(relative if "/" in pattern else name, pattern.strip("/"))

    if any(hit(p) for p in exclude):
        return False
    return not include or any(hit(p) for p in include)


def read_text_folder(
    path: str | os.PathLike[str],
    skipped: SkippedFiles | None = None,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[Document]:
    """Every .txt/.md/.html/.pdf file under ``path`` (recursively, hidden entries skipped, sorted), one document
    each; other files, empty ones, redirect stubs, files left out by ``include``/``exclude`` (see
    :func:`selected`) and PDFs with no reader installed are noted in ``skipped``.

    The id is the POSIX path relative to the folder, so re-ingesting the same folder upserts the same ids.
    Whitespace-only files are skipped: an empty document only adds noise to retrieval.
    """
    root = Path(path)
    _check_folder(root)
    skipped = skipped if skipped is not None else SkippedFiles()
    docs: list[Document] = []

    def on_error(exc: OSError) -> None:
        raise CorpusError(f"cannot read {exc.filename or root}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            file = Path(dirpath) / name
            relative = file.relative_to(root).as_posix()
            if not selected(relative, include, exclude):
                skipped.add(_EXCLUDED, file)
                continue
            if not name.lower().endswith(SUPPORTED_SUFFIXES):
                skipped.add(_UNSUPPORTED, file)
                continue
            doc = _file_document(file, relative, skipped)
            if doc is not None:
                docs.append(doc)
    if not docs:
        detail = f"; {skipped.describe()}" if skipped.count else ""
        raise CorpusError(
            f"no readable {', '.join(SUPPORTED_SUFFIXES)} files under {root} (and no corpus.jsonl){detail}"
        )
    return docs


def is_beir_source(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a corpus.jsonl (or a folder with one): documents whose ids are judged, kept as given."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.name.endswith((".jsonl", ".jsonl.gz"))
    return path.is_dir() and _find(path, "corpus.jsonl") is not None


def read_documents(
    path: str | os.PathLike[str], *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[list[Document], SkippedFiles]:
    """:func:`load_documents`, plus what a folder ingest skipped (for the user to see); ``include``/``exclude``
    globs choose files of a folder (:func:`selected`)."""
    path = Path(path).expanduser()
    skipped = SkippedFiles()
    if path.is_file():
        if path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz"):
            return read_corpus_jsonl(path), skipped
        doc = _file_document(path, path.name, None)
        if doc is None:
            raise CorpusError(f"{path}: {_NO_TEXT if path.suffix.lower() == '.pdf' else 'the file is empty'}")
        return [doc], skipped
    _check_folder(path)
    corpus = _find(path, "corpus.jsonl")
    if corpus is not None:
        return read_corpus_jsonl(corpus), skipped
    return read_text_folder(path, skipped, include=include, exclude=exclude), skipped


def load_documents(path: str | os.PathLike[str]) -> list[Document]:
    """Documents from a BEIR folder (corpus.jsonl[.gz]), one .jsonl file, one .txt/.md/.html/.pdf file, or a
    folder of them."""
    return read_documents(path)[0]


def load_beir(path: str | os.PathLike[str], name: str | None = None) -> BeirCollection:
    """A BEIR-layout folder with corpus, queries and qrels, all required (this is what ``eval`` reads)."""
    folder = Path(path).expanduser()
    _check_folder(folder)
    files = {}
    for required in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        found = _find(folder, required)
        if found is None:
            raise CorpusError(f"{folder} is not a BEIR folder: {required} is missing")
        files[required] = found
    collection = BeirCollection(
        name=name or folder.resolve().name,
        path=folder,
        corpus=read_corpus_jsonl(files["corpus.jsonl"]),
        queries=read_queries_jsonl(files["queries.jsonl"]),
        qrels=read_qrels_tsv(files["qrels.tsv"]),
    )
    if not collection.judged_query_ids():
        raise CorpusError(f"{files['qrels.tsv']}: no query in queries.jsonl has a positive judgement")
    return collection


@contextlib.contextmanager
def packaged_med() -> Iterator[Path]:
    """The MED collection shipped inside the package (gzip BEIR files), as a real folder."""
    from importlib.resources import as_file, files

    resource = files("zerank_integrations").joinpath("data", "med")
    with as_file(resource) as folder:
        path = Path(folder)
        if not (path / "corpus.jsonl.gz").is_file():
            raise CorpusError(f"the bundled MED collection is missing from {path}; reinstall zerank-integrations")
        yield path
