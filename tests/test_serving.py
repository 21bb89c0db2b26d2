"""The rerank server and RemoteScorer, end to end over real loopback HTTP with the small real checkpoint.

Servers are real uvicorn threads/processes on 127.0.0.1; the retry tests use a tiny real HTTP handler that
fails a set number of times. Nothing mocks httpx, FastAPI or the scorer. Dialects and the real SDKs are in
test_serving_dialects.py, abuse and shutdown in test_serving_hardening.py.
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
from _serving_support import DOCS, QUERY, close_to, free_port, in_input_order, request_workload, serve_in_thread

from zerank_integrations import ZerankScorer
from zerank_integrations.serving import (
    MicroBatcher,
    RawScoresUnavailableError,
    RemoteRerankError,
    RemoteScorer,
    create_app,
)
from zerank_integrations.serving.batcher import ScoreJob
from zerank_integrations.serving.cli import add_serve_arguments

MAX_REQUEST_BYTES = 20_000
MAX_DOCUMENTS = 40


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
        assert remote.model_name == scorer.model_name  # the server says which model answers, not our default


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


def test_model_name_comes_from_the_server_before_any_request(base_url: str, scorer: ZerankScorer) -> None:
    with RemoteScorer(base_url, model="what-the-client-guessed") as remote:
        assert remote.family is None  # no known name: the family is not guessed
        assert remote.model_name == scorer.model_name  # asked /health once
        assert remote.requests_sent == 0
        assert remote.family == scorer.family == "zerank"  # ... which also says how the checkpoint was read
        assert close_to(remote.score(QUERY, DOCS, raw=True), scorer.score(QUERY, DOCS, raw=True))
    models = httpx.get(f"{base_url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == [scorer.model_name]


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
        assert close_to(in_input_order(response.json()["results"], len(docs)), want)
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
        self.accepts_instruction = self.scorer.accepts_instruction

    def score_pairs_details(self, pairs: list[tuple[str, ...]]) -> list[Any]:
        if not self.calls:
            assert self.release.wait(30)
        self.calls.append(len(pairs))
        if any(pair[1] == "EXPLODE" for pair in pairs):
            raise RuntimeError("the model failed on this request")
        return self.scorer.score_pairs_details(pairs)

    def truncate_texts(self, texts: list[str], max_tokens: int) -> list[str]:
        return self.scorer.truncate_texts(texts, max_tokens)


async def test_batcher_groups_queued_requests_and_isolates_failures(scorer: ZerankScorer) -> None:
    gated = GatedScorer(scorer)
    batcher = MicroBatcher(gated, max_wait_ms=0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(ScoreJob("first query", ["a", "b"])))
        while batcher.stats.requests < 1:  # wait until the first request is in the (gated) model thread
            await asyncio.sleep(0.005)
        work = [(f"query {i}", [f"doc {i}", f"other {i}"]) for i in range(5)]
        work.insert(2, ("bad query", ["fine", "EXPLODE"]))
        tasks = [asyncio.ensure_future(batcher.submit(ScoreJob(q, d))) for q, d in work]
        while batcher.queued < len(work):
            await asyncio.sleep(0.005)
        gated.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert close_to([d.raw for d in await first], scorer.score("first query", ["a", "b"], raw=True))
    finally:
        await batcher.close()
    for (query, docs), result in zip(work, results, strict=True):
        if query == "bad query":
            assert isinstance(result, RuntimeError) and "failed on this request" in str(result)
        else:
            assert close_to([d.raw for d in result], scorer.score(query, docs, raw=True))
    # first alone; then all six queued requests together (fails), then each of the six on its own
    assert gated.calls == [2, 12, 2, 2, 2, 2, 2, 2]
    assert batcher.stats.failed_batches == 1 and batcher.stats.failed_requests == 1
    assert batcher.stats.largest_batch_requests == 6


async def test_cancelled_requests_leave_the_queue_without_model_time(scorer: ZerankScorer) -> None:
    gated = GatedScorer(scorer)
    batcher = MicroBatcher(gated, max_wait_ms=0)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(ScoreJob("first query", ["a"])))
        while batcher.stats.requests < 1:
            await asyncio.sleep(0.005)
        waiting = [asyncio.ensure_future(batcher.submit(ScoreJob(f"q{i}", ["x", "y", "z"]))) for i in range(4)]
        while batcher.queued < 4:
            await asyncio.sleep(0.005)
        for task in waiting[:3]:  # three clients leave before their turn
            task.cancel()
        await asyncio.sleep(0.01)
        assert batcher.queued == 1 and batcher.stats.abandoned == 3
        first.cancel()  # this one is being scored: its result is dropped when the model returns
        gated.release.set()
        kept = await waiting[3]
        assert close_to([d.raw for d in kept], scorer.score("q3", ["x", "y", "z"], raw=True))
    finally:
        await batcher.close()
    assert gated.calls == [1, 3]  # the model never saw the three abandoned requests
    assert batcher.stats.dropped == 1


async def test_closed_batcher_refuses_work(scorer: ZerankScorer) -> None:
    batcher = MicroBatcher(scorer)
    batcher.start()
    await batcher.close()
    with pytest.raises(RuntimeError, match="not running"):
        await batcher.submit(ScoreJob("q", ["d"]))


def test_unknown_route_and_method_get_json_errors(base_url: str) -> None:
    response = httpx.get(f"{base_url}/v1/rerank")
    assert response.status_code == 405 and response.json()["error"]["code"] == 405
    response = httpx.post(f"{base_url}/v2/nothing", json={})
    assert response.status_code == 404 and response.json()["error"]["code"] == 404
    assert response.headers["x-request-id"]


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
        with pytest.raises(ValueError, match="no instruction field"):
            remote.score(QUERY, ["d"], instruction="judge strictly")
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
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
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
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["message"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"Bearer {key}x"})
    assert wrong.status_code == 401 and "invalid bearer token" in wrong.json()["detail"]
    basic = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": key})
    assert basic.status_code == 401
    for scheme in ("Bearer", "bearer", "BEARER"):  # the scheme is case-insensitive (RFC 7235)
        ok = httpx.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"{scheme} {key}"})
        assert ok.status_code == 200, scheme
    tei = httpx.post(f"{url}/rerank", json={"query": QUERY, "texts": DOCS})
    assert tei.status_code == 401 and tei.json()["error_type"] == "Unauthorized"  # TEI's own error shape

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
    assert "has random weights (a test checkpoint from make-test-model): its scores are meaningless" in output
    assert key not in output  # neither the startup banner nor the access log shows the key
    assert "Traceback" not in output


# -- RemoteScorer against a flaky real HTTP server -------------------------------------------------------
class FlakyHandler(BaseHTTPRequestHandler):
    """Answers the first ``failures`` POSTs with ``fail_status`` (or drops the connection), then succeeds.

    Success echoes one result per document with ``relevance_score = scores[i]`` and no ``raw_score``, in
    the Cohere/vLLM shape (``results``), as a vLLM or hosted endpoint would.
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

    def do_GET(self) -> None:  # no /health, /v1/models or /info here: model_name stays the configured one
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

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
            assert remote.model_name == "served-name"
        assert len(handler.seen) == 3 and remote.retries == 2
        assert handler.seen[-1] == {"model": "served-name", "query": "q", "documents": ["a", "b", "c"]}


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


