"""The Ray Serve engine on this machine: one vs two replicas, and requests per forward pass with batching.

The same R requests (one query, D documents each; see ``bench_server.build_workload``) at concurrency 1, 8
and 32 against

- ``local serve``: ``zerank-integrations serve`` (uvicorn, one process, one torch thread), the reference;
- ``ray, 1 replica`` and ``ray, 2 replicas``: ``serve --engine ray``'s application on a local Ray cluster
  (each replica reserves one CPU, so Ray gives it one torch thread), behind Serve's HTTP proxy;
- ``ray, 2 replicas, no batching``: the same with ``max_batch_pairs=1`` (every request scored alone).

Reported: pairs/s (first request to last answer, the best of ``--repeat`` runs), requests per scoring call
and forward passes per request, both read from the replicas' own ``/metrics`` (``zerank_batch_requests``,
``zerank_forward_passes_total``, summed over the ``replica`` label). Without ``--model`` a random-weight
checkpoint with the real Qwen3 tokenizer is built (scores meaningless, costs real).

    python benchmarks/bench_ray_serve.py [--model PATH] [--requests 64] [--docs 16] [--concurrency 1 8 32]
        [--hidden-size 256 --layers 4] [--repeat 2] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from bench_server import (  # a sibling script
    REPO,
    ServerProcess,
    _hammer,
    add_workload_arguments,
    best_of,
    build_workload,
    describe_run,
    write_json,
)
from prometheus_client.parser import text_string_to_metric_families

from zerank_integrations.ray_support import local_cluster_options, prepare_local_cluster


def scraped(url: str) -> dict[str, float]:
    """Sums over every replica: scoring calls, requests scored in them, forward passes."""
    totals = {"calls": 0.0, "requests": 0.0, "forward_passes": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "zerank_batch_requests_count":
                totals["calls"] += sample.value
            elif sample.name == "zerank_batch_requests_sum":
                totals["requests"] += sample.value
            elif sample.name == "zerank_forward_passes_total":
                totals["forward_passes"] += sample.value
    return totals


def measure(url: str, work: list[tuple[str, list[str]]], concurrency: int, settle_s: float) -> dict[str, float]:
    before = scraped(url)
    elapsed = asyncio.run(_hammer(url, work, concurrency))
    time.sleep(settle_s)  # Ray replicas report their counters every second
    after = scraped(url)
    pairs = sum(len(d) for _, d in work)
    calls = after["calls"] - before["calls"]
    return {
        "seconds": round(elapsed, 3),
        "pairs_per_s": round(pairs / elapsed, 1),
        "requests_per_call": round((after["requests"] - before["requests"]) / calls, 2) if calls else 0.0,
        "forward_passes_per_request": round((after["forward_passes"] - before["forward_passes"]) / len(work), 2),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_arguments(parser, hidden_size=256, layers=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (one per replica)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per cell; the fastest is reported")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    prepare_local_cluster()  # before importing ray: the cluster binds to loopback
    import ray
    from ray import serve

    from zerank_integrations.serving.ray_serve import application
    from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="zerank-bench-ray-") as tmp:
        model = args.model or str(
            build_test_checkpoint(
                Path(tmp) / "ckpt", find_qwen3_tokenizer(REPO), hidden_size=args.hidden_size, num_layers=args.layers
            )
        )
        work = build_workload(args.datasets, args.requests, args.docs, args.doc_chars)

        def run_mode(name: str, url: str, settle_s: float) -> None:
            measure(url, work[:4], 2, settle_s)  # warm-up (both replicas, the proxy)
            results[name] = {}
            for c in args.concurrency:
                run: Callable[[], dict[str, float]] = lambda c=c: measure(url, work, c, settle_s)  # noqa: E731
                results[name][c] = best_of(args.repeat, run)
                print(name, c, results[name][c], flush=True)

        local = ServerProcess(model, ["--batch-wait-ms", str(args.batch_wait_ms)], torch_threads=1)
        try:
            run_mode("local serve", local.url, 0.0)
        finally:
            local.close()

        port = free_port()
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=args.cpus, **local_cluster_options(), runtime_env={"env_vars": {"PYTHONPATH": path}})
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        try:
            modes: dict[str, dict[str, Any]] = {
                "ray, 1 replica": {"replicas": 1, "app_settings": {"batch_wait_ms": args.batch_wait_ms}},
                "ray, 2 replicas": {"replicas": 2, "app_settings": {"batch_wait_ms": args.batch_wait_ms}},
                "ray, 2 replicas, no batching": {
                    "replicas": 2,
                    "app_settings": {"batch_wait_ms": 0, "max_batch_pairs": 1},
                },
            }
            for name, options in modes.items():
                app = application(model, scorer_options={"device": "cpu"}, replica_cpus=1.0, **options)
                serve.run(app, name="zerank", route_prefix="/")
                run_mode(name, url, 1.5)
                serve.delete("zerank")
        finally:
            serve.shutdown()
            ray.shutdown()

    describe_run(args, work)
    print("| mode | concurrency | pairs/s | requests / scoring call | forward passes / request | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for c, row in rows.items():
            print(
                f"| {name} | {c} | {row['pairs_per_s']} | {row['requests_per_call']} | "
                f"{row['forward_passes_per_request']} | {row['seconds']} |"
            )
    write_json(args, results)


if __name__ == "__main__":
    sys.exit(main())
