"""The server under abuse: hostile bodies, vanishing and stalled clients, unexpected errors, schema fuzzing,
and a short soak with SIGTERM. Everything runs against real uvicorn servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from _serving_support import DOCS, QUERY, close_to, in_input_order, serve_in_thread
from hypothesis import HealthCheck, Phase, given, settings

from zerank_integrations import ZerankScorer
from zerank_integrations.serving import create_app

REPO = Path(__file__).resolve().parents[1]


def _load_soak() -> Any:
    spec = importlib.util.spec_from_file_location("bench_soak", REPO / "benchmarks" / "bench_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module
    spec.loader.exec_module(module)
    return module


soak = _load_soak()
MAX_DOCUMENTS = soak.MAX_DOCUMENTS  # the hostile kinds are built around the soak server's limits
MAX_REQUEST_BYTES = soak.MAX_REQUEST_BYTES


class FlakyModel:
    """The real scorer, except that a document reading ``EXPLODE`` raises (an unexpected server fault) and a
    query starting with ``slow`` holds the model thread until ``release`` is set."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.model_name = scorer.model_name
        self.accepts_instruction = self.scorer.accepts_instruction
        self.release = threading.Event()
        self.seen: list[str] = []

    def score_pairs_details(self, pairs: list[tuple[str, ...]]) -> list[Any]:
        self.seen.extend(pair[0] for pair in pairs)
        if any(pair[0].startswith("slow") for pair in pairs):
            assert self.release.wait(30)
        if any(pair[1] == "EXPLODE" for pair in pairs):
            raise KeyError("an internal table is missing an entry")
        return self.scorer.score_pairs_details(pairs)

    def truncate_texts(self, texts: list[str], max_tokens: int) -> list[str]:
        return self.scorer.truncate_texts(texts, max_tokens)


@pytest.fixture(scope="module")
def flaky(scorer: ZerankScorer) -> Iterator[tuple[str, FlakyModel, Any]]:
    model = FlakyModel(scorer)
    app = create_app(model, max_documents=MAX_DOCUMENTS, max_request_bytes=MAX_REQUEST_BYTES, batch_wait_ms=0)
    with serve_in_thread(app, header_timeout=1.0, body_timeout=1.0, max_connections=24) as url:
        yield url, model, app


# -- hostile bodies never hurt a neighbour -----------------------------------------------------------------
async def test_hostile_bodies_get_json_4xx_and_never_cost_a_neighbour_its_answer(
    flaky: tuple[str, FlakyModel, Any], scorer: ZerankScorer, caplog: pytest.LogCaptureFixture
) -> None:
    url, _, _ = flaky
    kinds = [k for k in soak.HOSTILE_KINDS if k.raw is None and "bearer" not in k.name]
    assert len(soak.HOSTILE_KINDS) >= 40
    expected = scorer.score(QUERY, DOCS)
    caplog.set_level(logging.DEBUG)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)  # hostile and good share connections
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def hostile(kind: Any) -> tuple[str, httpx.Response]:
            return kind.name, await client.request(kind.method, kind.path, content=kind.body, headers=kind.headers)

        async def good() -> httpx.Response:
            return await client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS})

        work = [hostile(kind) for kind in kinds] + [good() for _ in range(len(kinds))]
        answers = await asyncio.gather(*work)
    for name, response in answers[: len(kinds)]:
        kind = next(k for k in kinds if k.name == name)
        assert response.headers["content-type"] == "application/json", name
        if kind.expect == "200":
            assert response.status_code == 200, (name, response.text)
        else:
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    for response in answers[len(kinds) :]:
        assert response.status_code == 200
        assert close_to(in_input_order(response.json()["results"], len(DOCS)), expected)
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


def test_messages_never_show_library_internals(flaky: tuple[str, FlakyModel, Any]) -> None:
    url, _, _ = flaky
    body = b'{"query": "q", "documents": ["fine", "bad \\udc00 text"]}'
    response = httpx.post(f"{url}/v1/rerank", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["message"] == (
        "'documents[1]': the text is not valid Unicode text: lone surrogate '\\udc00' at character 4"
    )
    assert "TextEncodeInput" not in response.text and "pydantic" not in response.text


# -- unexpected errors ----------------------------------------------------------------------------------------
def test_unexpected_error_is_a_json_500_with_a_request_id_logged_once(
    flaky: tuple[str, FlakyModel, Any], scorer: ZerankScorer, caplog: pytest.LogCaptureFixture
) -> None:
    url, _, _ = flaky
    caplog.set_level(logging.INFO, logger="zerank_integrations.serving")
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=1)) as client:
        broken = client.post("/v1/rerank", json={"query": "q", "documents": ["EXPLODE"]})
        good = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})  # the same connection
    assert broken.status_code == 500
    rid = broken.headers["x-request-id"]
    assert broken.json()["message"] == f"internal server error (request id {rid}); the server log has the details"
    assert "KeyError" not in broken.text and broken.headers.get("connection") != "close"
    assert good.status_code == 200
    assert close_to(in_input_order(good.json()["results"], len(DOCS)), scorer.score(QUERY, DOCS))
    logged = [r for r in caplog.records if rid in r.getMessage() and not r.name.endswith(".access")]
    assert len(logged) == 1 and logged[0].exc_info is not None  # one line with the id, with its traceback
    access = [r for r in caplog.records if r.name.endswith(".access") and rid in r.getMessage()]
    assert len(access) == 1 and access[0].exc_info is None and access[0].zerank["status"] == 500  # type: ignore[attr-defined]


