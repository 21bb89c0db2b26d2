"""Throughput of the rerank server under concurrency, against the in-process scorer, on one workload.

Each of R requests is (one query, D documents) from a BEIR collection (scifact by default; synthetic text if
it is missing). At concurrency 1, 8 and 32 the same requests are scored by:

- ``in-process``: ``ZerankScorer.score`` from C threads (the core is thread-safe; forwards take turns);
- ``in-process, one call``: every pair of every request in a single ``score_pairs`` call, the batching bound;
- ``server``: ``zerank-integrations serve`` in a subprocess, C concurrent HTTP clients, batching across
  requests;
- ``server, no batching``: the same server with ``--max-batch-pairs 1``, so each request is scored on its own.

Reported: pairs/s (wall clock from first request to last answer) and forward passes per request (from the
scorer's counters; for the server, from ``GET /health``). Without ``--model`` a small random-weight
checkpoint with the real Qwen3 tokenizer is built (scores are meaningless, costs are real).

    python benchmarks/bench_server.py [--model PATH] [--requests 64] [--docs 16] [--concurrency 1 8 32]
        [--hidden-size 64 --layers 2] [--batch-wait-ms 5] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def build_workload(datasets: Path, requests: int, docs: int, doc_chars: int) -> list[tuple[str, list[str]]]:
    """Deterministic (query, documents) requests: real scientific text when the collection is present."""
    corpus_file, queries_file = datasets / "scifact/corpus.jsonl", datasets / "scifact/queries.jsonl"
    if corpus_file.is_file() and queries_file.is_file():
        with corpus_file.open() as f:
            corpus = [json.loads(line) for line in itertools.islice(f, 5000)]
        texts = [(d.get("title", "") + "\n" + d["text"]).strip()[:doc_chars] for d in corpus]
        with queries_file.open() as f:
            queries = [json.loads(line)["text"] for line in itertools.islice(f, requests)]
    else:
        texts = [f"Synthetic passage {i}: " + "reranking relevance evidence " * 20 for i in range(1000)]
        texts = [t[:doc_chars] for t in texts]
        queries = [f"synthetic question {i}" for i in range(requests)]
    while len(queries) < requests:
        queries.append(queries[len(queries) % max(1, len(queries))] + " (again)")
    step = 7919  # a prime: every request gets a different spread of documents
    return [(queries[i], [texts[(i * docs + j) * step % len(texts)] for j in range(docs)]) for i in range(requests)]


def bench_in_process(scorer: Any, work: list[tuple[str, list[str]]], concurrency: int) -> dict[str, float]:
    before = scorer.stats
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda item: scorer.score(item[0], item[1]), work))
    elapsed = time.perf_counter() - start
    return _row(work, elapsed, (scorer.stats - before).forward_passes)


def bench_one_call(scorer: Any, work: list[tuple[str, list[str]]]) -> dict[str, float]:
    before = scorer.stats
    start = time.perf_counter()
    scorer.score_pairs([(q, d) for q, docs in work for d in docs])
    elapsed = time.perf_counter() - start
    return _row(work, elapsed, (scorer.stats - before).forward_passes)


async def _hammer(url: str, work: list[tuple[str, list[str]]], concurrency: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(query: str, docs: list[str]) -> None:
            async with semaphore:
                response = await client.post(f"{url}/v1/rerank", json={"query": query, "documents": docs})
                response.raise_for_status()
                if len(response.json()["results"]) != len(docs):
                    raise RuntimeError("the server returned the wrong number of results")

        start = time.perf_counter()
        await asyncio.gather(*(one(q, d) for q, d in work))
        return time.perf_counter() - start


def bench_server(url: str, work: list[tuple[str, list[str]]], concurrency: int) -> dict[str, float]:
    before = httpx.get(f"{url}/health").json()["scorer"]["forward_passes"]
    elapsed = asyncio.run(_hammer(url, work, concurrency))
    after = httpx.get(f"{url}/health").json()["scorer"]["forward_passes"]
    return _row(work, elapsed, after - before)


def best_of(repeat: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The fastest of ``repeat`` runs: other processes on a shared machine only ever slow a run down."""
    return max((run() for _ in range(max(1, repeat))), key=lambda row: row["pairs_per_s"])


