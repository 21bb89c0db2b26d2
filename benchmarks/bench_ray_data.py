"""Batch reranking on Ray Data (1 and 2 workers) against the in-process ``RerankStep``, on one workload.

Each of R rows is (one query, D documents) from a BEIR collection (``bench_server``'s workload: scifact by
default, synthetic text if it is missing). The same rows are reranked (score → select top 5 → count tokens
for gpt-4o) by:

- ``in-process, T threads``: ``RerankStep.run`` on each row in this process, torch with T intra-op threads;
- ``Ray Data, N workers``: ``rerank_dataset(..., workers=N)`` on a local Ray cluster with N CPUs, each worker
  an actor with one scorer and one torch thread (Ray sets ``OMP_NUM_THREADS`` to the actor's 1 CPU).

Reported: pairs/s over the whole job's wall clock. For Ray that includes starting the workers (a process
each: import torch, load the model), so a job of two rows per worker is timed too, and "pairs/s beyond it"
is the extra pairs of the whole job over its extra time: the rate once the workers are up. Every Ray result
is checked against the in-process scores (exactly equal). Without ``--model`` a small random-weight
checkpoint with the real Qwen3 tokenizer is built (scores are meaningless, costs are real).

    python benchmarks/bench_ray_data.py [--model PATH] [--rows 64] [--docs 16] [--workers 1 2]
        [--hidden-size 64 --layers 2] [--repeat 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_server import build_workload  # the same (query, documents) rows as the server benchmark

from zerank_integrations.ray_support import local_cluster_options, prepare_local_cluster

REPO = Path(__file__).resolve().parents[1]
TOP_N = 5


def bench_in_process(step: Any, work: list[tuple[str, list[str]]]) -> tuple[float, list[list[float]]]:
    start = time.perf_counter()
    results = [step.run(query, docs) for query, docs in work]
    elapsed = time.perf_counter() - start
    return elapsed, [[score for _, score in sorted(r.ranking)] for r in results]


def bench_ray(model: str, work: list[tuple[str, list[str]]], workers: int) -> tuple[float, list[list[float]]]:
    """One whole job on ``workers`` fresh workers: wall clock (start-up included) and every row's scores."""
    import ray.data

    from zerank_integrations.ray_data import rerank_dataset

    rows = [{"row": k, "query": q, "documents": docs} for k, (q, docs) in enumerate(work)]
    start = time.perf_counter()
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), workers * 8))
    out = rerank_dataset(dataset, model, workers=workers, batch_size=1, top_n=TOP_N, llm="gpt-4o", device="cpu")
    scores = {int(r["row"]): [float(s) for s in r["scores"]] for r in out.select_columns(["row", "scores"]).take_all()}
    return time.perf_counter() - start, [scores[k] for k in range(len(rows))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint path (default: build a random one)")
    parser.add_argument("--hidden-size", type=int, default=64, help="for the built checkpoint")
    parser.add_argument("--layers", type=int, default=2, help="for the built checkpoint")
    parser.add_argument("--datasets", type=Path, default=REPO.parent / "shared/datasets")
    parser.add_argument("--rows", type=int, default=64, help="queries (dataset rows)")
    parser.add_argument("--docs", type=int, default=16, help="documents per row")
    parser.add_argument("--doc-chars", type=int, default=600, help="characters kept per document")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell; the fastest is reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    prepare_local_cluster()  # before importing ray: the cluster binds to loopback
    import ray
    import ray.data
    import torch

    from zerank_integrations import TokenLedger, ZerankScorer
    from zerank_integrations.rerank import RerankStep
    from zerank_integrations.selection import SelectionPolicy
    from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="zerank-bench-ray-") as tmp:
        model = args.model or str(
            build_test_checkpoint(
                Path(tmp) / "ckpt", find_qwen3_tokenizer(REPO), hidden_size=args.hidden_size, num_layers=args.layers
            )
        )
        work = build_workload(args.datasets, args.rows, args.docs, args.doc_chars)
        pairs = sum(len(d) for _, d in work)
        step = RerankStep(ZerankScorer(model, device="cpu"), SelectionPolicy(top_n=TOP_N), ledger=TokenLedger("gpt-4o"))
        step.run(*work[0])  # warm-up
        results: dict[str, dict[str, float]] = {}
        reference: list[list[float]] = []
        default_threads = torch.get_num_threads()
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            runs = [bench_in_process(step, work) for _ in range(max(1, args.repeat))]
            elapsed, reference = min(runs, key=lambda run: run[0])
            results[f"in-process, {threads} thread{'s' if threads > 1 else ''}"] = {"wall_s": elapsed}
            print(f"in-process, {threads} threads: {pairs / elapsed:,.0f} pairs/s", flush=True)
        torch.set_num_threads(default_threads)

        ray.init(num_cpus=max(args.workers), **local_cluster_options(), logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            for workers in args.workers:
                small = work[: 2 * workers]  # two rows per worker: start-up plus a little work
                small_s = min(bench_ray(model, small, workers)[0] for _ in range(max(1, args.repeat)))
                runs = [bench_ray(model, work, workers) for _ in range(max(1, args.repeat))]
                elapsed, scores = min(runs, key=lambda run: run[0])
                if scores != reference:
                    raise RuntimeError(f"Ray Data with {workers} workers scored differently from the in-process step")
                extra_pairs = pairs - sum(len(d) for _, d in small)
                steady = extra_pairs / (elapsed - small_s) if elapsed > small_s else None
                name = f"Ray Data, {workers} worker{'s' if workers > 1 else ''}"
                results[name] = {"wall_s": elapsed, "small_job_s": small_s, "steady_pairs_per_s": steady}
                print(name, results[name], flush=True)
        finally:
            ray.shutdown()

    print(
        f"\n{args.rows} rows x {args.docs} documents ({pairs:,} pairs), top {TOP_N} kept; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, ray {ray.__version__}\n"
    )
    print("| engine | wall s | pairs/s (whole job) | job of 2 rows per worker, s | pairs/s beyond it |")
    print("|---|---:|---:|---:|---:|")
    for name, row in results.items():
        small, steady = row.get("small_job_s"), row.get("steady_pairs_per_s")
        cells = [f"{row['wall_s']:.2f}", f"{pairs / row['wall_s']:,.0f}"]
        cells += [f"{small:.2f}" if small is not None else "—", f"{steady:,.0f}" if steady else "—"]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"\nload average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json is not None:
        args.json.write_text(json.dumps({"pairs": pairs, "results": results}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
