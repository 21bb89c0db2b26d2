"""Ray in the real world (#25): the clusters ``serve``/``eval --engine ray`` start stay on loopback (read from the
processes' sockets in /proc), a cluster that cannot place the replicas is refused in one line within the bound
while ``/ready`` answers 503, the first signal stops everything, and a token-authenticated head is joined with
the user's token or refused in one line without it.

Two tests start their own local cluster (``serve`` and ``eval`` must be seen starting one); the others join the
session cluster (``tests/_ray_support.py``), which runs with Ray 2.60's token authentication on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _ray_support import REPO_ROOT, SocketWatch, process_tree
from _serving_support import free_port

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SHUTDOWN_TIMEOUT_S = 30  # the default; the command keeps 5 s of it for stopping the cluster


def _env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the command must keep its cluster on loopback itself
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _serve(args: list[str], log: Path, **env: str | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "zerank_integrations.serving", "--engine", "ray", *args]
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(**env))


def _status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/ready", timeout=2).status_code  # a probe that hangs fails here
    except httpx.TransportError:
        return None


def _wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if line.strip()]


def _gone(pids: set[int], timeout: float = 15) -> set[int]:
    """The processes of ``pids`` still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in pids if Path(f"/proc/{pid}").exists() and _not_zombie(pid)}
        time.sleep(0.2)
    return alive