# -- vanishing clients --------------------------------------------------------------------------------------
def _send_and_vanish(url: str, body: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        head = f"POST /v1/rerank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
        sock.sendall(head.encode() + b"\r\n\r\n" + body)


async def test_clients_that_leave_cost_no_model_time(
    flaky: tuple[str, FlakyModel, Any], caplog: pytest.LogCaptureFixture
) -> None:
    url, model, app = flaky
    caplog.set_level(logging.DEBUG, logger="zerank_integrations.serving")
    batcher = app.state.batcher
    before = batcher.stats.as_dict()
    model.release.clear()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        blocker = asyncio.create_task(client.post("/v1/rerank", json={"query": "slow one", "documents": ["a"]}))
        while batcher.in_flight == 0:  # the model thread is now held by the slow request
            await asyncio.sleep(0.01)
        for i in range(5):
            body = f'{{"query": "vanishing {i}", "documents": ["x", "y"]}}'.encode()
            await asyncio.to_thread(_send_and_vanish, url, body)
        deadline = time.monotonic() + 10
        while batcher.stats.abandoned - before["abandoned"] < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        model.release.set()
        assert (await blocker).status_code == 200
    assert batcher.stats.abandoned - before["abandoned"] == 5
    assert not any(query.startswith("vanishing") for query in model.seen)  # never reached the model
    assert "Traceback" not in caplog.text
    assert sum("disconnected" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records) >= 5


# -- slow clients and the connection cap ----------------------------------------------------------------------
def _stall(url: str, data: bytes) -> tuple[float, bytes]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return time.monotonic() - started, received


def test_stalled_clients_are_cut_at_the_read_timeouts(flaky: tuple[str, FlakyModel, Any]) -> None:
    url, _, _ = flaky
    header_wait, header_answer = _stall(url, b"POST /v1/rerank HTTP/1.1\r\nhost: x\r\n")
    body_wait, body_answer = _stall(url, b"POST /v1/rerank HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{")
    silent_wait, _ = _stall(url, b"")
    for wait in (header_wait, body_wait, silent_wait):
        assert 0.9 <= wait < 2.5  # the configured 1 s, then closed
    assert header_answer.startswith(b"HTTP/1.1 408") and b"request headers did not arrive within 1 s" in header_answer
    assert body_answer.startswith(b"HTTP/1.1 408") and b"request body did not arrive within 1 s" in body_answer


def test_connections_beyond_the_cap_get_a_json_503(flaky: tuple[str, FlakyModel, Any]) -> None:
    url, _, _ = flaky
    host, port = url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port))) for _ in range(24)]
    try:
        time.sleep(0.2)
        with socket.create_connection((host, int(port))) as extra:
            extra.settimeout(5)
            answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"more than 24 open connections" in answer
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS}).status_code == 200


def test_unparseable_http_gets_json_400(flaky: tuple[str, FlakyModel, Any]) -> None:
    url, _, _ = flaky
    _, answer = _stall(url, b"BLAH / NOPE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"application/json" in answer
    assert b"not a valid HTTP/1.1 request" in answer


# -- the schema: every route's bodies and errors, fuzzed ------------------------------------------------------
def test_schema_documents_every_route(flaky: tuple[str, FlakyModel, Any]) -> None:
    url, _, _ = flaky
    schema = httpx.get(f"{url}/openapi.json").json()
    for path in ("/v1/rerank", "/v2/rerank", "/v1/reranking", "/rerank", "/v1/models/rerank"):
        operation = schema["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True
        assert {"200", "400", "413", "415", "422", "429", "500", "503"} <= set(operation["responses"])
    shared = schema["components"]["schemas"]["SharedRerankRequest"]
    assert shared["properties"]["documents"]["maxItems"] == MAX_DOCUMENTS
    assert shared["required"] == ["query", "documents"]


def test_schemathesis_finds_no_failure(flaky: tuple[str, FlakyModel, Any]) -> None:
    """Positive and negative examples for every operation: no 5xx, documented statuses and bodies only."""
    url, _, _ = flaky
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "413", "415", "422", "429"]}}}
    )
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    failures, calls = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=30,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate()

            try:
                check()
            except Exception as error:  # collect every operation's failure, then report them together
                failures.append(f"{mode.value} {operation.label}: {error}"[:2000])
    assert not failures, "\n\n".join(failures)
    assert calls >= 200


# -- the soak, short ------------------------------------------------------------------------------------------
def test_short_soak_with_sigterm(checkpoint_dir: Path, tmp_path: Path) -> None:
    args = soak.parse_args(
        [
            "--model",
            str(checkpoint_dir),
            "--requests",
            "240",
            "--concurrency",
            "8",
            "--hostile",
            "0.25",
            "--distinct",
            "24",
            "--stalled",
            "6",
            "--in-flight",
            "8",
            "--log",
            str(tmp_path / "serve.log"),
        ]
    )
    report = soak.run_soak(args)
    assert report.problems() == []
    assert report.good_sent > 120 and report.good_lost == 0 and report.server_5xx == 0
    assert report.in_flight_answered == report.in_flight_at_sigterm >= 1  # still being scored at SIGTERM
    assert report.exit_seconds < soak.SHUTDOWN_TIMEOUT_S
    assert report.stalled_closed_s and max(report.stalled_closed_s) < soak.BODY_TIMEOUT_S + 1.5
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