def test_remote_raw_scores_follow_the_family_calibration() -> None:
    logits = [3.0, -2.0, 0.5]
    zerank = [1 / (1 + math.exp(-x / 5)) for x in logits]
    with flaky_server(scores=staticmethod(lambda i: zerank[i])) as (url, _):
        with RemoteScorer(url) as known:  # zerank's calibration inverts the probabilities exactly
            assert known.score("q", ["a", "b", "c"]) == pytest.approx(zerank, abs=1e-12)
            assert known.score("q", ["a", "b", "c"], raw=True) == pytest.approx(logits, abs=1e-9)
        unknown = RemoteScorer(url, model="some-hosted-reranker")  # no family: no raw scores
        with unknown, pytest.raises(RawScoresUnavailableError, match="family="):
            unknown.score("q", ["a", "b", "c"], raw=True)
    with flaky_server(scores=staticmethod(lambda i: logits[i])) as (url, handler):
        with RemoteScorer(url, dialect="vllm", model="zerank-2", family="zerank") as vllm:
            assert vllm.score("q", ["a", "b", "c"]) == pytest.approx(zerank, abs=1e-12)
            assert vllm.score("q", ["a", "b", "c"], raw=True) == pytest.approx(logits)
            vllm.score("q", ["a"], instruction="prefer primary sources")
        assert handler.seen[-1]["use_activation"] is False  # vLLM is asked for the raw score
        assert handler.seen[-1]["instruction"] == "prefer primary sources"  # vLLM's own field name


