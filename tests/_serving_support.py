"""Helpers shared by the serving tests: a real uvicorn server on loopback, workloads, comparisons."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from zerank_integrations.serving.protocol import guarded_protocol

QUERY = "How do plants turn sunlight into energy?"
DOCS = [
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The stock market closed higher on Tuesday after a volatile session.",
    "Chlorophyll absorbs mostly blue and red light.",
    "",
    "  Mitochondria are the powerhouse of the cell.  ",
    "Plants need water, carbon dioxide and light to grow.",
]


@contextmanager
def serve_in_thread(app: Any, **limits: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn (the guarded h11 protocol ``serve`` uses) on a free loopback port."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        http=guarded_protocol(**limits),
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
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


def in_input_order(results: list[dict[str, Any]], n: int, field: str = "relevance_score") -> list[float]:
    """Scores from a ranked answer, put back in input order (every index must appear once)."""
    scores: list[float | None] = [None] * n
    for item in results:
        assert scores[item["index"]] is None
        scores[item["index"]] = item[field]
    assert None not in scores
    return [float(s) for s in scores if s is not None]


def request_workload(n: int) -> list[tuple[str, list[str]]]:
    """``n`` distinct short-query requests with 3-7 documents each (short queries share forward passes)."""
    work = []
    for i in range(n):
        docs = [f"Document {j} for request {i}: " + "plants light energy " * (j % 4) for j in range(3 + i % 5)]
        work.append((f"question number {i} about photosynthesis", docs))
    return work
