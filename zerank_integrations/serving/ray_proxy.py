"""Serve's HTTP proxy, answering its own failures in the client's dialect.

A rerank replica writes every error in the dialect of the route it was asked on (``create_app``). Some
failures never reach a replica: the replica serving a request dies (Serve's proxy answers 500), no replica
is available (503), and the proxy writes those in plain text. :func:`proxy_middlewares` is a Serve HTTP-proxy
callback (Serve reads its import path from ``$RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` when a proxy starts)
whose one middleware rewrites such a plain-text 5xx (or the bare 500 the server writes when Serve's proxy
sends nothing, which is what it does when the replica died) into the route's error shape (Cohere, Jina/Voyage, TEI,
Mixedbread, ZeroEntropy, or the generic one) with ``Retry-After``. JSON answers (every replica's) pass
untouched. ``serve --engine ray`` sets the variable for the clusters it starts; on a cluster you run, set it on
every node (``deploy/rayservice.yaml``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("zerank_integrations.serving")

#: What ``$RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names on a node whose proxies should speak the dialects.
PROXY_CALLBACK = "zerank_integrations.serving.ray_proxy:proxy_middlewares"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
RETRY_AFTER_S = 1
_MESSAGES = {
    500: "the replica serving this request stopped before answering; retry",
    503: "no rerank replica is available right now; retry",
}


def proxy_middlewares() -> list[Any]:
    """The Serve proxy callback: a list of Starlette middlewares (one)."""
    from starlette.middleware import Middleware

    return [Middleware(DialectErrors)]


class DialectErrors:
    """Pure ASGI middleware: a 5xx without a JSON body becomes the route's dialect error with ``Retry-After``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] | None = None
        started = False

        async def relay(message: dict[str, Any]) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                if message["status"] >= 500 and not _is_json(message.get("headers") or []):
                    held = message  # Serve's own error: its body is replaced below
                    return
                started = True
                await send(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            if message.get("more_body"):
                return
            status = int(held["status"])
            start, body = dialect_error(scope, status, held.get("headers") or [])
            held, started = None, True
            await send(start)
            await send({"type": "http.response.body", "body": body})

        try:
            await self.app(scope, receive, relay)
        except Exception:  # the proxy itself failed (the server would answer a bare 500): answer in the dialect
            if started:
                raise
            logger.warning("Serve's proxy failed on %s; answering 500 in its dialect", scope.get("path"), exc_info=True)
        if not started:  # Serve sends nothing for a 500 (a replica that died): uvicorn would write plain text
            start, body = dialect_error(scope, int(held["status"]) if held else 500, (held or {}).get("headers") or [])
            await send(start)
            await send({"type": "http.response.body", "body": body})


def dialect_error(scope: dict[str, Any], status: int, headers: list[tuple[bytes, bytes]]) -> tuple[dict, bytes]:
    """The ``http.response.start`` message and body for ``status`` on the route in ``scope``."""
    from zerank_integrations.serving.dialects import DIALECTS, generic_error

    request_id = _header(headers, b"x-request-id") or _header(scope.get("headers") or [], b"x-request-id") or ""
    message = _MESSAGES.get(status, "the rerank service failed before a replica answered; retry")
    path = scope.get("path", "")
    dialect = next((d for d in DIALECTS if d.path == path), None)
    model = (
        dialect.error(status, message, None, request_id)
        if dialect
        else generic_error(status, message, None, request_id)
    )
    body = json.dumps(model.model_dump(mode="json")).encode()
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length", b"retry-after")]
    kept += [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(RETRY_AFTER_S).encode()),
    ]
    return {"type": "http.response.start", "status": status, "headers": kept}, body


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    return (_header(headers, b"content-type") or "").startswith("application/json")


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
