"""Running the server in production (#20): Prometheus metrics, readiness and drain, request ids, tracing,
backpressure and JSON logs, each against a real uvicorn server on 127.0.0.1 (the drain and JSON logs through
the real ``serve`` entry point in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _processes import running_service
from _serving_support import DOCS, QUERY, close_to, free_port, in_input_order, serve_in_thread
from prometheus_client.parser import text_string_to_metric_families

from zerank_integrations import ZerankScorer
from zerank_integrations.serving import create_app


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed with prometheus-client's own parser: {(sample name, sorted labels): value}."""
    reply = httpx.get(f"{url}/metrics", timeout=10)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (a label value may be a prefix + '*')."""

    def matches(have: dict[str, str]) -> bool:
        for key, want in labels.items():
            value = have.get(key)
            if value is None or (value != want and not (want.endswith("*") and value.startswith(want[:-1]))):
                return False
        return True

    return sum(value for (sample, have), value in samples.items() if sample == name and matches(dict(have)))


class GatedScorer:
    """The real scorer behind a gate: a query starting with ``slow`` holds the model thread until released."""

    def __init__(self, scorer: ZerankScorer) -> None:
        self.scorer = scorer
        self.model_name = scorer.model_name
        self.accepts_instruction = scorer.accepts_instruction
        self.release = threading.Event()

    def score_pairs_details(self, pairs: list[tuple[str, ...]]) -> list[Any]:
        if any(pair[0].startswith("slow") for pair in pairs):
            assert self.release.wait(30)
        return self.scorer.score_pairs_details(pairs)

    def truncate_texts(self, texts: list[str], max_tokens: int) -> list[str]:
        return self.scorer.truncate_texts(texts, max_tokens)


# -- metrics ------------------------------------------------------------------------------------------------
def test_metrics_count_every_response_pairs_and_cache_hits(checkpoint_dir: Path) -> None:
    cached = ZerankScorer(str(checkpoint_dir), cache_size=1024)  # its own counters; weights shared in-process
    app = create_app(cached, batch_wait_ms=0)
    good = [
        ("/v2/rerank", {"query": QUERY, "documents": DOCS[:4]}),
        ("/v1/rerank", {"query": QUERY, "documents": DOCS[2:], "top_k": 2}),  # Voyage on the shared path
        ("/rerank", {"query": "another question", "texts": DOCS[:3]}),
        ("/v2/rerank", {"query": QUERY, "documents": DOCS[:4], "top_n": 1}),  # 4 repeats of the first request
        ("/v1/reranking", {"query": "another question", "input": DOCS[1:3]}),  # 2 repeats of the TEI request
        ("/v1/models/rerank", {"query": "third", "documents": DOCS[:2]}),
    ]
    documents_sent = sum(len(body.get("documents", body.get("texts", body.get("input")))) for _, body in good)
    repeats_sent = 4 + 2 + 2  # DOCS[2:4] of the Voyage request repeat the first request's pairs too
    bad = [
        ("/v2/rerank", {"query": "", "documents": ["a"]}),  # 422
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 1, "top_k": 1}),  # 422
        ("/rerank", b"{not json"),  # 400
        ("/v1/reranking", {"query": "q"}),  # 422
    ]
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for path, body in good:
            reply = client.post(path, json=body)
            assert reply.status_code == 200, reply.text
        for path, body in bad:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            reply = client.post(path, content=raw, headers={"content-type": "application/json"})
            assert 400 <= reply.status_code < 500
        assert client.get("/nowhere").status_code == 404
        samples = scrape(url)
    rerank_routes = [path for path, _ in good]
    successes = sum(total(samples, "zerank_requests_total", route=r, status="200") for r in set(rerank_routes))
    client_errors = sum(total(samples, "zerank_requests_total", route=r, status="4*") for r in set(rerank_routes))
    assert (successes, client_errors) == (len(good), len(bad))
    durations = sum(total(samples, "zerank_request_duration_seconds_count", route=r) for r in set(rerank_routes))
    assert durations == len(good) + len(bad)
    assert total(samples, "zerank_requests_total", route="other", status="404") == 1  # unknown path: one label
    assert total(samples, "zerank_requests_total", route="/v1/rerank", dialect="voyage", status="200") == 1
    assert total(samples, "zerank_pairs_scored_total") == documents_sent
    assert total(samples, "zerank_score_cache_hits_total") == repeats_sent
    assert total(samples, "zerank_score_cache_misses_total") == documents_sent - repeats_sent
    for phase in ("queue", "tokenize", "model"):
        assert total(samples, f"zerank_{phase}_duration_seconds_count") == len(good)
    assert total(samples, "zerank_batch_pairs_sum") == documents_sent  # sequential: no call shared
    assert total(samples, "zerank_tokens_computed_total") == cached.stats.computed_tokens > 0
    assert total(samples, "zerank_forward_passes_total") == cached.stats.forward_passes
    assert total(samples, "zerank_prompt_tokens_total") > 0
    info = {dict(labels)["family"]: v for (name, labels), v in samples.items() if name == "zerank_model_info"}
    assert info == {"zerank": 1.0}
    assert total(samples, "zerank_model_info", device="cpu", dtype="float32", model=str(checkpoint_dir)) == 1
    assert total(samples, "zerank_requests_in_flight") == 0 and total(samples, "zerank_queue_length") == 0


def test_apps_keep_separate_registries(scorer: ZerankScorer) -> None:
    first, second = create_app(scorer), create_app(scorer)
    assert first.state.metrics.registry is not second.state.metrics.registry
    with serve_in_thread(first) as url_one, serve_in_thread(second) as url_two:
        assert httpx.post(f"{url_one}/rerank", json={"query": QUERY, "texts": DOCS}).status_code == 200
        assert total(scrape(url_one), "zerank_pairs_scored_total") == len(DOCS)
        assert total(scrape(url_two), "zerank_pairs_scored_total") == 0


def test_selection_tokens_with_a_ledger(scorer: ZerankScorer) -> None:
    from zerank_integrations.accounting import TokenLedger

    ledger = TokenLedger(encoding="o200k_base")
    with serve_in_thread(create_app(scorer, ledger=ledger)) as url:
        reply = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2}, timeout=30)
        assert reply.status_code == 200
        samples = scrape(url)
    kept = [DOCS[item["index"]] for item in reply.json()["results"]]
    expected = TokenLedger(encoding="o200k_base").record(QUERY, DOCS, kept)
    assert total(samples, "zerank_selection_tokens_in_total") == expected.tokens_in
    assert total(samples, "zerank_selection_tokens_kept_total") == expected.tokens_kept
    assert total(samples, "zerank_selection_tokens_saved_total") == expected.tokens_saved > 0


# -- readiness ----------------------------------------------------------------------------------------------
def test_ready_is_503_until_the_model_is_loaded_and_warmed(scorer: ZerankScorer) -> None:
    loaded = threading.Event()

    def load() -> ZerankScorer:
        assert loaded.wait(30)
        return scorer

    app = create_app(load, model_name="loading-model", warm_up=True)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/ready").status_code == 503 and client.get("/ready").json() == {"status": "loading"}
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["ready"] == "loading"
        refused = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error_type"] == "Overloaded" and refused.json()["request_id"]
        loaded.set()
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.05)
        answer = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
        assert answer.status_code == 200
        assert close_to(in_input_order(answer.json(), len(DOCS), "score"), scorer.score(QUERY, DOCS))
        assert client.get("/health").json()["model"] == "loading-model"  # the served name given


@pytest.fixture(scope="module")
def served_subprocess(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``python -m zerank_integrations.serving`` with JSON logs, a 4 s drain and a request cap, on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    command = [sys.executable, "-m", "zerank_integrations.serving", "--model", str(checkpoint_dir), "--device", "cpu"]
    command += ["--port", str(port), "--log-format", "json", "--drain-seconds", "4", "--max-concurrent-requests", "4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    handle = open(log, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    ready_seen: list[int] = []
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                ready_seen.append(httpx.get(f"{url}/ready", timeout=2).status_code)
                if ready_seen[-1] == 200:
                    break
                assert httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        yield {"url": url, "proc": proc, "log": log, "ready_seen": ready_seen}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        handle.close()


def test_sigterm_drain_and_json_logs(served_subprocess: dict[str, Any], scorer: ZerankScorer) -> None:
    url, proc, log = served_subprocess["url"], served_subprocess["proc"], served_subprocess["log"]
    assert set(served_subprocess["ready_seen"]) <= {503, 200}
    sent_ids = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(3):
            reply = client.post(
                "/v2/rerank", json={"query": QUERY, "documents": DOCS}, headers={"X-Request-Id": f"c-{i}"}
            )
            assert reply.status_code == 200 and reply.headers["x-request-id"] == f"c-{i}"
            sent_ids.append(f"c-{i}")
        bad = client.post("/rerank", json={"query": "q"}, headers={"X-Request-Id": "c-bad"})
        assert bad.status_code == 422
        proc.send_signal(signal.SIGTERM)
        states = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # within the 4 s drain: not ready, alive, still answering
            states.append((client.get("/ready").status_code, client.get("/health").status_code))
            if states[-1][0] == 503:
                break
            time.sleep(0.02)
        assert states[-1] == (503, 200), states
        during = client.post("/rerank", json={"query": QUERY, "texts": DOCS}, headers={"X-Request-Id": "c-drain"})
        assert during.status_code == 200
        assert close_to(in_input_order(during.json(), len(DOCS), "score"), scorer.score(QUERY, DOCS))
    assert proc.wait(timeout=40) == 0  # a stop on SIGTERM exits 0, as on Ctrl-C (uvicorn would re-raise: 143)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert len(lines) == len(log.read_text().splitlines())  # every line is one JSON object
    access = {line["request_id"]: line for line in lines if line["logger"] == "zerank_integrations.serving.access"}
    assert set(access) == {*sent_ids, "c-bad", "c-drain"}  # one line per rerank request, none for probes
    assert access["c-0"]["status"] == 200 and access["c-0"]["documents"] == len(DOCS) and access["c-0"]["tokens"] > 0
    assert access["c-0"]["route"] == "/v2/rerank" and access["c-0"]["model_ms"] >= 0
    assert access["c-bad"]["status"] == 422 and access["c-drain"]["status"] == 200
    text = log.read_text()
    assert not any(doc.strip() and doc.strip() in text for doc in DOCS) and QUERY not in text  # no request text


# -- request ids ----------------------------------------------------------------------------------------------
def test_every_response_carries_a_request_id(scorer: ZerankScorer) -> None:
    app = create_app(scorer, api_key="k-123")
    auth = {"Authorization": "Bearer k-123"}
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        replies = [
            client.get("/health"),
            client.get("/ready"),
            client.get("/metrics"),
            client.get("/nowhere"),
            client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS}, headers=auth),
            client.post("/v2/rerank", json={"query": QUERY, "documents": DOCS}),  # 401
        ]
        ids = [reply.headers.get("x-request-id") for reply in replies]
        assert all(ids) and len(set(ids)) == len(ids)
        assert replies[4].json()["id"] == ids[4]  # Cohere's answer id is the request id
        assert replies[5].status_code == 401 and replies[5].json()["id"] == ids[5]
        assert replies[3].json()["request_id"] == ids[3]
        errors = {  # each dialect's error shape names the id
            "/v1/rerank": lambda body: body["id"],
            "/v2/rerank": lambda body: body["id"],
            "/v1/reranking": lambda body: body["request_id"],
            "/rerank": lambda body: body["request_id"],
            "/v1/models/rerank": lambda body: body["request_id"],
        }
        for path, read in errors.items():
            mine = f"client-id-{path.strip('/').replace('/', '-')}"
            reply = client.post(path, json={"query": ""}, headers={**auth, "X-Request-Id": mine})
            assert reply.status_code == 422 and reply.headers["x-request-id"] == mine and read(reply.json()) == mine
        echoed = client.post("/rerank", json={"query": QUERY, "texts": DOCS}, headers={**auth, "X-Request-Id": "abc"})
        assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "abc"
        odd = client.get("/health", headers={"X-Request-Id": "bad id; with spaces"})  # not a token: replaced
        assert odd.headers["x-request-id"] != "bad id; with spaces" and len(odd.headers["x-request-id"]) == 32


# -- tracing ---------------------------------------------------------------------------------------------
def test_one_server_span_child_of_traceparent_with_phase_spans(scorer: ZerankScorer) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with serve_in_thread(create_app(scorer, tracer_provider=provider)) as url:
        reply = httpx.post(
            f"{url}/v2/rerank",
            json={"query": QUERY, "documents": DOCS},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            timeout=30,
        )
        assert reply.status_code == 200
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    assert len(servers) == 1
    server = servers[0]
    assert server.parent is not None and f"{server.parent.span_id:016x}" == parent_id
    assert f"{server.context.trace_id:032x}" == trace_id
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["zerank.documents"] == len(DOCS) and server.attributes["zerank.tokens"] > 0
    assert server.attributes["zerank.request_id"] == reply.headers["x-request-id"]
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id}
    assert set(children) == {"queue", "tokenize", "model"}
    assert children["model"].attributes["zerank.batch.pairs"] == len(DOCS)
    assert server.start_time <= children["queue"].start_time <= children["model"].end_time <= server.end_time


# -- backpressure ----------------------------------------------------------------------------------------
async def test_over_max_concurrent_requests_get_429_with_retry_after(scorer: ZerankScorer) -> None:
    gated = GatedScorer(scorer)
    app = create_app(gated, max_concurrent_requests=2, batch_wait_ms=0)
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=16)) as client:
            body = {"query": "slow question", "texts": DOCS}
            tasks = [asyncio.ensure_future(client.post("/rerank", json=body)) for _ in range(8)]
            refused = []
            deadline = time.monotonic() + 30
            while len(refused) < 6:  # the model is held: two are admitted, six must be refused meanwhile
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
                refused = [t.result() for t in tasks if t.done()]
            assert all(r.status_code == 429 for r in refused)
            assert all(r.headers["retry-after"] == "1" and r.json()["error_type"] == "Overloaded" for r in refused)
            metrics = await client.get("/metrics")
            assert "zerank_requests_in_flight 2.0" in metrics.text
            gated.release.set()
            answers = [r for r in await asyncio.gather(*tasks) if r.status_code != 429]
    assert len(answers) == 2 and all(r.status_code == 200 for r in answers)
    expected = scorer.score("slow question", DOCS)
    assert all(close_to(in_input_order(r.json(), len(DOCS), "score"), expected) for r in answers)


def test_serve_exports_spans_to_an_otlp_collector(checkpoint_dir: Path, tmp_path: Path) -> None:
    """``serve --otlp-endpoint``: the real OTLP/gRPC exporter sends the spans to a collector on loopback."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received: list[Any] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # the gRPC method name
            received.extend(span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), collector)
    grpc_port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    port = free_port()
    command = [sys.executable, "-m", "zerank_integrations.serving", "--model", str(checkpoint_dir), "--device", "cpu"]
    command += ["--port", str(port), "--otlp-endpoint", f"http://127.0.0.1:{grpc_port}"]
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    url = f"http://127.0.0.1:{port}"
    try:
        with running_service(command, f"{url}/ready", tmp_path / "serve.log", env=env):
            reply = httpx.post(
                f"{url}/rerank",
                json={"query": QUERY, "texts": DOCS},
                headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
                timeout=30,
            )
            assert reply.status_code == 200
            deadline = time.monotonic() + 30
            while not any(span.name == "POST /rerank" for span in received):
                assert time.monotonic() < deadline, "no span reached the collector"
                time.sleep(0.1)
    finally:
        collector.stop(0)
    server = next(span for span in received if span.name == "POST /rerank")
    assert server.trace_id.hex() == trace_id and server.parent_span_id.hex() == parent_id
    children = {span.name for span in received if span.parent_span_id == server.span_id}
    assert children == {"queue", "tokenize", "model"}
