"""The rerank HTTP server: one scorer, every common rerank dialect, cross-request batching.

Each dialect in :mod:`zerank_integrations.serving.dialects` gets one POST route; all of them share one
pipeline::

    auth -> content type -> body (size-bounded) -> JSON (depth-bounded) -> document count -> request model
         -> RerankCall -> batcher (scorer.score_pairs_details) -> select -> the dialect's answer

Everything a client can get wrong is refused before the batcher with a 4xx in that dialect's error shape,
so no request can fail a batch it shares with others. A client that leaves is noticed while it waits: its
request leaves the queue (no model time) or its result is dropped, with one debug line in the log.
Anything unexpected becomes a JSON 500 carrying a request id, logged once with that id; the connection
stays usable for the next request.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import is_dataclass
from typing import Any, Protocol
from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zerank_integrations.base import rank_scores
from zerank_integrations.serving.batcher import BatcherBusyError, BatcherClosedError, MicroBatcher, ScoreJob
from zerank_integrations.serving.dialects import (
    DIALECTS,
    GenericError,
    RerankCall,
    RerankOutcome,
    ServerDialect,
    generic_error,
)
from zerank_integrations.serving.wire import ApiError, check_content_type, parse_json, validation_error

logger = logging.getLogger("zerank_integrations.serving")

DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BATCH_PAIRS = 2048
DEFAULT_MAX_QUEUED_REQUESTS = 4096
DEFAULT_MAX_JSON_DEPTH = 32
RERANK_PATHS = tuple(dialect.path for dialect in DIALECTS)

_ERROR_DESCRIPTIONS = {
    400: "malformed body: not UTF-8 JSON, nested too deeply, duplicate keys, numbers out of range; or a document "
    "too long for the model when truncation is refused",
    401: "missing or wrong bearer token",
    413: "body larger than the server's limit, or more documents than it accepts",
    415: "a Content-Type other than application/json",
    422: "a field is missing, has the wrong type or value, or holds text the tokenizer cannot read",
    429: "too many requests queued; retry after the Retry-After seconds",
    500: "unexpected server error; the message carries the request id to look up in the server log",
    503: "the server is shutting down",
}


class ServableScorer(Protocol):
    """What the server needs from a scorer (``ZerankScorer`` satisfies it)."""

    @property
    def model_name(self) -> str: ...

    @property
    def accepts_instruction(self) -> bool: ...

    def score_pairs_details(self, pairs: Sequence[tuple[str, ...]]) -> list[Any]: ...

    def truncate_texts(self, texts: Sequence[str], max_tokens: int) -> list[str]: ...


class _ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


def select(call: RerankCall, details: Sequence[Any]) -> list[tuple[int, float]]:
    """The rerank step after scoring: (index, reported score) best first, ties in input order, top_n kept.

    One small function on purpose: the pipeline's shared score -> select -> account step replaces it.
    """
    scores = [d.raw if call.raw_scores else d.probability for d in details]
    return rank_scores(scores, call.top_n)


def create_app(
    scorer: ServableScorer,
    *,
    api_key: str | SecretStr | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS,
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    model_name: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``scorer``; run it with any ASGI server (``uvicorn.run(app)``).

    ``api_key`` turns on bearer auth for the rerank routes (``/health`` and ``/v1/models`` stay open for
    load balancers). The batcher lives in the app's lifespan, so it binds to the server's event loop;
    ``app.state.batcher`` and ``GET /health`` expose its counters.
    """
    if not callable(getattr(scorer, "score_pairs_details", None)):
        raise TypeError(
            f"{type(scorer).__name__} has no score_pairs_details(); the server needs it to batch across requests"
        )
    for name, value in (("max_request_bytes", max_request_bytes), ("max_documents", max_documents)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if max_json_depth < 3:
        raise ValueError(f"max_json_depth must be >= 3 (a request is at least that deep), got {max_json_depth}")
    secret = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
    if secret is not None and not secret.get_secret_value():
        raise ValueError("api_key is empty; pass None to disable authentication")
    served_name = model_name or str(getattr(scorer, "model_name", "zerank"))
    accepts_instruction = bool(getattr(scorer, "accepts_instruction", False))

    def new_batcher() -> MicroBatcher:
        return MicroBatcher(
            scorer,
            max_wait_ms=batch_wait_ms,
            max_batch_pairs=max_batch_pairs,
            max_queued_requests=max_queued_requests,
        )

    new_batcher()  # validate the batcher settings now, not at the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = new_batcher()
        batcher.start()
        app.state.batcher = batcher
        try:
            yield
        finally:
            await batcher.close()

    app = FastAPI(
        title="zerank rerank server",
        summary="Cohere, Jina, Voyage, Mixedbread, TEI, ZeroEntropy and vLLM rerank dialects over one reranker, "
        "with cross-request batching",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.scorer = scorer
    app.state.model_name = served_name
    app.state.auth_enabled = secret is not None
    app.state.max_request_bytes = max_request_bytes
    app.state.max_documents = max_documents

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        rid = _request_id(request.scope)
        body = generic_error(error.status_code, str(error.detail), None, rid)
        return JSONResponse(body.model_dump(mode="json"), status_code=error.status_code, headers=error.headers)

    @app.get("/health", responses={200: {"description": "liveness and counters"}})
    async def health(request: Request) -> dict[str, Any]:
        """Liveness plus counters: cheap, unauthenticated, never touches the model."""
        batcher: MicroBatcher | None = getattr(request.app.state, "batcher", None)
        return {
            "status": "ok" if batcher is not None else "starting",
            "model": served_name,
            "family": getattr(scorer, "family", None),
            "accepts_instruction": accepts_instruction,
            "random_weights": bool(getattr(scorer, "random_weights", False)),
            "auth": secret is not None,
            "batcher": batcher.stats.as_dict() if batcher is not None else None,
            "queued": batcher.queued if batcher is not None else 0,
            "in_flight": batcher.in_flight if batcher is not None else 0,
            "scorer": _scorer_stats(scorer),
        }

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        """The served model, OpenAI/vLLM style, so clients can learn what actually answers them."""
        return ModelList(object="list", data=[ModelCard(id=served_name, object="model", owned_by="zerank")])

    def route(dialect: ServerDialect) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def rerank(request: Request) -> JSONResponse:
            started = time.perf_counter()
            if secret is not None:
                _check_auth(request, secret)
            check_content_type(request.headers.get("content-type"))
            body = await _read_body(request, max_request_bytes)
            payload = parse_json(body, max_depth=max_json_depth)
            items = payload.get(dialect.documents_field) if isinstance(payload, dict) else None
            if isinstance(items, list) and len(items) > max_documents:
                raise ApiError(
                    413,
                    f"{len(items)} {dialect.documents_field} in one request; this server accepts at most "
                    f"{max_documents}",
                    param=dialect.documents_field,
                )
            try:
                parsed = dialect.request_model.model_validate(payload)
            except ValidationError as error:
                raise validation_error(error) from None
            call = dialect.to_call(parsed)
            instruction = call.instruction if call.instruction and call.instruction.strip() else None
            if instruction is not None and not accepts_instruction:
                family = getattr(scorer, "family", "this model's")
                raise ApiError(
                    422,
                    f"'instruction': the {family} reranker family takes no instruction; leave the field out",
                    param="instruction",
                )
            job = ScoreJob(call.query, call.texts, instruction, call.max_tokens_per_doc)
            details = await _score_while_connected(request, request.app.state.batcher, job)
            if call.refuse_truncation:
                _refuse_truncated(details, dialect.documents_field)
            outcome = RerankOutcome(
                call=call,
                ranked=select(call, details),
                raw=[float(d.raw) for d in details],
                tokens=sum(int(d.tokens) for d in details),
                request_id=_request_id(request.scope),
                model=served_name,
                elapsed_s=time.perf_counter() - started,
                body_bytes=len(body),
            )
            answer = dialect.answer(parsed, outcome)
            logger.debug("%s: reranked %d documents in %.1f ms", dialect.name, len(call.texts), outcome.elapsed_s * 1e3)
            return JSONResponse(answer.model_dump(mode="json", exclude_unset=True))

        rerank.__name__ = f"rerank_{dialect.name.replace('-', '_')}"
        rerank.__doc__ = f"{dialect.summary}: {dialect.request_model.__doc__}"
        return rerank

    for dialect in DIALECTS:
        responses: dict[int | str, dict[str, Any]] = {200: {"model": dialect.response_model, "description": "ranked"}}
        for status, description in _ERROR_DESCRIPTIONS.items():
            if status == 401 and secret is None:
                continue
            responses[status] = {"model": dialect.error_model, "description": description}
        app.add_api_route(
            dialect.path,
            route(dialect),
            methods=["POST"],
            summary=dialect.summary,
            responses=responses,
            response_model=None,
        )

    app.add_middleware(_Guard, error_shapes={d.path: d.error for d in DIALECTS})
    app.openapi = lambda: _openapi(  # type: ignore[method-assign]
        app, accepts_instruction=accepts_instruction, auth=secret is not None, max_documents=max_documents
    )  # type: ignore[method-assign]
    return app


class ModelCard(BaseModel):
    id: str
    object: str
    owned_by: str


class ModelList(BaseModel):
    object: str
    data: list[ModelCard]


# -- request pipeline pieces ---------------------------------------------------------------------------
def _check_auth(request: Request, secret: SecretStr) -> None:
    """``Authorization: Bearer <key>``, scheme matched case-insensitively (RFC 7235), key in constant time."""
    supplied = request.headers.get("authorization", "")
    if not supplied:
        raise ApiError(
            401, "missing bearer token: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"}
        )
    scheme, _, token = supplied.strip().partition(" ")
    expected = secret.get_secret_value().encode()
    given = token.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        raise ApiError(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (header first, then stream).

    The connection is not closed on a 413: the server keeps reading and discarding the rest of the body
    (bounded by the body timeout), so the client reads the answer instead of a connection reset.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise ApiError(413, f"request body is {size} bytes; this server accepts at most {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise ApiError(413, f"request body is larger than {limit} bytes, the most this server accepts")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _ClientGone("the client disconnected while sending its body") from None
    return b"".join(chunks)


async def _score_while_connected(request: Request, batcher: MicroBatcher, job: ScoreJob) -> list[Any]:
    """Wait for the batcher, but stop waiting (and cancel the work) the moment the client disconnects."""
    scoring = asyncio.ensure_future(batcher.submit(job))
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({scoring, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not scoring.done():
            scoring.cancel()
    if not scoring.done() or scoring.cancelled():
        raise _ClientGone("the client disconnected while its request was queued or being scored")
    try:
        return scoring.result()
    except BatcherBusyError as error:
        raise ApiError(429, str(error), headers={"Retry-After": "1"}) from None
    except BatcherClosedError as error:
        raise ApiError(503, str(error), headers={"Retry-After": "1"}) from None
    except (ValueError, TypeError) as error:  # the core refused this input: the client's problem
        raise ApiError(422, f"the scorer rejected the request: {error}") from None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _refuse_truncated(details: Sequence[Any], field: str) -> None:
    for index, detail in enumerate(details):
        if detail.truncated:
            raise ApiError(
                400,
                f"{field}[{index}] does not fit the model's context together with the query; shorten it, or allow "
                "truncation (Voyage: truncation=true, TEI: truncate=true)",
                param=f"{field}[{index}]",
            )


def _request_id(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", "none"))


class _Guard:
    """Outermost app layer: a request id for every request, and the last word on every error.

    ``ApiError`` becomes the dialect's error body; a vanished client gets one debug line; anything else is
    logged once with its request id and answered with a JSON 500, keeping the connection open.
    """

    def __init__(self, app: ASGIApp, *, error_shapes: dict[str, Callable[..., BaseModel]]) -> None:
        self.app = app
        self.error_shapes = error_shapes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append("X-Request-Id", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ApiError as error:
            if not started:
                await self._error(scope, send_with_id, error.status, error.message, error.param, error.headers)
        except _ClientGone as gone:
            logger.debug("request %s: %s; nothing sent", rid, gone)
        except Exception:
            logger.exception("request %s (%s %s) failed", rid, scope.get("method"), scope.get("path"))
            if not started:
                message = f"internal server error (request id {rid}); the server log has the details"
                await self._error(scope, send_with_id, 500, message, None, {})

    async def _error(
        self, scope: Scope, send: Send, status: int, message: str, param: str | None, headers: dict[str, str]
    ) -> None:
        shape = self.error_shapes.get(scope.get("path", ""))
        rid = _request_id(scope)
        body = shape(status, message, param, rid) if shape else generic_error(status, message, param, rid)
        response = JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)
        await response(scope, _never_receive, send)


async def _never_receive() -> Message:
    return {"type": "http.disconnect"}


def _openapi(app: FastAPI, *, accepts_instruction: bool, auth: bool, max_documents: int) -> dict[str, Any]:
    """FastAPI's schema plus each dialect's request body, which the routes parse themselves (bounded)."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version="1.0.0", summary=app.summary, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for dialect in DIALECTS:
        request_schema = dialect.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(request_schema.pop("$defs", {}))
        request_schema["properties"][dialect.documents_field]["maxItems"] = max_documents
        if not accepts_instruction:
            request_schema["properties"].pop("instruction", None)
        components[dialect.request_model.__name__] = request_schema
        operation = schema["paths"][dialect.path]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{dialect.request_model.__name__}"}}
            },
        }
        if auth:
            operation["security"] = [{"bearer": []}]
    components.setdefault(
        GenericError.__name__, GenericError.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    if auth:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    app.openapi_schema = schema
    return schema


def _scorer_stats(scorer: Any) -> dict[str, Any] | None:
    stats = getattr(scorer, "stats", None)
    if stats is None or not is_dataclass(stats) or isinstance(stats, type):
        return None
    return {
        name: getattr(stats, name)
        for name in stats.__dataclass_fields__
        if isinstance(getattr(stats, name), (int, float))
    }
