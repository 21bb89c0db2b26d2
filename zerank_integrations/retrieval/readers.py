"""Plain text out of the files people have: .txt/.md as they are, HTML without its markup, PDF via pypdf.

Each reader returns the document's title (or "") and text, and reports a problem as a :class:`CorpusError` naming
the file. HTML is read with the standard library's parser (scripts, styles and the head left out; block elements
become line breaks); PDF needs ``pypdf`` (``pip install 'zerank-integrations[pdf]'``), imported only when a PDF
is read. A reader that cannot run here (no pypdf) raises :class:`ReaderUnavailable`, so a folder ingest can skip
those files and say why instead of failing.
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Callable
from pathlib import Path

from zerank_integrations.retrieval.errors import CorpusError

__all__ = ["PDF_INSTALL_HINT", "READERS", "SUPPORTED_SUFFIXES", "ReaderUnavailable", "read_file", "supported"]

PDF_INSTALL_HINT = "needs pypdf: pip install 'zerank-integrations[pdf]'"


class ReaderUnavailable(CorpusError):
    """The file type is supported, but its reader's package is not installed (``hint`` says what to install)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    except PermissionError:
        raise CorpusError(f"cannot read {path}: permission denied") from None
    except OSError as exc:
        raise CorpusError(f"cannot read {path}: {exc.strerror or exc}") from None


def _tidy(text: str) -> str:
    """Spaces collapsed within lines, at most one blank line in a row, no blank ends."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def read_plain(path: Path) -> tuple[str, str]:
    return "", _read_utf8(path).strip()


# Elements whose content is never page text, and elements that end a line of text.
_HIDDEN = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object"})
_BLOCKS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    ]
)


class _HtmlText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.parts.append(data)


def html_text(markup: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return " ".join("".join(parser.title).split()), _tidy("".join(parser.parts))


def read_html(path: Path) -> tuple[str, str]:
    return html_text(_read_utf8(path))


def read_pdf(path: Path) -> tuple[str, str]:
    """The text layer of every page, pages separated by a blank line (a scanned PDF without one has no text)."""
    try:
        import pypdf
    except ImportError:
        raise ReaderUnavailable(f"{path}: reading .pdf files {PDF_INSTALL_HINT}", PDF_INSTALL_HINT) from None
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise CorpusError(f"{path}: the PDF is encrypted")
        pages = [page.extract_text() or "" for page in reader.pages]
    except CorpusError:
        raise
    except PermissionError:
        raise CorpusError(f"cannot read {path}: permission denied") from None
    except Exception as exc:  # pypdf raises many types for damaged files
        raise CorpusError(f"{path}: cannot read the PDF ({type(exc).__name__}: {exc})") from None
    return "", _tidy("\n\n".join(pages))


READERS: dict[str, Callable[[Path], tuple[str, str]]] = {
    ".txt": read_plain,
    ".md": read_plain,
    ".markdown": read_plain,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
}
SUPPORTED_SUFFIXES = tuple(READERS)


def supported(path: Path) -> bool:
    return path.suffix.lower() in READERS


def read_file(path: Path) -> tuple[str, str]:
    """(title, text) of one supported file; ``CorpusError`` for an unsupported type or an unreadable file."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise CorpusError(f"cannot read {path}: not a supported file type (supported: {', '.join(READERS)})")
    return reader(path)
