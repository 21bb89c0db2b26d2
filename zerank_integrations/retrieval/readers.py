"""Plain text out of the files people have: .txt/.md as they are, HTML as its main content, PDF via pypdf.

Each reader returns the document's title (or "") and text, and reports a problem as a :class:`CorpusError` naming
the file. HTML becomes Markdown-like text of the page's main content (:func:`html_text`): headings as ``#`` lines
(the sections chunking follows), ``<pre>`` verbatim in code fences, list items and table rows on their own
lines, site navigation and interface text left out; a meta-refresh stub raises :class:`RedirectPage`. PDF needs
``pypdf`` (``pip install 'zerank-integrations[pdf]'``), imported only when a PDF is read; running headers and
footers repeated on most pages are dropped. A reader that cannot run here (no pypdf) raises
:class:`ReaderUnavailable`, so a folder ingest can skip those files and say why instead of failing.
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
_HIDDEN = frozenset({"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button"})
#: Site furniture: dropped when no extractor picked the main content (the whole page is walked).
_CHROME = frozenset({"nav", "header", "footer", "aside", "form", "menu", "dialog"})
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
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "section",
        "summary",
        "table",
        "tr",
        "ul",
        "caption",
    ]
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}


class _MarkupText(html.parser.HTMLParser):
    """HTML as Markdown-like text: ``#`` headings, ```` ``` ```` fences around verbatim ``<pre>``, ``- `` list
    items, `` | `` between table cells; everything else as paragraphs with spaces collapsed."""

    def __init__(self, *, drop_chrome: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.main: list[str] = []  # what the page marks as its main content (<main>, or role="main")
        self.title: list[str] = []
        self.refresh: str | None = None
        self._main: list[str] = []  # open elements from the main-content one down (same tag name)
        self._skip: list[str] = []  # open hidden/chrome elements (their content is dropped)
        self._drop = _HIDDEN | _CHROME if drop_chrome else _HIDDEN
        self._pre = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            values = {k.lower(): (v or "") for k, v in attrs}
            if values.get("http-equiv", "").lower() == "refresh":
                found = re.search(r"url\s*=\s*['\"]?([^'\">\s]+)", values.get("content", ""), re.I)
                self.refresh = found.group(1) if found else values.get("content", "")
            return
        if (self._main and tag == self._main[0]) or (not self._main and (tag == "main" or ("role", "main") in attrs)):
            self._main.append(tag)
        if tag == "title":
            self._in_title = True
        elif self._skip or tag in self._drop:
            if tag in self._drop:
                self._skip.append(tag)
        elif tag == "pre":
            self._pre += 1
            if self._pre == 1:
                self._emit("\n\n```\n")
        elif self._pre:
            return
        elif tag in _HEADINGS:
            self._emit("\n\n" + "#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._emit("\n- ")
        elif tag in ("td", "th"):
            self._emit(" | ")
        elif tag == "p":
            self._emit("\n\n")
        elif tag in _BLOCKS:
            self._emit("\n")

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        if self._main:
            self.main.append(text)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            self.handle_starttag(tag, attrs)
        elif not self._skip and tag in ("br", "hr"):
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if self._main and tag == self._main[0]:
            self._main.pop()
            if not self._main:
                self.main.append("\n")
        if tag == "title":
            self._in_title = False
        elif self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
        elif tag == "pre" and self._pre:
            self._pre -= 1
            if not self._pre:
                self._emit("\n```\n\n")
        elif self._pre:
            return
        elif tag in _HEADINGS or tag == "p":
            self._emit("\n\n")
        elif tag in _BLOCKS and tag not in ("tr", "li"):  # a row or item ends where the next one starts
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif self._skip:
            return
        elif self._pre:
            if self.parts and self.parts[-1].endswith("```\n") and data.startswith("\n"):
                data = data[1:]  # HTML drops a newline right after <pre>
            self._emit(data)
        else:
            self._emit(re.sub(r"\s+", " ", data))


def _tidy_markup(text: str) -> str:
    """Lines tidied outside code fences (inside them every character is kept), blank runs squeezed."""
    out: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if line.strip() == "```":
            while fenced and out and not out[-1]:
                out.pop()  # the code's own trailing newline
            fenced = not fenced
            out.append("```")
        elif fenced:
            out.append(line.rstrip())
        else:
            line = " ".join(line.split())
            out.append(line[2:] if line.startswith("| ") else line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _walk(markup: str, *, drop_chrome: bool) -> _MarkupText:
    parser = _MarkupText(drop_chrome=drop_chrome)
    parser.feed(markup)
    parser.close()
    return parser


def markup_text(markup: str) -> str:
    """The text of an HTML fragment (an extractor's main content), structure kept: see :class:`_MarkupText`."""
    return _tidy_markup("".join(_walk(markup, drop_chrome=False).parts))


def page_text(markup: str) -> str:
    """The text of a whole page with its navigation, headers, footers, asides and forms left out."""
    return _tidy_markup("".join(_walk(markup, drop_chrome=True).parts))


class RedirectPage(CorpusError):
    """An HTML page that only sends the reader elsewhere (meta refresh): not a document."""

    def __init__(self, path: object, target: str) -> None:
        super().__init__(f"{path}: a redirect to {target}, not a document")
        self.target = target


def html_text(markup: str, path: object = "page") -> tuple[str, str]:
    """(title, main text) of an HTML page; :class:`RedirectPage` for a meta-refresh stub.

    The main content is what the page marks as such (``<main>`` or ``role="main"``: every mdBook, rustdoc,
    Sphinx and most modern sites), walked with its structure kept. A page that marks none goes to trafilatura
    (in the ``[chroma]`` extra, which ``ingest`` needs); without it, the whole page is walked with navigation,
    headers, footers, asides and forms left out. ``benchmarks/bench_extraction.py`` measured the choice.
    """
    page = _walk(markup, drop_chrome=True)
    title = " ".join("".join(page.title).split())
    if page.refresh is not None:
        raise RedirectPage(path, page.refresh)
    marked = _tidy_markup("".join(page.main))
    if marked:
        return title, marked
    return title, trafilatura_text(markup) or _tidy_markup("".join(page.parts))


def trafilatura_text(markup: str) -> str | None:
    """The main content as Markdown by trafilatura (``pip install 'zerank-integrations[html]'``), for pages that
    do not mark it; ``None`` without trafilatura or when it finds nothing."""
    try:
        import trafilatura
    except ImportError:
        return None
    text = trafilatura.extract(
        markup,
        output_format="markdown",
        include_formatting=True,
        include_tables=True,
        include_links=False,
        include_comments=False,
        deduplicate=False,
    )
    return text.strip() if text and text.strip() else None


def read_html(path: Path) -> tuple[str, str]:
    return html_text(_read_utf8(path), path)


def without_running_lines(pages: list[str], edge: int = 2) -> list[str]:
    """Pages without their running headers and footers: a line among the first or last ``edge`` lines of a page
    that recurs (digits ignored, so page numbers match) at the edge of at least half the pages, of three or more."""
    if len(pages) < 3:
        return pages
    split = [page.split("\n") for page in pages]

    def key(line: str) -> str:
        return re.sub(r"\d+", "#", " ".join(line.split()).lower())

    counts: dict[str, int] = {}
    for lines in split:
        for line in {key(x) for x in lines[:edge] + lines[-edge:] if x.strip()}:
            counts[line] = counts.get(line, 0) + 1
    running = {line for line, n in counts.items() if n * 2 >= len(pages)}
    if not running:
        return pages
    out = []
    for lines in split:
        if len(lines) <= 2 * edge:
            out.append("\n".join(x for x in lines if key(x) not in running))
            continue
        head = [x for x in lines[:edge] if key(x) not in running]
        tail = [x for x in lines[-edge:] if key(x) not in running]
        out.append("\n".join(head + lines[edge:-edge] + tail))
    return out


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
        pages = without_running_lines([page.extract_text() or "" for page in reader.pages])
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
