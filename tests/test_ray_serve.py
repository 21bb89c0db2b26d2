"""The Ray Serve engine (#19): ``zerank-integrations serve --engine ray --replicas 2`` on a local Ray cluster,
driven by the real Cohere v2 and Voyage SDKs and TEI-style requests, a replica killed under load, and the
one-line failure without Ray. One cluster per test session (``tests/_ray_support.py``); the ``serve``
command runs in a subprocess that joins it, exactly as it would join a production cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from _ray_support import REPO_ROOT
from _serving_support import close_to, free_port, request_workload
from prometheus_client.parser import text_string_to_metric_families

from zerank_integrations import ZerankScorer
from zerank_integrations.ray_support import RAY_INSTALL_HINT
from zerank_integrations.serving import RemoteScorer

REPLICA_PREFIX = "SERVE_REPLICA::zerank#RerankReplica#"
KEY = "ray-test-key-not-a-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _health(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/health", timeout=10).json()


def _wait(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (httpx.TransportError, ValueError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def ray_engine(
    ray_cluster: Any,
    checkpoint_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """``serve --engine ray --replicas 2`` joined to the session cluster, up until both replicas report."""
    port = free_port()
    address = ray_cluster.get_runtime_context().gcs_address
    log = tmp_path_factory.mktemp("ray-serve") / "serve.log"
    command = [sys.executable, "-m", "zerank_integrations.serving", "--engine", "ray", "--replicas", "2"]
    command += ["--replica-cpus", "0.5", "--ray-address", address, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--model", str(checkpoint_dir), "--device", "cpu", "--batch-wait-ms", "5"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    env["ZERANK_API_KEY"] = KEY
    env.pop("RAY_AUTH_MODE", None)  # the session head wants a token: `serve` finds the user's and turns token mode on
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(
                "the Ray app to be ready", lambda: proc.poll() is None and httpx.get(f"{url}/ready").status_code == 200
            )
            _wait("both replicas to report", lambda: len(_health(url)["replicas"]) == 2)
            yield {"url": url, "proc": proc, "log": log, "startup_s": time.monotonic() - started}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            from ray import serve

            serve.shutdown()  # `serve` left the shared cluster's Serve (controller, proxy) up; the suite stops it


def _in_input_order(pairs: list[tuple[int, float]], n: int) -> list[float]:
    scores: list[float | None] = [None] * n
    for index, score in pairs:
        assert scores[index] is None
        scores[index] = score
    assert None not in scores
    return [float(s) for s in scores if s is not None]


def test_sdks_64_at_once_answer_with_the_local_scores_on_both_replicas(
    ray_engine: dict[str, Any], scorer: ZerankScorer
) -> None:
    import cohere
    import voyageai

    url = ray_engine["url"]
    assert _health(url)["engine"] == "ray"
    cohere_v2 = cohere.ClientV2(api_key=KEY, base_url=url, timeout=60)
    voyage = voyageai.Client(api_key=KEY, base_url=f"{url}/v1", max_retries=0, timeout=60)
    work = request_workload(64)

    def one(i: int) -> list[tuple[int, float]]:
        query, docs = work[i]
        if i % 3 == 0:
            answer = cohere_v2.rerank(model="zerank-2", query=query, documents=docs)
            return [(r.index, r.relevance_score) for r in answer.results]
        if i % 3 == 1:
            voyage_answer = voyage.rerank(query, docs, model="zerank-2")
            return [(r.index, r.relevance_score) for r in voyage_answer.results]
        reply = httpx.post(f"{url}/rerank", json={"query": query, "texts": docs}, headers=AUTH, timeout=60)
        assert reply.status_code == 200, reply.text
        return [(item["index"], item["score"]) for item in reply.json()]

    start = threading.Barrier(64)

    def at_once(i: int) -> list[tuple[int, float]]:
        start.wait(timeout=30)
        return one(i)

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(at_once, range(64)))
    for (query, docs), answer in zip(work, answers, strict=True):
        assert close_to(_in_input_order(answer, len(docs)), scorer.score(query, docs), tol=1e-5)

    documents = sum(len(docs) for _, docs in work)
    replicas = _wait(
        "both replicas' counts",
        lambda: (r := _health(url)["replicas"]) and sum(s["requests"] for s in r.values()) == 64 and r,
    )
    assert len(replicas) == 2 and all(served["requests"] > 0 for served in replicas.values())  # both served
    assert sum(served["pairs"] for served in replicas.values()) == documents
    assert sum(s["batches"] for s in replicas.values()) < 64  # some requests shared a forward pass
    scraped = httpx.get(f"{url}/metrics", timeout=10).text
    pairs = {
        sample.labels["replica"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "zerank_pairs_scored_total"
    }
    assert set(pairs) == set(replicas) and sum(pairs.values()) == documents
    ok = [
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "zerank_requests_total"
        and sample.labels["status"] == "200"
        and sample.labels["route"] in ("/v2/rerank", "/v1/rerank", "/rerank")
    ]
    assert sum(ok) == 64


def test_same_validation_errors_and_request_ids_as_the_local_server(ray_engine: dict[str, Any]) -> None:
    url = ray_engine["url"]
    unauthorized = httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a"]})
    assert unauthorized.status_code == 401 and unauthorized.json()["error_type"] == "Unauthorized"
    assert _health(url)["auth"] is True  # /health stays open for load balancers
    bad = httpx.post(
        f"{url}/v2/rerank", json={"query": " ", "documents": ["a"]}, headers={**AUTH, "X-Request-Id": "r-1"}
    )
    assert bad.status_code == 422 and bad.json() == {"id": "r-1", "message": "'query' is empty or whitespace-only"}
    assert bad.headers.get_list("x-request-id") == ["r-1"]  # echoed once: by Serve's proxy, not again by the app
    tei = httpx.post(f"{url}/rerank", content=b"{bad", headers={**AUTH, "content-type": "application/json"})
    assert tei.status_code == 400 and tei.json()["error_type"] == "Validation"


def _replica_actors(ray: Any) -> list[dict[str, str]]:
    """The live rerank replicas: Serve names each replica actor (no dashboard needed to list them)."""
    return [
        actor for actor in ray.util.list_named_actors(all_namespaces=True) if actor["name"].startswith(REPLICA_PREFIX)
    ]


def test_a_killed_replica_loses_no_remote_scorer_answer_and_is_replaced(
    ray_engine: dict[str, Any],
    ray_cluster: Any,
    scorer: ZerankScorer,
) -> None:
    url = ray_engine["url"]
    before = _replica_actors(ray_cluster)
    assert len(before) == 2
    work = request_workload(48)
    # generous margins: on a loaded 2-core machine the surviving replica carries all traffic while the
    # replacement loads, and a proxy 5xx now says Retry-After: 1 (RemoteScorer waits that long, not less)
    remote = RemoteScorer(url, model="zerank-2", family="zerank", api_key=KEY, timeout=60, max_retries=12)
    answered = threading.Event()
    raw_answers: list[httpx.Response] = []
    remote_answers: dict[int, list[float]] = {}

    def remote_client(i: int) -> None:
        query, docs = work[i]
        remote_answers[i] = remote.score(query, docs)
        answered.set()

    def plain_client(i: int) -> None:
        query, docs = work[i]
        reply = httpx.post(f"{url}/rerank", json={"query": query, "texts": docs}, headers=AUTH, timeout=60)
        raw_answers.append(reply)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(remote_client if i % 2 == 0 else plain_client, i) for i in range(len(work))]
        assert answered.wait(60)
        victim = before[0]
        ray_cluster.kill(ray_cluster.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
        for future in futures:
            future.result(timeout=180)  # nothing hangs: every client got an answer or an error in time
    assert sorted(remote_answers) == list(range(0, len(work), 2))  # RemoteScorer lost nothing
    for i, scores in remote_answers.items():
        assert close_to(scores, scorer.score(*work[i]), tol=1e-5)
    statuses = [reply.status_code for reply in raw_answers]
    assert len(raw_answers) == len(work) // 2 and all(s == 200 or s >= 500 for s in statuses), statuses
    for reply in raw_answers:  # a failure is in the TEI error shape, Serve's proxy's or the replica's
        if reply.status_code >= 500:
            assert reply.headers["content-type"] == "application/json", reply.text
            assert set(reply.json()) >= {"error", "error_type"}, reply.text
            assert reply.headers["retry-after"].isdigit()

    def replaced() -> bool:
        alive = {actor["name"] for actor in _replica_actors(ray_cluster)}
        return len(alive) == 2 and victim["name"] not in alive

    _wait("Serve to replace the killed replica", replaced, timeout=120)
    _wait("the app to be ready again", lambda: httpx.get(f"{url}/ready").status_code == 200)
    query, docs = work[0]
    assert close_to(remote.score(query, docs), scorer.score(query, docs), tol=1e-5)


# -- without a cluster ---------------------------------------------------------------------------------------
def test_engine_ray_without_ray_fails_in_one_line() -> None:
    """A fresh interpreter where ``import ray`` fails for real (``sys.modules['ray'] = None``)."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from zerank_integrations.cli import main\n"
        "sys.exit(main(['serve', '--engine', 'ray', '--replicas', '2', '--model', 'unused']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert RAY_INSTALL_HINT in lines[0] and "--engine ray" in lines[0]