def _name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return str(pid)


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_starts_its_cluster_on_loopback_and_one_sigterm_stops_all_of_it(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    args = ["--replicas", "1", "--replica-cpus", "0.5", "--model", str(checkpoint_dir), "--device", "cpu"]
    proc = _serve([*args, "--port", str(port), "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S)], log)
    try:
        with SocketWatch(proc.pid) as watch:
            _wait_for("the app to be ready", lambda: proc.poll() is not None or _status(url) == 200)
            assert proc.poll() is None, log.read_text()
            answer = httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a", "b"]}, timeout=30)
            assert answer.status_code == 200 and len(answer.json()) == 2
            watch.sample()
            tree = process_tree(proc.pid)
        names = {name for name, _ in watch.listeners}
        # the cluster's own servers were watched (not an empty tree), all of them on loopback
        assert {"gcs_server", "raylet", "ray::ServeReplica:zerank:RerankReplica"} <= names, watch.listeners
        assert watch.outside == set(), watch.outside
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=SHUTDOWN_TIMEOUT_S + 10) == 0, log.read_text()
        took = time.monotonic() - started
        assert took < SHUTDOWN_TIMEOUT_S, f"exited after {took:.1f} s, later than --shutdown-timeout"
        left = _gone(tree)
        assert left == set(), f"Ray processes left behind: {[_name_of(pid) for pid in left]}"
        lines = _lines(log)  # the library's own lines only: no Ray line at shutdown
        assert all("zerank_integrations" in line or line.startswith("serving ") for line in lines), lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_gpus_that_no_node_has_are_refused_in_one_line_while_ready_says_503(
    checkpoint_dir: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    args = ["--replicas", "2", "--model", str(checkpoint_dir), "--device", "cuda", "--port", str(port)]
    started = time.monotonic()
    proc = _serve(args, log)
    seen: list[int | None] = []
    tree: set[int] = set()
    while proc.poll() is None and time.monotonic() - started < 120:
        tree |= process_tree(proc.pid)
        seen.append(_status(url))
        time.sleep(0.2)
    assert proc.wait(timeout=30) == 3, log.read_text()
    assert 503 in seen and 200 not in seen, seen  # answered, never hung, never ready
    lines = _lines(log)
    assert lines == [
        "zerank-integrations serve: cannot place 2 replicas (1 CPU, 1 GPU each): missing 2 GPU; "
        "the cluster has 0 GPU, 2 CPU on 1 node"
    ], lines
    assert _gone(tree) == set(), "Ray processes left behind"


def test_joining_a_token_cluster_without_the_token_is_one_line(ray_cluster: Any, tmp_path: Path) -> None:
    """The session head has Ray 2.60's token authentication on; a driver without the token (no $RAY_AUTH_TOKEN,
    an empty home) or with a wrong one is refused in one line, in seconds, instead of Ray's minute of retries."""
    address = ray_cluster.get_runtime_context().gcs_address
    home = tmp_path / "home"
    home.mkdir()
    base = ["--model", "unused-model", "--ray-address", address, "--port", str(free_port())]
    cases = {
        "requires a token": {"HOME": str(home), "RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": None},
        "refused the token it was sent": {"RAY_AUTH_MODE": None, "RAY_AUTH_TOKEN": "not-the-token"},
    }
    for why, env in cases.items():
        log = tmp_path / f"{why}.log"
        proc = _serve(base, log, RAY_AUTH_TOKEN_PATH=None, **env)
        assert proc.wait(timeout=60) == 2, log.read_text()
        (line,) = _lines(log)
        assert line.startswith(f"zerank-integrations serve: the Ray cluster at {address} {why}: put the head's token")
        assert "RAY_AUTH_TOKEN" in line and "RAY_AUTH_MODE=token" in line


def test_pending_replicas_time_out_in_one_line_and_a_signal_stops_the_wait(
    ray_cluster: Any, checkpoint_dir: Path, tmp_path: Path
) -> None:
    """On a joined cluster (which might grow) the GPUs are waited for, at most --placement-timeout; SIGINT during
    the wait exits 0 like SIGTERM, leaves the cluster without the app, and leaves no process of its own."""
    from ray import serve

    address = ray_cluster.get_runtime_context().gcs_address
    base = ["--replicas", "2", "--model", str(checkpoint_dir), "--device", "cuda", "--ray-address", address]
    port, log = free_port(), tmp_path / "timeout.log"
    started = time.monotonic()
    proc = _serve([*base, "--port", str(port), "--placement-timeout", "2"], log, RAY_AUTH_MODE=None)
    assert proc.wait(timeout=60) == 3, log.read_text()
    assert _lines(log) == [
        "zerank-integrations serve: cannot place 2 replicas (1 CPU, 1 GPU each) within 2 s (--placement-timeout): "
        "missing 2 GPU; the cluster has 0 GPU, 2 CPU on 1 node"
    ]
    assert time.monotonic() - started < 30

    port, log = free_port(), tmp_path / "sigint.log"
    url = f"http://127.0.0.1:{port}"
    proc = _serve([*base, "--port", str(port), "--placement-timeout", "120"], log, RAY_AUTH_MODE=None)
    try:
        _wait_for("/ready to answer 503", lambda: _status(url) == 503, timeout=60)
        time.sleep(3)  # joined and waiting for GPUs by now
        assert _status(url) == 503
        tree = process_tree(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=SHUTDOWN_TIMEOUT_S) == 0, log.read_text()
        assert _gone(tree) == set()
        lines = _lines(log)  # the library's own line, no error and no Ray line
        assert [line.split(" INFO ", 1)[-1] for line in lines] == ["zerank_integrations.serving: SIGINT: stopping"]
        assert "zerank" not in serve.status().applications
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_eval_on_ray_starts_its_cluster_on_loopback(
    med_chroma: Path, datasets_dir: Path, checkpoint_dir: Path, tmp_path: Path
) -> None:
    from zerank_integrations.cli import DEMO_COLLECTION

    args = ["eval", "--beir", datasets_dir / "med", "--collection", DEMO_COLLECTION, "--chroma-path", med_chroma]
    args += ["--model", checkpoint_dir, "--max-queries", "2", "--top-k", "6", "--top-n", "2", "--device", "cpu"]
    args += ["--out", tmp_path / "out", "--engine", "ray", "--workers", "1"]
    command = [sys.executable, "-m", "zerank_integrations", *map(str, args)]
    log = tmp_path / "eval.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(HF_HUB_OFFLINE="1"))
    try:
        with SocketWatch(proc.pid) as watch:
            assert proc.wait(timeout=300) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "out" / "eval.json").is_file()
    names = {name for name, _ in watch.listeners}
    assert {"gcs_server", "raylet"} <= names, watch.listeners
    assert watch.outside == set(), watch.outside


def test_serve_proxy_errors_are_rewritten_in_each_dialect() -> None:
    """The proxy middleware on a plain ASGI app standing in for Serve's proxy (which answers a replica's death
    with a text/plain 500): each route's dialect shape with Retry-After; JSON answers pass untouched."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from zerank_integrations.serving.dialects import DIALECTS
    from zerank_integrations.serving.ray_proxy import DialectErrors, proxy_middlewares

    async def died(request: Any) -> Any:
        if request.headers.get("x-raise"):  # the proxy raising instead of answering
            raise RuntimeError("the replica's actor died")
        if request.headers.get("x-json"):
            return JSONResponse({"id": "r", "message": "the replica's own error"}, status_code=503)
        return PlainTextResponse("Actor died: RayActorError ...", status_code=500, headers={"x-request-id": "r-9"})

    paths = [dialect.path for dialect in DIALECTS] + ["/elsewhere"]
    app = Starlette(routes=[Route(path, died, methods=["POST"]) for path in paths], middleware=proxy_middlewares())
    client = TestClient(app)
    shapes = {}
    for path in paths:
        reply = client.post(path, json={})
        assert reply.status_code == 500 and reply.headers["retry-after"] == "1"
        assert reply.headers["content-type"] == "application/json" and reply.headers["x-request-id"] == "r-9"
        shapes[path] = reply.json()
    message = "the replica serving this request stopped before answering; retry"
    assert shapes["/v2/rerank"] == {"id": "r-9", "message": message}
    assert shapes["/v1/rerank"] == {"id": "r-9", "message": message, "detail": message}
    assert shapes["/rerank"] == {"error": message, "error_type": "Backend", "request_id": "r-9"}
    assert shapes["/v1/reranking"] == {"detail": message, "request_id": "r-9"}
    assert shapes["/elsewhere"]["error"]["code"] == 500
    raised = TestClient(app, raise_server_exceptions=False).post("/rerank", json={}, headers={"x-raise": "1"})
    assert raised.status_code == 500 and raised.json()["error_type"] == "Backend" and raised.headers["retry-after"]

    async def says_nothing(scope: Any, receive: Any, send: Any) -> None:  # Serve's proxy when a replica died
        return None

    silent = TestClient(DialectErrors(says_nothing), raise_server_exceptions=False).post("/v2/rerank", json={})
    assert silent.status_code == 500 and silent.json()["message"] == message and silent.headers["retry-after"]
    own = client.post("/v2/rerank", json={}, headers={"x-json": "1"})
    assert own.status_code == 503 and own.json() == {"id": "r", "message": "the replica's own error"}
    assert "retry-after" not in own.headers