def test_remote_rejects_incomplete_results_and_sends_the_key() -> None:
    with flaky_server(omit_last=True) as (url, handler), RemoteScorer(url, api_key="k-123") as remote:
        with pytest.raises(RemoteRerankError, match=r"2 results for 3 documents \(document 2 missing\)"):
            remote.score("q", ["a", "b", "c"])
        assert handler.headers_seen == ["Bearer k-123"]
        assert "k-123" not in repr(remote)


def test_remote_scorer_reads_keys_from_the_provider_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CO_API_KEY", "co-secret")
    monkeypatch.setenv("VOYAGE_API_KEY", "voyage-secret")
    with flaky_server() as (url, handler):
        with RemoteScorer(url) as cohere_like:
            cohere_like.score("q", ["a"])
        with RemoteScorer(url, dialect="voyage", api_key="explicit") as voyage_like:
            assert voyage_like.api_key is not None and voyage_like.api_key.get_secret_value() == "explicit"
        assert handler.headers_seen == ["Bearer co-secret"]
        assert "co-secret" not in repr(cohere_like)


def test_remote_scorer_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="http"):
        RemoteScorer("127.0.0.1:8000")
    with pytest.raises(ValueError, match="dialect must be one of"):
        RemoteScorer("http://x", dialect="soap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass family="):
        RemoteScorer("http://x", dialect="tei", model="my-served-name")
    remote = RemoteScorer("http://host:1/", path="v1/models/rerank")
    assert remote.url == "http://host:1/v1/models/rerank"
    assert RemoteScorer(dialect="voyage").url == "https://api.voyageai.com/v1/rerank"  # hosted default


