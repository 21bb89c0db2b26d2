"""Soak and fault benchmark for ``zerank-integrations serve``: good traffic mixed with abuse, then SIGTERM.

Starts the real ``serve`` process on 127.0.0.1 (bearer auth on, short read timeouts), records every good
request's answer when sent alone, then sends N requests at concurrency C over one shared connection pool,
a share of them hostile (HOSTILE_KINDS: 50 kinds, from deep nesting to lone surrogates, stalled and vanishing
clients), while stalled connections sit on the server. It then puts requests in flight, stalls a client
mid-body and sends SIGTERM. Reported:

- good requests lost (transport error or non-200) and score mismatches against the same request sent alone;
- 5xx answers, and tracebacks in the server log;
- p50/p95 latency of good requests; resident memory of the server over time (growth after warm-up);
- abandoned requests (client left before scoring) and the model time spent on vanished clients;
- how long stalled connections stayed open against the configured timeouts;
- in-flight requests answered after SIGTERM and how long the process took to exit.

    python benchmarks/bench_soak.py --requests 1500 --concurrency 16 --hostile 0.2   # the recorded run
    python benchmarks/bench_soak.py --requests 200 --concurrency 8                    # a quick look

Sends traffic to 127.0.0.1 only. Without ``--model`` it builds the small random test checkpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

API_KEY = "soak-key-not-a-secret"
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
SHUTDOWN_TIMEOUT_S = 10
MAX_DOCUMENTS = 64
MAX_REQUEST_BYTES = 1024 * 1024

# -- good traffic: every dialect, answers put back in input order ------------------------------------------
GOOD_DIALECTS = ("cohere-v1", "cohere-v2", "voyage", "mixedbread", "tei", "zeroentropy")


def good_request(dialect: str, query: str, docs: list[str], top: int | None) -> tuple[str, dict[str, Any]]:
    if dialect == "cohere-v1":
        return "/v1/rerank", {"query": query, "documents": docs, "top_n": top, "return_documents": True}
    if dialect == "cohere-v2":
        return "/v2/rerank", {"model": "zerank-2", "query": query, "documents": docs, "top_n": top}
    if dialect == "voyage":
        return "/v1/rerank", {"query": query, "documents": docs, "top_k": top, "truncation": True}
    if dialect == "mixedbread":
        return "/v1/reranking", {"query": query, "input": docs, "top_k": top}
    if dialect == "tei":
        return "/rerank", {"query": query, "texts": docs, "raw_scores": False}
    return "/v1/models/rerank", {"model": "zerank-2", "query": query, "documents": docs, "top_n": top}


def ranked_scores(dialect: str, body: Any) -> list[tuple[int, float]]:
    """(index, score) in the order the server ranked them."""
    if dialect == "tei":
        items, key = body, "score"
    elif dialect == "voyage":
        items, key = body["data"], "relevance_score"
    elif dialect == "mixedbread":
        items, key = body["data"], "score"
    else:
        items, key = body["results"], "relevance_score"
    return [(int(item["index"]), float(item[key])) for item in items]


def make_work(n_distinct: int, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    rng = random.Random(seed)
    words = ("plants", "light", "energy", "cells", "water", "carbon", "sugar", "leaf", "root", "soil", "sun", "rain")
    work = []
    for i in range(n_distinct):
        docs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) for _ in range(rng.randint(2, 12))]
        query = f"question {i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))
        dialect = GOOD_DIALECTS[i % len(GOOD_DIALECTS)]
        top = rng.choice([None, 1, 3]) if dialect != "tei" else None
        path, body = good_request(dialect, query, docs, top)
        work.append((dialect, path, {k: v for k, v in body.items() if v is not None}))
    return work


# -- hostile traffic ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hostile:
    name: str
    path: str = "/v1/rerank"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    expect: str = "4xx"  # "4xx" or "200" (odd but valid input)
    raw: str | None = None  # a raw-socket behaviour instead of an HTTP request


def _j(value: Any) -> bytes:
    return json.dumps(value).encode()


def _surrogate(field_name: str) -> bytes:
    body = {"query": "q", "documents": ["fine"]}
    body[field_name] = "bad \\udc00 text" if field_name != "documents" else ["ok", "bad \\udc00 text"]
    return json.dumps(body).replace("\\\\udc00", "\\udc00").encode()


HOSTILE_KINDS: tuple[Hostile, ...] = (
    Hostile("deep arrays", body=b"[" * 5000 + b"]" * 5000),
    Hostile("deep objects", body=b'{"a":' * 5000 + b"1" + b"}" * 5000),
    Hostile("depth just over the limit", body=b'{"query":"q","documents":' + b"[" * 40 + b"]" * 40 + b"}"),
    Hostile("unclosed deep arrays", body=b"[" * 100_000),
    Hostile("5000-digit integer", body=b'{"query":"q","documents":["d"],"top_n":' + b"9" * 5000 + b"}"),
    Hostile("float overflow", body=b'{"query":"q","documents":["d"],"top_n":1e999}'),
    Hostile("NaN literal", body=b'{"query":"q","documents":["d"],"top_n":NaN}'),
    Hostile("Infinity literal", body=b'{"query":"q","documents":["d"],"top_n":-Infinity}'),
    Hostile("invalid UTF-8", body=b'{"query":"\xff\xfe","documents":["d"]}'),
    Hostile("raw NUL byte", body=b'{"query":"q\x00","documents":["d"]}'),
    Hostile("escaped NUL in a document", body=_j({"query": "q", "documents": ["a\u0000b"]}), expect="200"),
    Hostile("duplicate keys", body=b'{"query":"a","query":"b","documents":["d"]}'),
    Hostile("text/plain body", body=_j({"query": "q", "documents": ["d"]}), headers={"content-type": "text/plain"}),
    Hostile("form body", body=b"query=q&documents=d", headers={"content-type": "application/x-www-form-urlencoded"}),
    Hostile("empty body", body=b""),
    Hostile("whitespace body", body=b"   \n  "),
    Hostile("array body", body=_j(["q", "d"])),
    Hostile("string body", body=_j("q")),
    Hostile("null body", body=b"null"),
    Hostile("truncated JSON", body=b'{"query":"q","documents":["d"'),
    Hostile("missing query", body=_j({"documents": ["d"]})),
    Hostile("numeric query", body=_j({"query": 5, "documents": ["d"]})),
    Hostile("blank query", body=_j({"query": "  \t ", "documents": ["d"]})),
    Hostile("documents is a string", body=_j({"query": "q", "documents": "d"})),
    Hostile("numeric document", body=_j({"query": "q", "documents": ["d", 7]})),
    Hostile("null document", body=_j({"query": "q", "documents": ["d", None]})),
    Hostile("nested list document", body=_j({"query": "q", "documents": [["d"]]})),
    Hostile("numeric text field", body=_j({"query": "q", "documents": [{"text": 5}]})),
    Hostile("negative top_n", body=_j({"query": "q", "documents": ["d"], "top_n": -3})),
    Hostile("string top_n", body=_j({"query": "q", "documents": ["d"], "top_n": "2"})),
    Hostile("boolean top_n", body=_j({"query": "q", "documents": ["d"], "top_n": True})),
    Hostile("fractional top_n", body=_j({"query": "q", "documents": ["d"], "top_n": 2.5})),
    Hostile("top_n and top_k", body=_j({"query": "q", "documents": ["d"], "top_n": 1, "top_k": 1})),
    Hostile("string flag", body=_j({"query": "q", "documents": ["d"], "return_documents": "yes"})),
    Hostile(
        "zero max_tokens_per_doc",
        path="/v2/rerank",
        body=_j({"query": "q", "documents": ["d"], "max_tokens_per_doc": 0}),
    ),
    Hostile("lone surrogate in the query", body=_surrogate("query")),
    Hostile("lone surrogate in a document", body=_surrogate("documents")),
    Hostile("lone surrogate in a TEI text", path="/rerank", body=b'{"query":"q","texts":["a\\udfff"]}'),
    Hostile("too many documents", body=_j({"query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)})),
    Hostile("body over the limit", body=_j({"query": "q", "documents": ["x" * MAX_REQUEST_BYTES]})),
    Hostile("chunked body over the limit", raw="chunked-over-limit"),
    Hostile(
        "TEI left truncation", path="/rerank", body=_j({"query": "q", "texts": ["d"], "truncation_direction": "Left"})
    ),
    Hostile("Mixedbread input not a list", path="/v1/reranking", body=_j({"query": "q", "input": {"a": 1}})),
    Hostile(
        "ZeroEntropy object documents", path="/v1/models/rerank", body=_j({"query": "q", "documents": [{"text": "d"}]})
    ),
    Hostile("missing bearer token", body=_j({"query": "q", "documents": ["d"]}), headers={"authorization": ""}),
    Hostile(
        "wrong bearer token", body=_j({"query": "q", "documents": ["d"]}), headers={"authorization": "Bearer nope"}
    ),
    Hostile(
        "lowercase bearer scheme",
        body=_j({"query": "q", "documents": ["d"]}),
        headers={"authorization": f"bearer {API_KEY}"},
        expect="200",
    ),
    Hostile("GET on a rerank route", method="GET", body=None),
    Hostile("unknown route", path="/v3/rerank", body=_j({"query": "q", "documents": ["d"]})),
    Hostile("100 KB query", body=_j({"query": "why " * 25_000, "documents": ["d"]}), expect="200"),
    Hostile(
        "unicode soup",
        body=_j({"query": "٩(◕‿◕)۶ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "documents": ["e\u0301\u200d👩‍👩‍👧", "\u202eRTL\u202c", "\ufeff"]}),
        expect="200",
    ),
    Hostile("invalid request line", raw="bad-request-line"),
    Hostile("oversized header", raw="oversized-header"),
    Hostile("disconnect mid-body", raw="disconnect-mid-body"),
    Hostile("send and vanish", raw="send-and-vanish"),
)


# -- the server -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: str, port: int, log_path: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "zerank_integrations.serving", "--model", model, "--device", "cpu"]
    command += [
        "--port",
        str(port),
        "--max-documents",
        str(MAX_DOCUMENTS),
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
    ]
    command += ["--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)]
    command += ["--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), "--log-level", "info", *extra]
    env = {**os.environ, "ZERANK_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    log = log_path.open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited early with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("serve did not come up")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- raw-socket clients ------------------------------------------------------------------------------------
def _head(path: str, length: int | None, extra: str = "") -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {API_KEY}\r\n"
        f"content-type: application/json\r\n{size}{extra}\r\n"
    ).encode()


async def raw_exchange(port: int, kind: str) -> tuple[int | None, str]:
    """Run one raw-socket behaviour; returns (status the server answered or None, note)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = _j({"query": "vanishing client", "documents": [f"document {i}" for i in range(8)]})
    try:
        if kind == "bad-request-line":
            writer.write(b"BLAH / NOPE\r\n\r\n")
        elif kind == "oversized-header":
            writer.write(b"POST /v1/rerank HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
        elif kind == "chunked-over-limit":
            writer.write(_head("/v1/rerank", None))
            chunk = b"x" * 65536
            for _ in range(MAX_REQUEST_BYTES // len(chunk) + 2):
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            writer.write(b"0\r\n\r\n")
        elif kind == "disconnect-mid-body":
            writer.write(_head("/v1/rerank", len(body)) + body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)
            return None, "left"
        elif kind == "send-and-vanish":
            writer.write(_head("/v1/rerank", len(body)) + body)
            await writer.drain()
            return None, "left"
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1") else None
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
        )
        answer = await asyncio.wait_for(reader.readexactly(length), 10)
        is_json = b"application/json" in head.lower() and answer.startswith(b"{")
        return status, "json" if is_json else "not json"
    finally:
        writer.close()


async def stalled_connection(port: int, phase: str) -> float:
    """Open a connection, send half a request (headers or body), stall; seconds until the server closed it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    if phase == "header":
        writer.write(b"POST /v1/rerank HTTP/1.1\r\nhost: 127.0.0.1\r\n")
    else:
        writer.write(_head("/v1/rerank", 1000) + b'{"query": "stalled"')
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(), 60)  # returns b"..." then EOF when the server closes
    except asyncio.TimeoutError:
        return float("inf")
    finally:
        writer.close()
    return time.monotonic() - started


# -- the run -------------------------------------------------------------------------------------------------
@dataclass
class SoakReport:
    requests: int
    concurrency: int
    hostile_share: float
    hostile_kinds: int
    good_sent: int = 0
    good_lost: int = 0
    score_mismatches: int = 0
    max_score_difference: float = 0.0
    server_5xx: int = 0
    hostile_unexpected: list[str] = field(default_factory=list)
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    rss_mib: list[tuple[float, float]] = field(default_factory=list)
    rss_growth_after_warmup_mib: float = 0.0
    abandoned: int = 0
    dropped: int = 0
    vanished_clients: int = 0
    pairs_scored_for_vanished: int = 0
    stalled_closed_s: list[float] = field(default_factory=list)
    stalled_limit_s: float = 0.0
    in_flight_at_sigterm: int = 0
    in_flight_answered: int = 0
    exit_seconds: float = 0.0
    exit_code: int | None = None
    tracebacks_in_log: int = 0
    log_lines: int = 0

    def problems(self) -> list[str]:
        """Every acceptance point that did not hold (empty when the run is clean)."""
        out = []
        if self.good_lost:
            out.append(f"{self.good_lost} good requests lost")
        if self.score_mismatches:
            out.append(f"{self.score_mismatches} score mismatches (max {self.max_score_difference:.2g})")
        if self.server_5xx:
            out.append(f"{self.server_5xx} 5xx answers")
        if self.hostile_unexpected:
            out.append(f"unexpected answers: {sorted(set(self.hostile_unexpected))}")
        if self.tracebacks_in_log:
            out.append(f"{self.tracebacks_in_log} tracebacks in the server log")
        if self.pairs_scored_for_vanished > 0 and self.abandoned == 0:
            out.append("vanished clients cost model time and none was taken out of the queue")
        if any(t > self.stalled_limit_s for t in self.stalled_closed_s):
            out.append(f"stalled connections open for {max(self.stalled_closed_s):.1f} s > {self.stalled_limit_s} s")
        if self.in_flight_answered != self.in_flight_at_sigterm:
            out.append(
                f"{self.in_flight_answered}/{self.in_flight_at_sigterm} in-flight requests answered after SIGTERM"
            )
        if self.exit_code is None or self.exit_seconds > SHUTDOWN_TIMEOUT_S + 5:
            out.append(f"the process took {self.exit_seconds:.1f} s to exit (code {self.exit_code})")
        return out


async def _soak(url: str, proc: subprocess.Popen[bytes], args: argparse.Namespace, report: SoakReport) -> None:
    port = int(url.rsplit(":", 1)[1])
    auth = {"authorization": f"Bearer {API_KEY}"}
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency, keepalive_expiry=2
    )
    work = make_work(args.distinct, args.seed)
    rng = random.Random(args.seed + 1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers=auth) as client:
        expected: list[list[tuple[int, float]]] = []
        for dialect, path, body in work:  # each good request alone, before the storm
            response = await client.post(path, json=body)
            response.raise_for_status()
            expected.append(ranked_scores(dialect, response.json()))
        health0 = (await client.get("/health")).json()["batcher"]

        stop_sampling = asyncio.Event()

        async def sample_memory() -> None:
            start = time.monotonic()
            while not stop_sampling.is_set():
                report.rss_mib.append((round(time.monotonic() - start, 2), round(rss_mib(proc.pid), 1)))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), 0.5)

        sampler = asyncio.create_task(sample_memory())
        stalled = [
            asyncio.create_task(stalled_connection(port, "header" if i % 2 else "body")) for i in range(args.stalled)
        ]
        latencies: list[float] = []
        answered_pairs = [0]  # (query, document) pairs of every request answered 200 during the storm
        semaphore = asyncio.Semaphore(args.concurrency)

        async def one(i: int) -> None:
            async with semaphore:
                if rng.random() < args.hostile:
                    kind = HOSTILE_KINDS[i % len(HOSTILE_KINDS)]
                    await hostile(kind)
                else:
                    await good(rng.randrange(len(work)))

        async def good(j: int) -> None:
            dialect, path, body = work[j]
            report.good_sent += 1
            started = time.perf_counter()
            try:
                response = await client.post(path, json=body)
            except httpx.HTTPError:
                report.good_lost += 1
                return
            latencies.append(time.perf_counter() - started)
            if response.status_code >= 500:
                report.server_5xx += 1
            if response.status_code != 200:
                report.good_lost += 1
                return
            answered_pairs[0] += len(body.get("documents") or body.get("input") or body.get("texts") or [])
            got = ranked_scores(dialect, response.json())
            want = expected[j]
            diff = max((abs(a[1] - b[1]) for a, b in zip(got, want, strict=False)), default=0.0)
            report.max_score_difference = max(report.max_score_difference, diff)
            if [i for i, _ in got] != [i for i, _ in want] or diff > 1e-6:
                report.score_mismatches += 1

        async def hostile(kind: Hostile) -> None:
            if kind.raw is not None:
                status, note = await raw_exchange(port, kind.raw)
                if note == "left":
                    report.vanished_clients += 1
                elif status is None or not 400 <= status < 500 or note != "json":
                    report.hostile_unexpected.append(f"{kind.name}: {status} {note}")
                if status is not None and status >= 500:
                    report.server_5xx += 1
                return
            headers = dict(kind.headers)
            try:
                response = await client.request(kind.method, kind.path, content=kind.body, headers=headers or None)
            except httpx.HTTPError as error:
                report.hostile_unexpected.append(f"{kind.name}: {type(error).__name__}")
                return
            if response.status_code >= 500:
                report.server_5xx += 1
            ok = response.status_code == 200 if kind.expect == "200" else 400 <= response.status_code < 500
            if not ok or "json" not in response.headers.get("content-type", ""):
                report.hostile_unexpected.append(f"{kind.name}: {response.status_code}")
            elif response.status_code == 200 and kind.body:
                answered_pairs[0] += len(json.loads(kind.body)["documents"])

        await asyncio.gather(*(one(i) for i in range(args.requests)))
        report.stalled_closed_s = [round(t, 2) for t in await asyncio.gather(*stalled)]
        report.latency_p50_ms = round(statistics.median(latencies) * 1e3, 1) if latencies else 0.0
        report.latency_p95_ms = round(statistics.quantiles(latencies, n=20)[-1] * 1e3, 1) if len(latencies) > 1 else 0.0
        await asyncio.sleep(0.5)  # let vanished requests settle in the counters
        health = (await client.get("/health")).json()["batcher"]
        report.abandoned = health["abandoned"] - health0["abandoned"]
        report.dropped = health["dropped"] - health0["dropped"]
        stop_sampling.set()
        await sampler
        report.pairs_scored_for_vanished = health["pairs"] - health0["pairs"] - answered_pairs[0]

        # SIGTERM with requests in flight and a client stalled mid-body.
        _, stuck_writer = await asyncio.open_connection("127.0.0.1", port)
        stuck_writer.write(_head("/v1/rerank", 5000) + b'{"query": "never finished"')
        await stuck_writer.drain()
        long_document = " ".join(f"photosynthesis{i % 97}" for i in range(1000))  # ~3,000 tokens: seconds of work
        heavy = {"query": "in flight at SIGTERM", "documents": [long_document] * 48}
        before = (await client.get("/health")).json()
        in_flight = [asyncio.create_task(client.post("/v2/rerank", json=heavy)) for _ in range(args.in_flight)]
        async with httpx.AsyncClient(base_url=url, timeout=5) as probe:  # its own connection
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the batcher holds every one of them
                now = (await probe.get("/health")).json()
                accepted = now["batcher"]["requests"] - before["batcher"]["requests"] + now["queued"]
                if accepted >= args.in_flight:
                    break
                await asyncio.sleep(0.01)
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        pending = [task for task in in_flight if not task.done()]
        report.in_flight_at_sigterm = len(pending)
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        ok = [isinstance(r, httpx.Response) and r.status_code == 200 for r in results]
        report.in_flight_answered = sum(good for task, good in zip(in_flight, ok, strict=True) if task in pending)
        report.good_lost += sum(not good for task, good in zip(in_flight, ok, strict=True) if task not in pending)
        exit_code = await asyncio.to_thread(_wait, proc, SHUTDOWN_TIMEOUT_S + 20)
        report.exit_seconds = round(time.monotonic() - sent_at, 2)
        report.exit_code = exit_code
        stuck_writer.close()


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def run_soak(args: argparse.Namespace) -> SoakReport:
    """Run the whole benchmark (server included) and return its report."""
    report = SoakReport(args.requests, args.concurrency, args.hostile, len(HOSTILE_KINDS))
    report.stalled_limit_s = max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 1.5
    with tempfile.TemporaryDirectory(prefix="zerank-soak-") as tmp:
        model = args.model
        if model is None:
            from zerank_integrations.testing import build_test_checkpoint

            model = str(build_test_checkpoint(Path(tmp) / "checkpoint"))
        log_path = Path(args.log) if args.log else Path(tmp) / "serve.log"
        port = free_port()
        proc = start_server(model, port, log_path, args.serve_args)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc)
            asyncio.run(_soak(url, proc, args, report))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log_path.read_text(errors="replace")
        report.tracebacks_in_log = text.count("Traceback")
        report.log_lines = len(text.splitlines())
    warm = [rss for t, rss in report.rss_mib if t >= report.rss_mib[-1][0] * 0.25] if report.rss_mib else []
    report.rss_growth_after_warmup_mib = round(warm[-1] - warm[0], 1) if len(warm) > 1 else 0.0
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint to serve (default: build the random test one)")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--hostile", type=float, default=0.2, help="share of hostile requests")
    parser.add_argument("--distinct", type=int, default=60, help="distinct good requests (each checked alone)")
    parser.add_argument("--stalled", type=int, default=20, help="connections that send half a request and stall")
    parser.add_argument("--in-flight", type=int, default=16, help="requests in flight when SIGTERM is sent")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--log", default=None, help="keep the server log here")
    parser.add_argument("--json", default=None, help="write the report here as JSON")
    parser.add_argument("--serve-args", nargs=argparse.REMAINDER, default=[], help="passed on to serve")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_soak(args)
    data = asdict(report)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    rss = report.rss_mib
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(
        f"{report.requests} requests at concurrency {report.concurrency}, {report.hostile_share:.0%} hostile "
        f"({report.hostile_kinds} kinds), {len(report.stalled_closed_s)} stalled connections"
    )
    print(
        f"good requests: {report.good_sent} sent, {report.good_lost} lost, {report.score_mismatches} mismatches "
        f"(max difference {report.max_score_difference:.2g})"
    )
    print(f"5xx answers: {report.server_5xx}; unexpected hostile answers: {len(report.hostile_unexpected)}")
    print(f"latency of good requests: p50 {report.latency_p50_ms} ms, p95 {report.latency_p95_ms} ms")
    if rss:
        print(
            f"server RSS: {rss[0][1]} MiB at start, {max(r for _, r in rss)} MiB peak, {rss[-1][1]} MiB at end; "
            f"growth after warm-up {report.rss_growth_after_warmup_mib} MiB"
        )
    print(
        f"vanished clients: {report.vanished_clients}; abandoned before scoring {report.abandoned}, "
        f"dropped while scoring {report.dropped}"
    )
    if report.stalled_closed_s:
        print(
            f"stalled connections closed after {min(report.stalled_closed_s)}-{max(report.stalled_closed_s)} s "
            f"(timeouts {HEADER_TIMEOUT_S:g} s / {BODY_TIMEOUT_S:g} s)"
        )
    print(
        f"SIGTERM: {report.in_flight_answered}/{report.in_flight_at_sigterm} in-flight answered, exit after "
        f"{report.exit_seconds} s (code {report.exit_code}, bound {SHUTDOWN_TIMEOUT_S} s)"
    )
    print(f"server log: {report.log_lines} lines, {report.tracebacks_in_log} tracebacks")
    problems = report.problems()
    print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
