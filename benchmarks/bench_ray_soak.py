"""Soak on the Ray engine: sustained traffic in six dialects while a replica is killed again and again.

Starts ``zerank-integrations serve --engine ray --replicas 2`` (its own local cluster on 127.0.0.1, bearer auth
on), records every distinct request's answer when sent alone, then for ``--seconds`` sends the requests at
concurrency ``--concurrency`` (Cohere v1/v2, Voyage, Mixedbread, TEI, ZeroEntropy bodies, over raw HTTP) plus
``--remote-threads`` threads of ``RemoteScorer`` calls, while every ``--kill-every`` seconds one rerank replica
process gets SIGKILL (a crash, not a graceful stop). Reported:

- answers: 200s, 5xx, transport errors; 200s whose scores differ from the same request sent alone;
- every 5xx body checked against its dialect's error shape, with ``Retry-After`` (Serve's plain text counts
  as a failure of this check);
- ``RemoteScorer`` calls and calls lost (an exception after its retries);
- kills, and how long Serve took to have two replicas answering again; p50/p95 latency of the 200s;
- after the soak, SIGTERM: seconds to exit, and Ray processes of the command left behind.

    python benchmarks/bench_ray_soak.py --seconds 120 --kill-every 20 --concurrency 8   # the recorded run
    python benchmarks/bench_ray_soak.py --seconds 30 --kill-every 10                    # a quick look

Sends traffic to 127.0.0.1 only. Without ``--model`` it builds the small random test checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from bench_soak import free_port, make_work, ranked_scores, wait_ready  # a sibling script

API_KEY = "ray-soak-key-not-a-secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
REPLICA = "ray::ServeReplica:zerank:RerankReplica"
ERROR_KEYS = {  # what each dialect's error body must carry
    "cohere-v1": {"id", "message", "detail"},
    "voyage": {"id", "message", "detail"},
    "cohere-v2": {"id", "message"},
    "mixedbread": {"detail"},
    "tei": {"error", "error_type"},
    "zeroentropy": {"detail"},
}


def replica_pids(root: int) -> set[int]:
    """Live rerank-replica processes whose ancestry reaches ``root`` (the ``serve`` command)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if not Path(f"/proc/{entry}/cmdline").read_bytes().startswith(REPLICA.encode()):
                continue
        except OSError:
            continue
        pid = int(entry)
        while pid > 1:
            if pid == root:
                found.add(int(entry))
                break
            try:
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                break
    return found


def descendants(root: int) -> set[int]:
    return {
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and int(entry) != root and root in _ancestors(int(entry))
    } | {root}


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
        chain.append(pid)
    return chain


class Soak:
    def __init__(self, url: str, work: list[tuple[str, str, dict[str, Any]]]) -> None:
        self.url = url
        self.work = work
        self.reference: dict[int, dict[int, float]] = {}
        self.counts = {"ok": 0, "5xx": 0, "other": 0, "transport": 0, "mismatch": 0, "5xx_in_dialect": 0}
        self.bad_errors: list[str] = []
        self.latencies: list[float] = []

    async def record_reference(self) -> None:
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            for k, (dialect, path, body) in enumerate(self.work):
                reply = await client.post(f"{self.url}{path}", json=body)
                reply.raise_for_status()
                self.reference[k] = dict(ranked_scores(dialect, reply.json()))

    async def load(self, seconds: float, concurrency: int) -> None:
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(timeout=60, headers=AUTH, limits=limits) as client:

            async def worker(offset: int) -> None:
                k = offset
                while time.monotonic() < deadline:
                    await self.one(client, k % len(self.work))
                    k += concurrency

            await asyncio.gather(*(worker(i) for i in range(concurrency)))

    async def one(self, client: httpx.AsyncClient, k: int) -> None:
        dialect, path, body = self.work[k]
        started = time.monotonic()
        try:
            reply = await client.post(f"{self.url}{path}", json=body)
        except httpx.TransportError:
            self.counts["transport"] += 1
            return
        if reply.status_code == 200:
            self.counts["ok"] += 1
            self.latencies.append(time.monotonic() - started)
            got = dict(ranked_scores(dialect, reply.json()))
            if any(abs(score - self.reference[k][index]) > 1e-5 for index, score in got.items()):
                self.counts["mismatch"] += 1
            return
        if reply.status_code < 500:
            self.counts["other"] += 1
            return
        self.counts["5xx"] += 1
        try:
            shaped = ERROR_KEYS[dialect] <= set(reply.json()) and reply.headers.get("retry-after", "").isdigit()
        except ValueError:
            shaped = False
        if shaped:
            self.counts["5xx_in_dialect"] += 1
        elif len(self.bad_errors) < 5:
            self.bad_errors.append(f"{dialect} {reply.status_code}: {reply.text[:200]}")