# -- packaging and CLI -----------------------------------------------------------------------------------
def test_import_zerank_integrations_does_not_import_serving() -> None:
    code = (
        "import sys, zerank_integrations\n"
        "heavy = ('zerank_integrations.serving', 'fastapi', 'uvicorn')\n"
        "bad = [m for m in sys.modules if m.startswith(heavy)]\n"
        "assert not bad, bad\n"
        "from zerank_integrations.serving import RemoteScorer\n"
        "RemoteScorer('http://127.0.0.1:1', dialect='vllm', model='zerank-2', family='zerank')\n"
        "assert 'fastapi' not in sys.modules and 'torch' not in sys.modules, 'the client must stay light'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_arguments_defaults_and_options() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.api_key) == ("127.0.0.1", 8000, None)
    assert (args.header_timeout, args.body_timeout, args.max_connections, args.shutdown_timeout) == (10, 30, 1024, 30)
    args = parser.parse_args(
        shlex.split(
            "--host 0.0.0.0 --port 9 --model m --device cpu --dtype float32 --max-length 512 "
            "--batch-tokens 2048 --revision abc --local-files-only --api-key k --max-request-bytes 10 "
            "--batch-wait-ms 0 --header-timeout 2.5 --body-timeout 4 --keep-alive-timeout 3 --max-connections 7 "
            "--shutdown-timeout 12 --max-queued-requests 5 --max-json-depth 8"
        )
    )
    assert (args.host, args.port, args.model, args.device, args.dtype) == ("0.0.0.0", 9, "m", "cpu", "float32")
    assert (args.max_length, args.batch_tokens, args.revision, args.local_files_only) == (512, 2048, "abc", True)
    assert (args.api_key, args.max_request_bytes, args.batch_wait_ms) == ("k", 10, 0.0)
    assert (args.header_timeout, args.body_timeout, args.keep_alive_timeout) == (2.5, 4.0, 3)
    assert (args.max_connections, args.shutdown_timeout, args.max_queued_requests, args.max_json_depth) == (7, 12, 5, 8)


def test_create_app_refuses_bad_settings(scorer: ZerankScorer) -> None:
    with pytest.raises(TypeError, match="score_pairs_details"):
        create_app(RemoteScorer("http://x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_key is empty"):
        create_app(scorer, api_key="")
    with pytest.raises(ValueError, match="max_wait_ms"):
        create_app(scorer, batch_wait_ms=-1)
    with pytest.raises(ValueError, match="max_json_depth"):
        create_app(scorer, max_json_depth=1)


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
@pytest.mark.parametrize("family", ["zerank", "qwen3-reranker", "mxbai-rerank-v2"])
def test_exported_classifier_with_the_score_template_gives_the_cores_raw_score(
    family_checkpoints: dict[str, Path], family: str, tmp_path: Path
) -> None:
    """A one-label *ForSequenceClassification fed our score template's prompt == the core's raw score,
    with and without an instruction, for every causal-LM family."""
    import jinja2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from zerank_integrations.families import get_family
    from zerank_integrations.serving.vllm import TEMPLATE_FILE, export_sequence_classifier, hf_overrides

    local = ZerankScorer(str(family_checkpoints[family]))
    assert local.family == family
    out = export_sequence_classifier(family_checkpoints[family], tmp_path / "seq-cls", family=family, dtype="float32")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification") and len(config["id2label"]) == 1
    template = jinja2.Environment().from_string((out / TEMPLATE_FILE).read_text())
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()

    def rendered(query: str, document: str, **variables: Any) -> str:
        messages = [{"role": "query", "content": query}, {"role": "document", "content": document}]
        return template.render(messages=messages, **variables)

    def served(query: str, document: str, **variables: Any) -> float:
        """What vLLM computes: the rendered prompt tokenized as one string, through the classifier."""
        ids = tokenizer(rendered(query, document, **variables), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            return float(model(**ids).logits[0, 0])

    # The template renders the family's recipe text: with an instruction, without one, and with a blank one.
    fmt = local.loaded_model.template.format  # the checkpoint's own template where it ships one, else the recipe
    instruction = "Prefer documents about biology"
    query, docs = (QUERY.strip(), [d.strip() for d in DOCS]) if fmt.strip else (QUERY, DOCS)
    for variables, wanted in (({}, None), ({"instruction": instruction}, instruction), ({"instruction": " "}, None)):
        for doc, normalized in zip(DOCS, docs, strict=True):
            expected_text = _recipe_text(fmt, tokenizer, query, normalized, wanted or fmt.default_instruction)
            assert rendered(QUERY, doc, **variables) == expected_text
    if family == "mxbai-rerank-v2":
        return  # its recipe tokenizes each piece on its own; vLLM tokenizes the rendered text as one string
    assert close_to([served(QUERY, doc) for doc in DOCS], local.score(QUERY, DOCS, raw=True), tol=1e-4)
    assert close_to(
        [served(QUERY, doc, instruction=instruction) for doc in DOCS],
        local.score(QUERY, DOCS, raw=True, instruction=instruction),
        tol=1e-4,
    )
    assert hf_overrides(family) == get_family(family).vllm_hf_overrides


def _recipe_text(fmt: Any, tokenizer: Any, query: str, document: str, instruction: str | None) -> str:
    """The prompt as its reference recipe writes it, built here from the declared pieces (``PromptFormat``)."""
    query_text = (
        (fmt.with_instruction or "").format(query=query, instruction=instruction)
        if instruction
        else (fmt.query.format(query=query))
    )
    document_text = fmt.document.format(document=document)
    if fmt.pieces == "chat_template":
        messages = [
            {"role": fmt.chat_roles[0], "content": query_text},
            {"role": fmt.chat_roles[1], "content": document_text},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, **dict(fmt.chat_kwargs))
    return "".join((*fmt.head, query_text, *fmt.middle, document_text, *fmt.tail))


def test_vllm_helpers_refuse_a_native_classifier(family_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from zerank_integrations.serving.vllm import export_sequence_classifier, hf_overrides, score_template

    assert hf_overrides("cross-encoder") is None
    with pytest.raises(ValueError, match="serves it natively"):
        score_template(AutoTokenizer.from_pretrained(family_checkpoints["cross-encoder"]), "cross-encoder")
    with pytest.raises(ValueError, match="already a sequence classifier"):
        export_sequence_classifier(family_checkpoints["cross-encoder"], tmp_path / "x", family="cross-encoder")


def test_vllm_remote_scorer_applies_the_family_calibration(scorer: ZerankScorer) -> None:
    from zerank_integrations.serving.vllm import vllm_remote_scorer

    logits = scorer.score(QUERY, DOCS, raw=True)
    with flaky_server(scores=staticmethod(lambda i: logits[i])) as (url, handler):
        with vllm_remote_scorer(url, "zerank-2") as remote:  # a vLLM-shaped answer: raw scores, no raw_score
            assert close_to(remote.score(QUERY, DOCS), scorer.score(QUERY, DOCS), tol=1e-9)
        assert handler.seen[-1]["use_activation"] is False and handler.seen[-1]["model"] == "zerank-2"
