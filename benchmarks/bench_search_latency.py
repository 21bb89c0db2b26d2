"""How long a repeated ``search`` takes: a new process per question vs. ``search --interactive``.

A new ``zerank-integrations search`` process pays Python, torch, chromadb and model start-up every time;
``--interactive`` pays it once and then one search per line of standard input. Both run here side by side on
the same collection (``--chroma-path``/``--collection``, e.g. the Rust book from ``bench_ingest.py`` or any
``ingest``), with ``--no-rerank`` by default, or reranking with ``--model DIR`` (e.g. a ``make-test-model``
checkpoint). Per-question cost of the interactive mode = (time for 1 + N questions - time for 1) / N.

    python benchmarks/bench_search_latency.py --chroma-path DIR --collection NAME [--model DIR] [--n 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

QUESTIONS = Path(__file__).resolve().parent / "data" / "rust_book_questions.json"


def timed(command: list[str], stdin: str | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chroma-path", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--model", default=None, help="rerank with this model (default: --no-rerank)")
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    questions = [q["q"] for q in json.loads(QUESTIONS.read_text())][: args.n + 1]
    base = [sys.executable, "-m", "zerank_integrations.cli", "search"]
    options = ["--chroma-path", args.chroma_path, "--collection", args.collection]
    options += ["--model", args.model] if args.model else ["--no-rerank"]
    cold = [timed([*base, q, *options]) for q in questions[:3]]
    one = timed([*base, "--interactive", *options], questions[0] + "\n")
    many = timed([*base, "--interactive", *options], "\n".join(questions) + "\n")
    row = {
        "rerank": args.model or "none (--no-rerank)",
        "new_process_per_question_s": [round(x, 2) for x in cold],
        "interactive_start_plus_1_s": round(one, 2),
        "interactive_per_question_s": round((many - one) / args.n, 3),
        "questions": args.n,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