def remote_calls(url: str, work: list[tuple[str, str, dict[str, Any]]], stop: threading.Event, out: dict) -> None:
    from zerank_integrations.serving import RemoteScorer

    remote = RemoteScorer(url, model="zerank-2", family="zerank", api_key=API_KEY, timeout=60, max_retries=8)
    k = 0
    while not stop.is_set():
        body = work[k % len(work)][2]
        docs = body.get("documents") or body.get("texts") or body.get("input")
        try:
            remote.score(body["query"], docs)
            out["calls"] += 1
        except Exception as error:  # lost: the retries did not save it
            out["lost"] += 1
            out.setdefault("errors", []).append(f"{type(error).__name__}: {error}"[:200])
        k += 1


def killer(root: int, url: str, every: float, stop: threading.Event, out: dict) -> None:
    while not stop.wait(every):
        victims = sorted(replica_pids(root))
        if not victims:
            continue
        os.kill(victims[0], signal.SIGKILL)
        killed_at = time.monotonic()
        out["kills"] += 1
        while not stop.is_set():  # back to two live replicas, both reporting to /health
            try:
                replicas = httpx.get(f"{url}/health", timeout=5).json().get("replicas") or {}
            except (httpx.TransportError, ValueError):
                replicas = {}
            fresh = replica_pids(root) - {victims[0]}
            if len(fresh) == 2 and len(replicas) == 2:
                out["recovery_s"].append(round(time.monotonic() - killed_at, 1))
                break
            time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kill-every", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--remote-threads", type=int, default=2)
    parser.add_argument("--distinct", type=int, default=48, help="distinct requests, cycled")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            from zerank_integrations.testing import build_test_checkpoint, find_qwen3_tokenizer

            model = str(build_test_checkpoint(Path(scratch) / "model", find_qwen3_tokenizer(Path(__file__).parents[1])))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "zerank_integrations.serving", "--engine", "ray", "--replicas", "2"]
        command += ["--replica-cpus", "0.5", "--model", model, "--device", "cpu", "--port", str(port)]
        command += ["--batch-wait-ms", "5", "--shutdown-timeout", "20"]
        env = {**os.environ, "ZERANK_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        log = Path(scratch) / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_ready(url, proc, timeout=300)
            while len(replica_pids(proc.pid)) < 2 or len(httpx.get(f"{url}/health").json()["replicas"] or {}) < 2:
                time.sleep(0.5)
            soak = Soak(url, make_work(args.distinct, seed=25))
            asyncio.run(soak.record_reference())
            stop = threading.Event()
            remote = {"calls": 0, "lost": 0}
            kills = {"kills": 0, "recovery_s": []}
            threads = [threading.Thread(target=killer, args=(proc.pid, url, args.kill_every, stop, kills))]
            threads += [
                threading.Thread(target=remote_calls, args=(url, soak.work, stop, remote))
                for _ in range(args.remote_threads)
            ]
            for thread in threads:
                thread.start()
            asyncio.run(soak.load(args.seconds, args.concurrency))
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
            tree = descendants(proc.pid)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            exit_s = time.monotonic() - started
            time.sleep(2)
            left = sorted(pid for pid in tree if Path(f"/proc/{pid}").exists())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lat = sorted(soak.latencies)
    report = {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "answers": soak.counts,
        "requests": sum(soak.counts[k] for k in ("ok", "5xx", "other", "transport")),
        "bad_5xx_bodies": soak.bad_errors,
        "remote_scorer": remote,
        "kills": kills["kills"],
        "recovery_s": kills["recovery_s"],
        "p50_ms": round(statistics.median(lat) * 1e3, 1) if lat else None,
        "p95_ms": round(lat[int(0.95 * (len(lat) - 1))] * 1e3, 1) if lat else None,
        "sigterm_exit_code": code,
        "sigterm_exit_s": round(exit_s, 1),
        "processes_left": left,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    ok = soak.counts["mismatch"] == 0 and not soak.bad_errors and remote["lost"] == 0 and not left and code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
