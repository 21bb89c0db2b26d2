"""uvicorn's h11 protocol with the limits a public server needs: read timeouts, a connection cap, a cut-off.

Plain uvicorn never times out a client that sends half a request: it keeps the connection and its file
descriptor for as long as the client waits, and a client stalled mid-body holds up shutdown. Here

- the request line and headers must arrive within ``header_timeout`` seconds of the connection opening
  (or of the first byte of the next request on a kept-alive connection), and the body within
  ``body_timeout`` seconds of the headers; otherwise the client gets a JSON 408 and the connection closes;
- a connection beyond ``max_connections`` gets a JSON 503 and is closed at once;
- on shutdown, connections still reading a request are cut at once, while requests already being scored
  finish (uvicorn's ``timeout_graceful_shutdown`` bounds the wait).

Idle kept-alive connections are uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_CONNECTIONS = 1024


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "timeout_error" if status == 408 else "overloaded_error",
                "code": status,
                "param": None,
            },
            "message": message,
            "detail": message,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """``H11Protocol`` with header/body read deadlines, a connection cap and a prompt cut of stalled readers.

    Configure a subclass with :func:`guarded_protocol`; uvicorn takes it as ``Config(http=...)``.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "header" or "body" while a request is being read
        self._deadline: asyncio.TimerHandle | None = None

    # -- connection lifecycle ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(
                503, "Service Unavailable", f"more than {self.max_connections} open connections; retry shortly"
            )
            return
        self._set_phase("header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_phase(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()

    def shutdown(self) -> None:
        """Cut connections still reading a request (they hold nothing worth waiting for); others drain."""
        if self._phase is not None and not self.transport.is_closing():
            self._set_phase(None)
            self.transport.close()
            return
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: JSON 400 like every other refusal (uvicorn sends plain text)."""
        self._refuse(400, "Bad Request", f"{msg.rstrip('.')}: not a valid HTTP/1.1 request")

    # -- deadlines ---------------------------------------------------------------------------------------
    def _follow_request(self) -> None:
        """Move the read deadline with h11's view of the client: reading headers, reading body, or neither."""
        if self.transport.is_closing():
            self._set_phase(None)
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._set_phase("body")
        elif state is h11.IDLE and (self.conn.trailing_data[0] or self._phase == "header"):
            self._set_phase("header")  # part of a request is in, or a new connection has sent nothing yet
        else:
            self._set_phase(None)

    def _set_phase(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            timeout = self.header_timeout if phase == "header" else self.body_timeout
            self._deadline = self.loop.call_later(timeout, self._timed_out, phase, timeout)

    def _timed_out(self, phase: str, timeout: float) -> None:
        self._deadline = None
        if self._phase != phase or self.transport.is_closing():
            return
        what = "request headers" if phase == "header" else "request body"
        self._refuse(408, "Request Timeout", f"the {what} did not arrive within {timeout:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer outside h11 (no request may be complete) and close; the app sees a disconnect."""
        self._set_phase(None)
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        self.transport.write(_raw_response(status, reason, message))
        self.transport.close()


def guarded_protocol(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass with these limits, for ``uvicorn.Config(http=...)``."""
    for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {value}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    return type(
        "ConfiguredGuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections},
    )