def test_replica_flags_need_the_ray_engine(capsys: pytest.CaptureFixture[str]) -> None:
    from zerank_integrations.cli import main

    assert main(["serve", "--replicas", "2", "--model", "unused"]) == 2
    assert capsys.readouterr().err.strip() == "zerank-integrations serve: --replicas needs --engine ray"


def test_serve_config_builds_and_refuses_mistakes() -> None:
    pytest.importorskip("ray.serve")
    import yaml

    from zerank_integrations.serving.ray_serve import application, build

    config = yaml.safe_load((REPO_ROOT / "deploy" / "serve_config.yaml").read_text())
    (app_config,) = config["applications"]
    assert app_config["import_path"] == "zerank_integrations.serving.ray_serve:build"
    assert type(build(app_config["args"])).__name__ == "Application"
    gpu = application("m", replicas=3, scorer_options={"device": "cuda"})._bound_deployment
    assert (gpu.num_replicas, gpu.ray_actor_options) == (3, {"num_cpus": 1.0, "num_gpus": 1.0})  # one GPU each
    scaled = application("m", min_replicas=1, max_replicas=4)._bound_deployment._deployment_config
    assert (scaled.autoscaling_config.min_replicas, scaled.autoscaling_config.max_replicas) == (1, 4)
    assert scaled.max_ongoing_requests == 256  # high, so concurrent requests reach the replica's batcher
    with pytest.raises(ValueError, match=r"args\.model"):
        build({})
    with pytest.raises(ValueError, match="unknown Serve config args"):
        build({"model": "m", "replica": 2})
    with pytest.raises(ValueError, match="not both"):
        application("m", replicas=2, max_replicas=3)
    with pytest.raises(ValueError, match="below min_replicas"):
        application("m", min_replicas=3, max_replicas=2)
