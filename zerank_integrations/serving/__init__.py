"""HTTP serving for zerank: a ``/v1/rerank`` server with cross-request batching, and a remote scorer client.

Names load lazily so that ``RemoteScorer`` (httpx only) works where FastAPI/uvicorn are not installed, and
``import zerank_integrations`` never imports any of this.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zerank_integrations.serving.app import create_app
    from zerank_integrations.serving.batcher import BatcherStats, MicroBatcher
    from zerank_integrations.serving.client import RawScoresUnavailableError, RemoteRerankError, RemoteScorer

_LAZY = {
    "create_app": "zerank_integrations.serving.app",
    "MicroBatcher": "zerank_integrations.serving.batcher",
    "BatcherStats": "zerank_integrations.serving.batcher",
    "RemoteScorer": "zerank_integrations.serving.client",
    "RemoteRerankError": "zerank_integrations.serving.client",
    "RawScoresUnavailableError": "zerank_integrations.serving.client",
}

__all__ = [
    "BatcherStats",
    "MicroBatcher",
    "RawScoresUnavailableError",
    "RemoteRerankError",
    "RemoteScorer",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zerank_integrations.serving' has no attribute {name!r}")
