"""The rerank server and RemoteScorer, end to end over real loopback HTTP with the small real checkpoint.

Servers are real uvicorn processes/threads on 127.0.0.1; the retry tests use a tiny real HTTP handler that
fails a set number of times. Nothing mocks httpx, FastAPI or the scorer.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from zerank_integrations import ZerankScorer
from zerank_integrations.base import DEFAULT_MODEL
from zerank_integrations.serving import (
    MicroBatcher,
    RawScoresUnavailableError,
    RemoteRerankError,
    RemoteScorer,
    create_app,
)
from zerank_integrations.serving.cli import add_serve_arguments

QUERY = "How do plants turn sunlight into energy?"
DOCS = [
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market closed higher on Tuesday after a volatile session.",
    "Chlorophyll absorbs mostly blue and red light.",
    "",
    "  Mitochondria are the powerhouse of the cell.  ",
    "Plants need water, carbon dioxide and light to grow.",
]
MAX_REQUEST_BYTES = 20_000
MAX_DOCUMENTS = 40


# -- helpers ---------------------------------------------------------------------------------------------
@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a daemon thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def close_to(actual: list[float], expected: list[float], tol: float = 1e-6) -> bool:
    return len(actual) == len(expected) and all(
        math.isclose(a, e, rel_tol=0.0, abs_tol=tol) for a, e in zip(actual, expected, strict=True)
    )


def request_workload(n: int) -> list[tuple[str, list[str]]]:
    """``n`` distinct short-query requests with 3-7 documents each (short queries share forward passes)."""
    work = []
    for i in range(n):
        docs = [f"Document {j} for request {i}: " + "plants light energy " * (j % 4) for j in range(3 + i % 5)]
        work.append((f"question number {i} about photosynthesis", docs))
    return work


# -- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(scorer: ZerankScorer) -> Iterator[tuple[str, Any]]:
    # A generous batch window makes "64 concurrent requests share forward passes" independent of CI speed.
    app = create_app(scorer, max_request_bytes=MAX_REQUEST_BYTES, max_documents=MAX_DOCUMENTS, batch_wait_ms=100)
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def base_url(server: tuple[str, Any]) -> str:
    return server[0]


# -- remote == local -------------------------------------------------------------------------------------
def test_remote_scores_equal_local_scores(base_url: str, scorer: ZerankScorer) -> None:
    with RemoteScorer(base_url) as remote:
        assert close_to(remote.score(QUERY, DOCS), scorer.score(QUERY, DOCS))
        assert close_to(remote.score(QUERY, DOCS, raw=True), scorer.score(QUERY, DOCS, raw=True))
        remote_top, local_top = remote.rank(QUERY, DOCS, top_n=3), scorer.rank(QUERY, DOCS, top_n=3)
        assert [i for i, _ in remote_top] == [i for i, _ in local_top]
        assert close_to([p for _, p in remote_top], [p for _, p in local_top])
        assert [i for i, _ in remote.rank(QUERY, DOCS)] == [i for i, _ in scorer.rank(QUERY, DOCS)]
        assert remote.score(QUERY, []) == []
        assert remote.requests_sent == 4  # the empty list never reached the server
        assert remote.model_name == DEFAULT_MODEL


async def test_async_remote_scores_equal_local_scores(base_url: str, scorer: ZerankScorer) -> None:
    remote = RemoteScorer(base_url, max_documents_per_request=4)  # 6 documents: two concurrent requests
    try:
        assert close_to(await remote.ascore(QUERY, DOCS), scorer.score(QUERY, DOCS))
        assert [i for i, _ in await remote.arank(QUERY, DOCS, top_n=2)] == [
            i for i, _ in scorer.rank(QUERY, DOCS, top_n=2)
        ]
        assert remote.requests_sent == 4
    finally:
        await remote.aclose()


def test_split_requests_are_stitched_in_order(base_url: str, scorer: ZerankScorer) -> None:
    with RemoteScorer(base_url, max_documents_per_request=2) as remote:
        assert close_to(remote.score(QUERY, DOCS), scorer.score(QUERY, DOCS))
        assert remote.requests_sent == 3


def test_protocol_fields(base_url: str, scorer: ZerankScorer) -> None:
    """Cohere/Jina semantics: best first, top_n, return_documents, and documents given as {"text": ...}."""
    documents = [DOCS[0], {"text": DOCS[1]}, DOCS[2], {"text": DOCS[5], "id": "extra fields are ignored"}]
    texts = [DOCS[0], DOCS[1], DOCS[2], DOCS[5]]
    body = {"model": "anything", "query": QUERY, "documents": documents, "top_n": 3, "return_documents": True}
    response = httpx.post(f"{base_url}/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    expected = scorer.rank(QUERY, texts, top_n=3)
    assert [r["index"] for r in payload["results"]] == [i for i, _ in expected]
    assert [r["relevance_score"] for r in payload["results"]] == pytest.approx([s for _, s in expected], abs=1e-6)
    assert [r["document"]["text"] for r in payload["results"]] == [texts[i] for i, _ in expected]
    raw = scorer.score(QUERY, texts, raw=True)
    assert [r["raw_score"] for r in payload["results"]] == pytest.approx([raw[i] for i, _ in expected], abs=1e-6)
    assert payload["usage"] == {"documents": 4}
    assert payload["model"] == scorer.model_name

    # Defaults: every document, no document text; ZeroEntropy's path serves the same thing.
    plain = httpx.post(f"{base_url}/v1/models/rerank", json={"query": QUERY, "documents": texts}).json()
    assert len(plain["results"]) == 4 and all("document" not in r for r in plain["results"])
    scores = [r["relevance_score"] for r in plain["results"]]
    assert scores == sorted(scores, reverse=True)
    # top_n larger than the list keeps everything
    many = httpx.post(f"{base_url}/v1/rerank", json={"query": QUERY, "documents": texts, "top_n": 99}).json()
    assert [r["index"] for r in many["results"]] == [r["index"] for r in plain["results"]]
    empty = httpx.post(f"{base_url}/v1/rerank", json={"query": QUERY, "documents": []}).json()
    assert empty["results"] == []


# -- cross-request batching ------------------------------------------------------------------------------
async def test_concurrent_requests_share_forward_passes(server: tuple[str, Any], scorer: ZerankScorer) -> None:
    url, app = server
    work = request_workload(64)
    expected = [scorer.score(query, docs) for query, docs in work]
    passes_before = scorer.stats.forward_passes
    batcher_before = app.state.batcher.stats.as_dict()
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post(f"{url}/v1/rerank", json={"query": q, "documents": d}) for q, d in work)
        )
    assert [r.status_code for r in responses] == [200] * 64
    for response, (_, docs), want in zip(responses, work, expected, strict=True):
        results = response.json()["results"]
        got = [0.0] * len(docs)
        for item in results:
            got[item["index"]] = item["relevance_score"]
        assert close_to(got, want)
    forward_passes = scorer.stats.forward_passes - passes_before
    batcher_after = app.state.batcher.stats.as_dict()
    assert batcher_after["requests"] - batcher_before["requests"] == 64
    assert batcher_after["pairs"] - batcher_before["pairs"] == sum(len(d) for _, d in work)
    assert batcher_after["batches"] - batcher_before["batches"] < 64
    assert 0 < forward_passes < 64
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok"
    assert health["batcher"]["largest_batch_requests"] > 1
    assert health["scorer"]["forward_passes"] >= forward_passes


class GatedScorer:
    """The real scorer behind a gate: the first call waits until ``release`` is set (deterministic batching),
    and any pair whose document is ``"EXPLODE"`` raises, as a model failure on one request would."""

    def __init__(self, scorer: ZerankScorer) -> None:
        self.scorer = scorer
        self.release = threading.Event()
        self.calls: list[int] = []
        self.model_name = scorer.model_name

    def score_pairs(self, pairs: list[tuple[str, str]], *, raw: bool = False) -> list[float]:
        if not self.calls:
            assert self.release.wait(30)
        self.calls.append(len(pairs))
        if any(doc == "EXPLODE" for _, doc in pairs):
            raise RuntimeError("the model failed on this request")
        return self.scorer.score_pairs(pairs, raw=raw)


async def test_batcher_groups_queued_requests_and_isolates_failures(scorer: ZerankScorer) -> None:
    gated = GatedScorer(scorer)
    batcher = MicroBatcher(gated, max_wait_ms=0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit("first query", ["a", "b"]))
        while batcher.stats.requests < 1:  # wait until the first request is in the (gated) model thread
            await asyncio.sleep(0.005)
        work = [(f"query {i}", [f"doc {i}", f"other {i}"]) for i in range(5)]
        work.insert(2, ("bad query", ["fine", "EXPLODE"]))
        tasks = [asyncio.ensure_future(batcher.submit(q, d)) for q, d in work]
        while batcher.queued < len(work):
            await asyncio.sleep(0.005)
        gated.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert close_to(await first, scorer.score("first query", ["a", "b"], raw=True))
    finally:
        await batcher.close()
    for (query, docs), result in zip(work, results, strict=True):
        if query == "bad query":
            assert isinstance(result, RuntimeError) and "failed on this request" in str(result)
        else:
            assert close_to(result, scorer.score(query, docs, raw=True))
    # first alone; then all six queued requests together (fails), then each of the six on its own
    assert gated.calls == [2, 12, 2, 2, 2, 2, 2, 2]
    assert batcher.stats.failed_batches == 1 and batcher.stats.failed_requests == 1
    assert batcher.stats.largest_batch_requests == 6


async def test_closed_batcher_refuses_work(scorer: ZerankScorer) -> None:
    batcher = MicroBatcher(scorer)
    batcher.start()
    await batcher.close()
    with pytest.raises(RuntimeError, match="not running"):
        await batcher.submit("q", ["d"])


# -- bad requests ----------------------------------------------------------------------------------------
def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 1000):
        yield b" " * 1000


BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("malformed json", {"content": b'{"query": "q", "documents": ['}, 400, "malformed JSON"),
    ("empty body", {"content": b""}, 400, "empty"),
    ("not an object", {"json": ["q", "d"]}, 422, "must be a JSON object"),
    ("missing query", {"json": {"documents": ["d"]}}, 422, "'query' is required"),
    ("empty query", {"json": {"query": "   ", "documents": ["d"]}}, 422, "empty"),
    ("query not a string", {"json": {"query": 5, "documents": ["d"]}}, 422, "'query' must be a string"),
    ("missing documents", {"json": {"query": "q"}}, 422, "'documents' is required"),
    ("documents not a list", {"json": {"query": "q", "documents": "d"}}, 422, "must be a list"),
    ("number document", {"json": {"query": "q", "documents": ["d", 7]}}, 422, "documents[1]"),
    ("object without text", {"json": {"query": "q", "documents": [{"txt": "d"}]}}, 422, "documents[0]"),
    ("null document", {"json": {"query": "q", "documents": ["a", "b", None]}}, 422, "documents[2]"),
    ("top_n zero", {"json": {"query": "q", "documents": ["d"], "top_n": 0}}, 422, "top_n must be >= 1"),
    ("top_n negative", {"json": {"query": "q", "documents": ["d"], "top_n": -3}}, 422, "top_n"),
    ("top_n string", {"json": {"query": "q", "documents": ["d"], "top_n": "2"}}, 422, "top_n"),
    ("top_n bool", {"json": {"query": "q", "documents": ["d"], "top_n": True}}, 422, "top_n"),
    (
        "bad flag",
        {"json": {"query": "q", "documents": ["d"], "return_documents": "yes"}},
        422,
        "return_documents",
    ),
    (
        "too many documents",
        {"json": {"query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)}},
        413,
        "at most 40",
    ),
    ("large body", {"json": {"query": "q", "documents": ["x" * MAX_REQUEST_BYTES]}}, 413, "20000 bytes"),
    ("large chunked body", {"content": _chunks(3 * MAX_REQUEST_BYTES)}, 413, "larger than 20000 bytes"),
]


@pytest.mark.parametrize(
    ("name", "request_kwargs", "status", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_gets_4xx_and_server_keeps_serving(
    base_url: str,
    scorer: ZerankScorer,
    name: str,
    request_kwargs: dict[str, Any],
    status: int,
    message: str,
) -> None:
    if name == "large chunked body":  # a generator is consumed by one request: build it per run
        request_kwargs = {"content": _chunks(3 * MAX_REQUEST_BYTES)}
    response = httpx.post(f"{base_url}/v1/rerank", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["code"] == status
    good = httpx.post(f"{base_url}/v1/rerank", json={"query": QUERY, "documents": DOCS[:3]})
    assert good.status_code == 200
    got = sorted(good.json()["results"], key=lambda r: r["index"])
    assert close_to([r["relevance_score"] for r in got], scorer.score(QUERY, DOCS[:3]))


async def test_bad_requests_do_not_disturb_concurrent_good_ones(base_url: str, scorer: ZerankScorer) -> None:
    work = request_workload(12)
    async with httpx.AsyncClient(timeout=60) as client:
        good = [client.post(f"{base_url}/v1/rerank", json={"query": q, "documents": d}) for q, d in work]
        bad = [client.post(f"{base_url}/v1/rerank", json={"query": "q", "documents": ["d", i]}) for i in range(12)]
        responses = await asyncio.gather(*[x for pair in zip(good, bad, strict=True) for x in pair])
    for i, (query, docs) in enumerate(work):
        ok, refused = responses[2 * i], responses[2 * i + 1]
        assert refused.status_code == 422 and "documents[1]" in refused.json()["error"]["message"]
        assert ok.status_code == 200
        got = sorted(ok.json()["results"], key=lambda r: r["index"])
        assert close_to([r["relevance_score"] for r in got], scorer.score(query, docs))


def test_unknown_route_and_method_get_json_errors(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/rerank")
    assert response.status_code == 405 and response.json()["error"]["code"] == 405
    response = httpx.post(f"{base_url}/v2/nothing", json={})
    assert response.status_code == 404 and response.json()["error"]["code"] == 404


def test_remote_scorer_surfaces_server_refusals_without_retrying(base_url: str) -> None:
    with RemoteScorer(base_url, max_documents_per_request=None) as remote:
        with pytest.raises(RemoteRerankError, match="at most 40") as caught:
            remote.score(QUERY, ["d"] * (MAX_DOCUMENTS + 1))
        assert caught.value.status_code == 413
        assert remote.requests_sent == 1
        with pytest.raises(ValueError, match="empty"):  # validated locally, exactly like ZerankScorer
            remote.score("  ", ["d"])
        with pytest.raises(TypeError, match="index 1"):
            remote.score(QUERY, ["d", 3])  # type: ignore[list-item]
        assert remote.requests_sent == 1


# -- auth, through the real `serve` entry point in a subprocess ------------------------------------------
@pytest.fixture(scope="module")
def auth_server(checkpoint_dir: Path) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    key = "test-key-Zq81-not-a-real-secret"
    port = free_port()
    env = {**os.environ, "ZERANK_API_KEY": key, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "zerank_integrations.serving", "--model", str(checkpoint_dir)]
    command += ["--port", str(port), "--device", "cpu", "--log-level", "info"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited early: {proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not come up within 120 s")
            time.sleep(0.2)
        yield url, key, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_auth_requires_the_bearer_token(
    auth_server: tuple[str, str, subprocess.Popen[str]], scorer: ZerankScorer
) -> None:
    url, key, proc = auth_server
    body = {"query": QUERY, "documents": DOCS}
    assert httpx.get(f"{url}/health").json()["auth"] is True  # health stays open for load balancers
    missing = httpx.post(f"{url}/v1/rerank", json=body)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}x"})
    assert wrong.status_code == 401 and "invalid bearer token" in wrong.json()["error"]["message"]
    basic = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": key})
    assert basic.status_code == 401
    ok = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200

    with RemoteScorer(url, api_key=key) as remote:
        assert close_to(remote.score(QUERY, DOCS), scorer.score(QUERY, DOCS))
        assert key not in repr(remote) and "**********" in repr(remote)
    with RemoteScorer(url) as anonymous, pytest.raises(RemoteRerankError, match="401") as caught:
        anonymous.score(QUERY, DOCS)
    assert caught.value.status_code == 401 and anonymous.requests_sent == 1  # 401 is not retried
    assert key not in str(caught.value)

    proc.terminate()
    output, _ = proc.communicate(timeout=20)
    assert "auth on" in output
    assert key not in output  # neither the startup banner nor the access log shows the key


# -- RemoteScorer against a flaky real HTTP server -------------------------------------------------------
class FlakyHandler(BaseHTTPRequestHandler):
    """Answers the first ``failures`` POSTs with ``fail_status`` (or drops the connection), then succeeds.

    Success echoes one result per document, with ``relevance_score = scores[i]`` and no ``raw_score``,
    like a vLLM or hosted endpoint would.
    """

    failures = 0
    fail_status = 503
    retry_after: str | None = None
    drop_connection = False
    scores: Callable[[int], float] = staticmethod(lambda i: 0.1 * (i + 1))
    omit_last = False
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - reset per server
    headers_seen: list[str] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(body)
        type(self).headers_seen.append(self.headers.get("Authorization", ""))
        if len(type(self).seen) <= type(self).failures:
            if type(self).drop_connection:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(self.fail_status)
            if self.retry_after is not None:
                self.send_header("Retry-After", self.retry_after)
            payload = json.dumps({"message": f"try again ({self.fail_status})"}).encode()
        else:
            n = len(body["documents"]) - (1 if self.omit_last else 0)
            results = [{"index": i, "relevance_score": type(self).scores(i)} for i in reversed(range(n))]
            payload = json.dumps({"results": results}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def flaky_server(**settings: Any) -> Iterator[tuple[str, type[FlakyHandler]]]:
    handler = type("Handler", (FlakyHandler,), {"seen": [], "headers_seen": [], **settings})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_remote_retries_transient_failures(status: int) -> None:
    with flaky_server(failures=2, fail_status=status, retry_after="0") as (url, handler):
        with RemoteScorer(url, max_retries=3, backoff_base_s=0.001, model="served-name") as remote:
            assert remote.score("q", ["a", "b", "c"]) == pytest.approx([0.1, 0.2, 0.3])
        assert len(handler.seen) == 3 and remote.retries == 2
        assert handler.seen[-1] == {
            "model": "served-name",
            "query": "q",
            "documents": ["a", "b", "c"],
            "return_documents": False,
        }


async def test_async_remote_retries_dropped_connections() -> None:
    with flaky_server(failures=2, drop_connection=True) as (url, handler):
        remote = RemoteScorer(url, max_retries=2, backoff_base_s=0.001)
        try:
            assert await remote.ascore("q", ["a", "b"]) == pytest.approx([0.1, 0.2])
            assert [i for i, _ in await remote.arank("q", ["a", "b"], top_n=1)] == [1]
        finally:
            await remote.aclose()
        assert len(handler.seen) == 4 and remote.retries == 2


def test_remote_gives_up_after_max_retries_and_does_not_retry_client_errors() -> None:
    with (
        flaky_server(failures=10, fail_status=503) as (url, handler),
        RemoteScorer(url, max_retries=2, backoff_base_s=0.001) as remote,
    ):
        with pytest.raises(RemoteRerankError, match=r"HTTP 503 after 3 attempts: try again \(503\)"):
            remote.score("q", ["a"])
        assert len(handler.seen) == 3
    with flaky_server(failures=10, fail_status=400) as (url, handler), RemoteScorer(url) as remote:
        with pytest.raises(RemoteRerankError, match="HTTP 400") as caught:
            remote.score("q", ["a"])
        assert caught.value.status_code == 400 and len(handler.seen) == 1
    closed_port = f"http://127.0.0.1:{free_port()}"
    with RemoteScorer(closed_port, max_retries=1, backoff_base_s=0.001) as remote:
        with pytest.raises(RemoteRerankError, match="after 2 attempt"):
            remote.score("q", ["a"])
        assert remote.requests_sent == 2


def test_remote_raw_scores_and_score_transforms() -> None:
    logits = [3.0, -2.0, 0.5]
    with flaky_server(scores=staticmethod(lambda i: logits[i])) as (url, handler):
        with RemoteScorer(url) as plain:  # probabilities only: raw is impossible and says so
            assert plain.score("q", ["a", "b", "c"]) == pytest.approx(logits)
            with pytest.raises(RawScoresUnavailableError, match="sigmoid_div5"):
                plain.score("q", ["a", "b", "c"], raw=True)
        with RemoteScorer(url, score_transform="sigmoid_div5", extra_body={"use_activation": False}) as vllm:
            expected = [1 / (1 + math.exp(-x / 5)) for x in logits]
            assert vllm.score("q", ["a", "b", "c"]) == pytest.approx(expected, abs=1e-12)
            assert vllm.score("q", ["a", "b", "c"], raw=True) == pytest.approx(logits)
        assert handler.seen[-1]["use_activation"] is False  # extra_body reaches the server
    sigmoids = [1 / (1 + math.exp(-x)) for x in logits]
    with (
        flaky_server(scores=staticmethod(lambda i: sigmoids[i])) as (url, _),
        RemoteScorer(url, score_transform="resigmoid_div5") as vllm_default,
    ):
        assert vllm_default.score("q", ["a", "b", "c"], raw=True) == pytest.approx(logits, abs=1e-9)
        assert vllm_default.score("q", ["a", "b", "c"]) == pytest.approx(
            [1 / (1 + math.exp(-x / 5)) for x in logits], abs=1e-9
        )


def test_remote_rejects_incomplete_results_and_sends_the_key() -> None:
    with flaky_server(omit_last=True) as (url, handler), RemoteScorer(url, api_key="k-123") as remote:
        with pytest.raises(RemoteRerankError, match=r"2 results for 3 documents \(document 2 missing\)"):
            remote.score("q", ["a", "b", "c"])
        assert handler.headers_seen == ["Bearer k-123"]
        assert "k-123" not in repr(remote)


def test_remote_scorer_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="http"):
        RemoteScorer("127.0.0.1:8000")
    with pytest.raises(ValueError, match="score_transform"):
        RemoteScorer("http://x", score_transform="softmax")  # type: ignore[arg-type]
    remote = RemoteScorer("http://host:1/", path="v1/models/rerank")
    assert remote.url == "http://host:1/v1/models/rerank"


# -- packaging and CLI -----------------------------------------------------------------------------------
def test_import_zerank_integrations_does_not_import_serving() -> None:
    code = (
        "import sys, zerank_integrations\n"
        "heavy = ('zerank_integrations.serving', 'fastapi', 'uvicorn')\n"
        "bad = [m for m in sys.modules if m.startswith(heavy)]\n"
        "assert not bad, bad\n"
        "from zerank_integrations.serving import RemoteScorer\n"
        "assert 'fastapi' not in sys.modules and 'torch' not in sys.modules, 'the client must stay light'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_arguments_defaults_and_options() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.model, args.api_key) == (
        "127.0.0.1",
        8000,
        DEFAULT_MODEL,
        None,
    )
    args = parser.parse_args(
        shlex.split(
            "--host 0.0.0.0 --port 9 --model m --device cpu --dtype float32 --max-length 512 "
            "--batch-tokens 2048 --revision abc --local-files-only --api-key k --max-request-bytes 10 "
            "--batch-wait-ms 0"
        )
    )
    assert (args.host, args.port, args.model, args.device, args.dtype) == (
        "0.0.0.0",
        9,
        "m",
        "cpu",
        "float32",
    )
    assert (args.max_length, args.batch_tokens, args.revision, args.local_files_only) == (
        512,
        2048,
        "abc",
        True,
    )
    assert (args.api_key, args.max_request_bytes, args.batch_wait_ms) == ("k", 10, 0.0)


def test_create_app_refuses_bad_settings(scorer: ZerankScorer) -> None:
    with pytest.raises(TypeError, match="score_pairs"):
        create_app(RemoteScorer("http://x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_key is empty"):
        create_app(scorer, api_key="")
    with pytest.raises(ValueError, match="max_wait_ms"):
        create_app(scorer, batch_wait_ms=-1)


# -- framework adapters over a remote scorer -----------------------------------------------------------
async def test_langchain_rerank_with_remote_scorer_matches_local(base_url: str, scorer: ZerankScorer) -> None:
    from langchain_core.documents import Document

    from zerank_integrations.langchain import ZerankRerank

    docs = [Document(page_content=text, metadata={"source": i}) for i, text in enumerate(DOCS)]
    remote = RemoteScorer(base_url)
    try:
        local_rr = ZerankRerank(scorer=scorer, top_n=3)
        remote_rr = ZerankRerank(scorer=remote, top_n=3)
        expected = local_rr.compress_documents(docs, QUERY)
        for got in (
            remote_rr.compress_documents(docs, QUERY),
            await remote_rr.acompress_documents(docs, QUERY),
        ):
            assert [d.metadata["source"] for d in got] == [d.metadata["source"] for d in expected]
            assert [d.page_content for d in got] == [d.page_content for d in expected]
            assert close_to(
                [d.metadata["relevance_score"] for d in got],
                [d.metadata["relevance_score"] for d in expected],
            )
        assert all("relevance_score" not in d.metadata for d in docs)  # the caller's documents are untouched
    finally:
        await remote.aclose()


async def test_llama_index_rerank_with_remote_scorer_matches_local(base_url: str, scorer: ZerankScorer) -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    from zerank_integrations.llama_index import ZerankRerank

    nodes = [NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=1.0 - i / 10) for i, text in enumerate(DOCS)]
    remote = RemoteScorer(base_url)
    try:
        expected = ZerankRerank(scorer=scorer, top_n=4).postprocess_nodes(nodes, query_str=QUERY)
        remote_rr = ZerankRerank(scorer=remote, top_n=4)
        synced = remote_rr.postprocess_nodes(nodes, query_str=QUERY)
        asynced = await remote_rr.apostprocess_nodes(nodes, query_str=QUERY)
        for got in (synced, asynced):
            assert [n.node.node_id for n in got] == [n.node.node_id for n in expected]
            assert close_to([n.score for n in got], [n.score for n in expected])
        assert [n.score for n in nodes] == [1.0 - i / 10 for i in range(len(DOCS))]
    finally:
        await remote.aclose()


# -- the vLLM recipe's pieces, checked against the core with transformers (vLLM itself cannot run here) -
def test_exported_sequence_classifier_outputs_the_yes_logit(
    checkpoint_dir: Path, scorer: ZerankScorer, tmp_path: Path
) -> None:
    """A one-label Qwen3ForSequenceClassification fed the score template's prompt == the core's raw score."""
    import jinja2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from zerank_integrations.serving.vllm import VLLM_HF_OVERRIDES, export_sequence_classifier

    out = export_sequence_classifier(checkpoint_dir, tmp_path / "seq-cls", dtype="float32")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == VLLM_HF_OVERRIDES["architectures"] and len(config["id2label"]) == 1
    template = jinja2.Environment().from_string((out / "zerank_score_template.jinja").read_text())
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    query = QUERY.strip()
    docs = [d.strip() for d in DOCS]
    logits = []
    for doc in docs:
        messages = [{"role": "query", "content": query}, {"role": "document", "content": doc}]
        ids = tokenizer(template.render(messages=messages), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logits.append(float(model(**ids).logits[0, 0]))
    assert close_to(logits, scorer.score(query, docs, raw=True), tol=1e-4)
    with flaky_server(scores=staticmethod(lambda i: logits[i])) as (url, handler):
        from zerank_integrations.serving.vllm import vllm_remote_scorer

        with vllm_remote_scorer(url, "zerank-2") as remote:  # a vLLM-shaped answer: raw logits, no raw_score
            assert close_to(remote.score(query, docs), scorer.score(query, docs), tol=1e-5)
        assert handler.seen[-1]["use_activation"] is False and handler.seen[-1]["model"] == "zerank-2"
