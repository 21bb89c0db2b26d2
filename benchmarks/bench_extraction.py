"""Which HTML extractor gives clean text on real documentation sites: measured, not guessed.

Runs each candidate over pages of the Rust docs that every rustup toolchain ships (the book and the cargo book,
both mdBook; the standard library's API pages, rustdoc) and scores the text against the page's own main-content
element (mdBook ``<main>``, rustdoc ``#main-content``), which is what a reader sees as the page:

- chrome: pages whose text holds site interface text (mdBook's keyboard help and theme menu, "Search this book",
  rustdoc's settings/help buttons);
- recall / precision: word 3-grams of the main content found in the text, and of the text found in the main content;
- code: indented lines of ``<pre>`` blocks found verbatim (indentation kept) as lines of the text;
- headings: h1-h4 of the main content found as Markdown heading lines;
- ms/page: extraction time.

    python benchmarks/bench_extraction.py [--pages 60] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

CHROME = (
    "Keyboard shortcuts",
    "to navigate between chapters",
    "Search this book",
    "Auto Light Rust Coal Navy Ayu",
    "Press ? to show this help",
    "Previous chapter",
    "Change settings",
    "Show this help dialog",
)


def rust_html() -> Path | None:
    found = sorted(glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html")))
    return Path(found[0]) if found else None


def pages(root: Path, per_site: int, seed: int = 0) -> dict[str, list[Path]]:
    rng = random.Random(seed)
    sites = {
        "book": [p for p in sorted((root / "book").glob("ch*.html")) if "Redirecting" not in p.read_text()[:400]],
        "cargo": sorted((root / "cargo").rglob("*.html")),
        "std": sorted((root / "std").glob("*/struct.*.html")) + sorted((root / "std").glob("*/trait.*.html")),
    }
    out = {}
    for name, files in sites.items():
        files = [f for f in files if f.name not in ("print.html", "toc.html") and f.stat().st_size > 2000]
        out[name] = sorted(rng.sample(files, min(per_site, len(files))))
    return out


def _main_element(markup: str) -> tuple[str, list[str], list[str]]:
    """(main text, headings, indented code lines) of the page's main-content element, via lxml."""
    import lxml.html

    tree = lxml.html.fromstring(markup)
    found = tree.xpath("//main") or tree.xpath("//*[@id='main-content']")
    main = found[0]
    for bad in main.xpath(".//script|.//style|.//button|.//*[@id='copy-path']"):
        bad.drop_tree()
    headings = [" ".join(h.text_content().split()) for h in main.xpath(".//h1|.//h2|.//h3|.//h4")]
    code = []
    for pre in main.xpath(".//pre"):
        for line in pre.text_content().splitlines():
            if line.startswith(("  ", "\t")) and line.strip() and len(line.strip()) > 3:
                code.append(line.rstrip())
    return main.text_content(), [h for h in headings if h], code


def _grams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def candidates() -> dict[str, Callable[[str], str]]:
    from zerank_integrations.retrieval import readers

    out: dict[str, Callable[[str], str]] = {
        "no extractor (whole page, nav/header/footer/form dropped)": lambda m: readers.page_text(m),
    }
    try:
        import trafilatura  # noqa: F401  (only to know it is installed)

        # favor_recall=True measured the same on these pages: one setting is shown
        out["trafilatura (markdown)"] = lambda m: readers.trafilatura_text(m) or ""
    except ImportError:
        pass
    try:
        from readability import Document as ReadabilityDocument

        out["readability-lxml + markup walk"] = lambda m: readers.markup_text(ReadabilityDocument(m).summary())
    except ImportError:
        pass
    out["this package: the page's <main>, else trafilatura, else the whole page"] = lambda m: readers.html_text(m)[1]
    return out


def score(extract: Callable[[str], str], files: list[Path], *, hide_main: bool = False) -> dict[str, float]:
    """``hide_main``: the extractor sees the page with its <main> tag renamed to <div> (a site without
    semantic markup), the score still compares with what <main> held."""
    chrome = recall = precision = code_hits = code_total = head_hits = head_total = 0.0
    elapsed = 0.0
    for file in files:
        markup = file.read_text(encoding="utf-8")
        truth, headings, code = _main_element(markup)
        shown = re.sub(r"<(/?)main\b", r"<\1div", markup) if hide_main else markup
        t0 = time.perf_counter()
        text = extract(shown)
        elapsed += time.perf_counter() - t0
        chrome += any(c in text for c in CHROME)
        g_truth, g_text = _grams(truth), _grams(text)
        recall += len(g_truth & g_text) / max(1, len(g_truth))
        precision += len(g_truth & g_text) / max(1, len(g_text))
        lines = {line.rstrip() for line in text.splitlines()}
        code_hits += sum(line in lines for line in code)
        code_total += len(code)
        heading_lines = {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}
        head_hits += sum(h in heading_lines for h in headings)
        head_total += len(headings)
    n = max(1, len(files))
    return {
        "pages": len(files),
        "chrome_pages": int(chrome),
        "recall": round(recall / n, 3),
        "precision": round(precision / n, 3),
        "code_lines_kept": round(code_hits / max(1, code_total), 3),
        "headings_kept": round(head_hits / max(1, head_total), 3),
        "ms_per_page": round(1000 * elapsed / n, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=40, help="pages per site (default 40)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = rust_html()
    if root is None:
        raise SystemExit("no rustup toolchain docs under ~/.rustup/toolchains/*/share/doc/rust/html")
    sites = pages(root, args.pages)
    rows = []
    for name, extract in candidates().items():
        for site, files in sites.items():
            for hide_main in (False, True):
                label = f"{site} (<main> hidden)" if hide_main else site
                row = {"extractor": name, "site": label, **score(extract, files, hide_main=hide_main)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nmachine: {platform.processor() or platform.machine()}, python {platform.python_version()}; {root}")
    print("| extractor | site | pages with chrome | recall | precision | code lines kept | headings kept | ms/page |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['extractor']} | {r['site']} | {r['chrome_pages']}/{r['pages']} | {r['recall']} | {r['precision']} "
            f"| {r['code_lines_kept']} | {r['headings_kept']} | {r['ms_per_page']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