def _row(work: list[tuple[str, list[str]]], elapsed: float, forward_passes: int) -> dict[str, float]:
    pairs = sum(len(d) for _, d in work)
    return {
        "seconds": round(elapsed, 3),
        "pairs_per_s": round(pairs / elapsed, 1),
        "forward_passes": forward_passes,
        "forward_passes_per_request": round(forward_passes / len(work), 2),
    }


def add_workload_arguments(parser: argparse.ArgumentParser, *, hidden_size: int, layers: int) -> None:
    """The model and workload options this benchmark and ``bench_ray_serve`` share."""
    parser.add_argument("--model", default=None, help="checkpoint path or id (default: build a random one)")
    parser.add_argument("--hidden-size", type=int, default=hidden_size, help="for the built checkpoint")
    parser.add_argument("--layers", type=int, default=layers, help="for the built checkpoint")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared/datasets")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--docs", type=int, default=16, help="documents per request")
    parser.add_argument("--doc-chars", type=int, default=600, help="characters kept per document")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)


class ServerProcess:
    """``python -m zerank_integrations.serving`` on a free loopback port, for one benchmark mode."""

    def __init__(self, model: str, extra: list[str], torch_threads: int) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "zerank_integrations.serving", "--model", model, "--port", str(port)]
        command += ["--log-level", "warning", "--device", "cpu", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": str(torch_threads), "MKL_NUM_THREADS": str(torch_threads)}
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 180 s")
            time.sleep(0.2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_arguments(parser, hidden_size=64, layers=2)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads for the in-process scorer and the server (default 1: on a small shared "
        "machine more threads than free cores make OpenMP spin and timings swing by 10x)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the fastest is reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    from zerank_integrations import ZerankScorer

    torch.set_num_threads(args.torch_threads)
    from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

    with tempfile.TemporaryDirectory(prefix="zerank-bench-server-") as tmp:
        model = args.model
        if model is None:
            model = str(
                build_test_checkpoint(
                    Path(tmp) / "ckpt",
                    find_qwen3_tokenizer(REPO),
                    hidden_size=args.hidden_size,
                    num_layers=args.layers,
                )
            )
        work = build_workload(args.datasets, args.requests, args.docs, args.doc_chars)
        scorer = ZerankScorer(model, device="cpu")
        scorer.score(*work[0])  # warm-up
        results: dict[str, dict[int, dict[str, float]]] = {"in-process": {}, "in-process, one call": {}}
        for c in args.concurrency:
            results["in-process"][c] = best_of(args.repeat, lambda c=c: bench_in_process(scorer, work, c))
            print("in-process", c, results["in-process"][c], flush=True)
        results["in-process, one call"][0] = best_of(args.repeat, lambda: bench_one_call(scorer, work))
        print("in-process, one call", results["in-process, one call"][0], flush=True)
        modes = {
            "server": ["--batch-wait-ms", str(args.batch_wait_ms)],
            "server, no batching": ["--batch-wait-ms", "0", "--max-batch-pairs", "1"],
        }
        for name, extra in modes.items():
            server = ServerProcess(model, extra, args.torch_threads)
            try:
                bench_server(server.url, work[:2], 1)  # warm-up
                results[name] = {}
                for c in args.concurrency:
                    results[name][c] = best_of(args.repeat, lambda c=c, url=server.url: bench_server(url, work, c))
                    print(name, c, results[name][c], flush=True)
            finally:
                server.close()

    describe_run(args, work, f"torch threads: {args.torch_threads}; ")
    print("| mode | concurrency | pairs/s | forward passes / request | seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results.items():
        for c, row in rows.items():
            label = "all at once" if c == 0 else str(c)
            print(
                f"| {name} | {label} | {row['pairs_per_s']} | {row['forward_passes_per_request']} | {row['seconds']} |"
            )
    write_json(args, results)


def machine_line() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, python {platform.python_version()}"


def describe_run(args: argparse.Namespace, work: list[tuple[str, list[str]]], extra: str = "") -> None:
    """The lines every server benchmark prints above its table: load, machine, model, workload."""
    pairs = sum(len(d) for _, d in work)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}; {extra}best of {args.repeat}")
    print(f"machine: {machine_line()}; model: {args.model or f'random Qwen3 {args.hidden_size}x{args.layers}'}")
    print(f"workload: {args.requests} requests x {args.docs} documents ({pairs} pairs), <= {args.doc_chars} chars each")


def write_json(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        report = {"machine": machine_line(), "settings": settings, "results": results}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
