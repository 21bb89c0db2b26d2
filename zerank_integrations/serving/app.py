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

Production plumbing lives here too, so every engine that serves this app (uvicorn, each Ray Serve replica)
has it: ``/metrics`` (Prometheus, one registry per app), ``/ready`` (503 while loading, warming or
draining; ``/health`` is liveness), an ``X-Request-Id`` on every answer (the client's, echoed), one log line
per request, OpenTelemetry spans, and ``max_concurrent_requests`` (429 with ``Retry-After`` beyond it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, is_dataclass
from typing import Any, Protocol
from uuid import uuid4

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zerank_integrations.rerank import SavingsRecorder, finish_rerank
from zerank_integrations.selection import SelectionPolicy
from zerank_integrations.serving.batcher import (
    BatcherBusyError,
    BatcherClosedError,
    JobTimes,
    MicroBatcher,
    ScoreJob,
)
from zerank_integrations.serving.dialects import (
    DIALECTS,
    GenericError,
    RerankCall,
    RerankOutcome,
    ServerDialect,
    generic_error,
)
from zerank_integrations.serving.metrics import CONTENT_TYPE, ServerMetrics
from zerank_integrations.serving.tracing import RequestTracer
from zerank_integrations.serving.wire import ApiError, check_content_type, parse_json, validation_error

logger = logging.getLogger("zerank_integrations.serving")
access_logger = logging.getLogger("zerank_integrations.serving.access")

DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BATCH_PAIRS = 2048
DEFAULT_MAX_QUEUED_REQUESTS = 4096
DEFAULT_MAX_JSON_DEPTH = 32
RERANK_PATHS = tuple(dialect.path for dialect in DIALECTS)
PROBE_PATHS = ("/health", "/ready", "/metrics", "/v1/models", "/openapi.json")
RETRY_AFTER_S = 1
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

_ERROR_DESCRIPTIONS = {
    400: "malformed body: not UTF-8 JSON, nested too deeply, duplicate keys, numbers out of range; or a document "
    "too long for the model when truncation is refused",
    401: "missing or wrong bearer token",
    413: "body larger than the server's limit, or more documents than it accepts",
    415: "a Content-Type other than application/json",
    422: "a field is missing, has the wrong type or value, or holds text the tokenizer cannot read",
    429: "too many requests queued or in progress; retry after the Retry-After seconds",
    500: "unexpected server error; the message carries the request id to look up in the server log",
    503: "the model is still loading, or the server is shutting down",
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


class ClusterView(Protocol):
    """What an engine with several replicas adds: ``/health`` and ``/metrics`` over all of them (Ray)."""

    engine: str

    def start(self, snapshot: Callable[[], tuple[dict[str, Any], bytes]]) -> None:
        """Called in the app's lifespan with a way to read this replica's ``/health`` body and metrics."""

    async def stop(self) -> None: ...

    async def health(self, local: dict[str, Any]) -> dict[str, Any]: ...

    async def metrics(self, local: bytes) -> bytes: ...


class Readiness:
    """``/ready``: loaded and warmed, and not draining. Draining is one-way: it starts at SIGTERM."""

    def __init__(self) -> None:
        self.loaded = False
        self.warmed = False
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.loaded and self.warmed and not self.draining

    @property
    def state(self) -> str:
        if self.draining:
            return "draining"
        if not self.loaded:
            return "loading"
        return "ready" if self.warmed else "warming"

    def drain(self) -> None:
        """From now on ``/ready`` is 503, so load balancers stop sending work; requests still get answers."""
        if not self.draining:
            logger.info("draining: /ready now answers 503")
        self.draining = True


@dataclass
class RequestRecord:
    """What one request did, filled in as it goes: read by the metrics, the log line and the span."""

    request_id: str
    route: str
    dialect: str
    documents: int | None = None
    tokens: int | None = None
    times: JobTimes = field(default_factory=JobTimes)


class _Admission:
    """``max_concurrent_requests``: rerank requests in progress (one event loop, so a plain count)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_concurrent_requests must be >= 1 (or None for no limit), got {limit}")
        self.limit = limit
        self.active = 0

    def enter(self) -> None:
        if self.limit is not None and self.active >= self.limit:
            raise ApiError(
                429,
                f"{self.active} requests are already in progress, the most this server takes at once; "
                f"retry after {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


def select(
    call: RerankCall, details: Sequence[Any], ledger: SavingsRecorder | None = None
) -> tuple[list[tuple[int, float]], Any]:
    """(index, reported score) best first, ties in input order, ``top_n`` kept.

    The batcher has already scored the request alongside others; what is left of the shared rerank step
    (score -> select -> account) is its selection, so the server ranks exactly as the adapters and
    ``evaluate`` do. Raw and calibrated scores order alike; the dialect decides which one is reported.
    Returns the kept (index, score) pairs and the ledger's savings (``None`` without a ledger).
    """
    scores = [d.raw if call.raw_scores else d.probability for d in details]
    policy = SelectionPolicy(top_n=call.top_n)
    result = finish_rerank(call.query, call.texts, scores, policy, details=details, ledger=ledger)
    return result.kept, result.savings


def create_app(
    scorer: ServableScorer | Callable[[], ServableScorer],
    *,
    api_key: str | SecretStr | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS,
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    model_name: str | None = None,
    max_concurrent_requests: int | None = None,
    warm_up: bool = False,
    ledger: SavingsRecorder | None = None,
    tracer_provider: Any | None = None,
    cluster: ClusterView | None = None,
) -> FastAPI:
    """A FastAPI app serving ``scorer``; run it with any ASGI server (``uvicorn.run(app)``).

    ``scorer`` is a loaded scorer, or a no-argument callable that loads one: then the app starts at once,
    ``/health`` answers while the model loads in a thread and ``/ready`` (and every rerank route) answers
    503 until it is loaded, and, with ``warm_up``, has scored one pair. ``api_key`` turns on bearer auth
    for the rerank routes (``/health``, ``/ready``, ``/metrics`` and ``/v1/models`` stay open for load
    balancers and scrapers). ``max_concurrent_requests`` bounds rerank requests in progress (429 with
    ``Retry-After`` beyond it). ``ledger`` (a ``TokenLedger``) counts the LLM prompt tokens selection kept
    and saved into the metrics. ``tracer_provider`` (OpenTelemetry) turns on request spans. ``cluster`` is
    how an engine with several replicas widens ``/health`` and ``/metrics`` (the Ray engine passes one).
    The batcher lives in the app's lifespan, so it binds to the server's event loop; ``app.state.batcher``,
    ``app.state.metrics`` and ``app.state.readiness`` are there for the engines and the tests.
    """
    loader: Callable[[], ServableScorer] | None = None
    if not callable(getattr(scorer, "score_pairs_details", None)):
        if not callable(scorer) or isinstance(scorer, type):
            raise TypeError(
                f"{type(scorer).__name__} has no score_pairs_details(); the server needs it to batch across requests"
            )
        loader = scorer  # type: ignore[assignment]
    for name, value in (("max_request_bytes", max_request_bytes), ("max_documents", max_documents)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if max_json_depth < 3:
        raise ValueError(f"max_json_depth must be >= 3 (a request is at least that deep), got {max_json_depth}")
    secret = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
    if secret is not None and not secret.get_secret_value():
        raise ValueError("api_key is empty; pass None to disable authentication")
    batcher_settings = {
        "max_wait_ms": batch_wait_ms,
        "max_batch_pairs": max_batch_pairs,
        "max_queued_requests": max_queued_requests,
    }
    MicroBatcher.check_settings(**batcher_settings)
    metrics = ServerMetrics()
    readiness = Readiness()
    tracer = RequestTracer(tracer_provider)
    admission = _Admission(max_concurrent_requests)

    app = FastAPI(
        title="zerank rerank server",
        summary="Cohere, Jina, Voyage, Mixedbread, TEI, ZeroEntropy and vLLM rerank dialects over one reranker, "
        "with cross-request batching",
        docs_url=None,
        redoc_url=None,
    )
    state = app.state
    state.scorer = None
    state.batcher = None
    state.model_name = model_name or str(getattr(scorer, "model_name", "zerank"))
    state.auth_enabled = secret is not None
    state.max_request_bytes = max_request_bytes
    state.max_documents = max_documents
    state.metrics = metrics
    state.readiness = readiness
    state.admission = admission
    state.engine = cluster.engine if cluster is not None else "local"
    metrics.watch(lambda: state.batcher.queued if state.batcher is not None else 0)
    metrics.in_flight.set_function(lambda: admission.active)
    metrics.ready.set_function(lambda: 1 if readiness.ready else 0)

    def adopt(loaded: ServableScorer) -> None:
        """Start serving ``loaded``: its batcher on this loop, its names, its model info."""
        state.scorer = loaded
        state.model_name = model_name or str(getattr(loaded, "model_name", "zerank"))
        metrics.describe_model(loaded, state.model_name)
        batcher = MicroBatcher(loaded, observer=metrics.observe_batch, **batcher_settings)
        batcher.start()
        state.batcher = batcher
        readiness.loaded = True

    async def prepare() -> None:
        """Load (with a loader) and warm up in a thread, then say ready."""
        loop = asyncio.get_running_loop()
        try:
            if loader is not None:
                adopt(await loop.run_in_executor(None, loader))
            if warm_up:
                await loop.run_in_executor(None, state.scorer.score_pairs_details, [("warm-up", "warm-up")])
        except (OSError, ValueError, RuntimeError) as error:  # a wrong model or option: one line, no traceback
            logger.error(
                "the model could not be loaded or warmed up (/ready stays 503): %s", " ".join(str(error).split())
            )
            return
        except Exception:
            logger.exception("the model could not be loaded or warmed up; /ready stays 503")
            return
        readiness.warmed = True
        logger.info("%s is ready", state.model_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if loader is None:
            adopt(scorer)  # type: ignore[arg-type]
        preparing = asyncio.get_running_loop().create_task(prepare(), name="zerank-prepare")
        if cluster is not None:
            cluster.start(lambda: (local_health(), metrics.render()))
        try:
            yield
        finally:
            readiness.drain()
            preparing.cancel()
            if cluster is not None:
                await cluster.stop()
            if state.batcher is not None:
                await state.batcher.close()
            if tracer.enabled:
                await asyncio.get_running_loop().run_in_executor(None, tracer.flush)

    app.router.lifespan_context = lifespan

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        rid = _request_id(request.scope)
        body = generic_error(error.status_code, str(error.detail), None, rid)
        return JSONResponse(body.model_dump(mode="json"), status_code=error.status_code, headers=error.headers)

    def local_health() -> dict[str, Any]:
        batcher: MicroBatcher | None = state.batcher
        current = state.scorer
        return {
            "status": "ok" if batcher is not None else "starting",
            "ready": readiness.state,
            "engine": state.engine,
            "model": state.model_name,
            "family": getattr(current, "family", None),
            "accepts_instruction": bool(getattr(current, "accepts_instruction", False)),
            "random_weights": bool(getattr(current, "random_weights", False)),
            "auth": secret is not None,
            "batcher": batcher.stats.as_dict() if batcher is not None else None,
            "queued": batcher.queued if batcher is not None else 0,
            "in_flight": batcher.in_flight if batcher is not None else 0,
            "requests_in_progress": admission.active,
            "scorer": _scorer_stats(current),
        }

    @app.get("/health", responses={200: {"description": "liveness and counters"}})
    async def health() -> dict[str, Any]:
        """Liveness plus counters: cheap, unauthenticated, never touches the model."""
        local = local_health()
        return await cluster.health(local) if cluster is not None else local

    @app.get("/ready", responses={200: {"description": "ready"}, 503: {"description": "loading or draining"}})
    async def ready() -> JSONResponse:
        """Readiness for load balancers: 200 once loaded and warmed, 503 while loading and from SIGTERM on."""
        return JSONResponse({"status": readiness.state}, status_code=200 if readiness.ready else 503)

    @app.get("/metrics", response_class=Response, responses={200: {"description": "Prometheus text format"}})
    async def prometheus_metrics() -> Response:
        """Prometheus metrics (text format 0.0.4), names prefixed ``zerank_``."""
        local = metrics.render()
        body = await cluster.metrics(local) if cluster is not None else local
        return Response(body, media_type=CONTENT_TYPE)

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> ModelList:
        """The served model, OpenAI/vLLM style, so clients can learn what actually answers them."""
        return ModelList(object="list", data=[ModelCard(id=state.model_name, object="model", owned_by="zerank")])

    def route(dialect: ServerDialect) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def rerank(request: Request) -> JSONResponse:
            started = time.perf_counter()
            record: RequestRecord = request.scope["state"]["record"]
            if secret is not None:
                _check_auth(request, secret)
            current = state.scorer
            if current is None or state.batcher is None:
                raise ApiError(
                    503, f"the model is still loading; retry after {RETRY_AFTER_S} s", headers=_RETRY_HEADERS
                )
            admission.enter()
            try:
                return await answer(request, dialect, current, record, started)
            finally:
                admission.leave()

        rerank.__name__ = f"rerank_{dialect.name.replace('-', '_')}"
        rerank.__doc__ = f"{dialect.summary}: {dialect.request_model.__doc__}"
        return rerank

    async def answer(
        request: Request, dialect: ServerDialect, current: ServableScorer, record: RequestRecord, started: float
    ) -> JSONResponse:
        check_content_type(request.headers.get("content-type"))
        body = await _read_body(request, max_request_bytes)
        payload = parse_json(body, max_depth=max_json_depth)
        items = payload.get(dialect.documents_field) if isinstance(payload, dict) else None
        if isinstance(items, list) and len(items) > max_documents:
            raise ApiError(
                413,
                f"{len(items)} {dialect.documents_field} in one request; this server accepts at most {max_documents}",
                param=dialect.documents_field,
            )
        try:
            parsed = dialect.request_model.model_validate(payload)
        except ValidationError as error:
            raise validation_error(error) from None
        if getattr(parsed, "is_voyage", False):
            record.dialect = "voyage"
        call = dialect.to_call(parsed)
        instruction = call.instruction if call.instruction and call.instruction.strip() else None
        if instruction is not None and not getattr(current, "accepts_instruction", False):
            family = getattr(current, "family", "this model's")
            raise ApiError(
                422,
                f"'instruction': the {family} reranker family takes no instruction; leave the field out",
                param="instruction",
            )
        record.documents = len(call.texts)
        job = ScoreJob(call.query, call.texts, instruction, call.max_tokens_per_doc)
        details = await _score_while_connected(request, state.batcher, job, record.times)
        if call.refuse_truncation:
            _refuse_truncated(details, dialect.documents_field)
        ranked, savings = select(call, details, ledger)
        outcome = RerankOutcome(
            call=call,
            ranked=ranked,
            raw=[float(d.raw) for d in details],
            tokens=sum(int(d.tokens) for d in details),
            request_id=record.request_id,
            model=state.model_name,
            elapsed_s=time.perf_counter() - started,
            body_bytes=len(body),
        )
        response = dialect.answer(parsed, outcome)
        record.tokens = outcome.tokens
        _count_scored(metrics, record, details, savings)
        tracer.phases(request.scope["state"].get("span"), record.times)
        return JSONResponse(response.model_dump(mode="json", exclude_unset=True))

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

    app.add_middleware(
        _Guard,
        error_shapes={d.path: d.error for d in DIALECTS},
        metrics=metrics,
        tracer=tracer,
        add_header=not getattr(cluster, "proxy_sets_request_id", False),
    )
    app.openapi = lambda: _openapi(  # type: ignore[method-assign]
        app,
        accepts_instruction=bool(getattr(state.scorer, "accepts_instruction", False)),
        auth=secret is not None,
        max_documents=max_documents,
        final=state.scorer is not None,
    )
    return app


_RETRY_HEADERS = {"Retry-After": str(RETRY_AFTER_S)}


def _count_scored(metrics: ServerMetrics, record: RequestRecord, details: Sequence[Any], savings: Any) -> None:
    times = record.times
    if times.scored_ns:
        metrics.queue.observe(times.seconds("queue"))
        metrics.tokenize.observe(times.seconds("tokenize"))
        metrics.model.observe(times.seconds("model"))
    metrics.pairs_scored.inc(len(details))
    metrics.prompt_tokens.inc(record.tokens or 0)
    if savings is not None:
        metrics.selection_in.inc(savings.tokens_in)
        metrics.selection_kept.inc(savings.tokens_kept)
        metrics.selection_saved.inc(savings.tokens_saved)


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


async def _score_while_connected(
    request: Request, batcher: MicroBatcher, job: ScoreJob, times: JobTimes | None = None
) -> list[Any]:
    """Wait for the batcher, but stop waiting (and cancel the work) the moment the client disconnects."""
    scoring = asyncio.ensure_future(batcher.submit(job, times))
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
        raise ApiError(429, str(error), headers=_RETRY_HEADERS) from None
    except BatcherClosedError as error:
        raise ApiError(503, str(error), headers=_RETRY_HEADERS) from None
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


def _route_label(path: str) -> str:
    """The ``route`` label: a known path, or ``other`` (unknown paths must not grow the label set)."""
    return path if path in RERANK_PATHS or path in PROBE_PATHS else "other"


class _Guard:
    """Outermost app layer: a request id, a count, a timing, a span and a log line for every request, and the
    last word on every error.

    The id is the client's ``X-Request-Id`` when it is a sane token (else a new one) and goes back on every
    answer. ``ApiError`` becomes the dialect's error body; a vanished client gets one debug line (and counts
    as status 499); anything else is logged once with its request id and answered with a JSON 500, keeping
    the connection open.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        error_shapes: dict[str, Callable[..., BaseModel]],
        metrics: ServerMetrics,
        tracer: RequestTracer,
        add_header: bool = True,
    ) -> None:
        self.app = app
        self.add_header = add_header  # False behind a proxy that sets X-Request-Id itself (Ray Serve's)
        self.error_shapes = error_shapes
        self.metrics = metrics
        self.tracer = tracer
        self.dialects = {d.path: d.name for d in DIALECTS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        headers = Headers(scope=scope)
        offered = headers.get("x-request-id", "")
        rid = offered if _CLIENT_REQUEST_ID.fullmatch(offered) else uuid4().hex
        path = scope.get("path", "")
        route = _route_label(path)
        record = RequestRecord(request_id=rid, route=route, dialect=self.dialects.get(path, "none"))
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["record"] = record
        span = self.tracer.start(
            f"{scope.get('method', 'GET')} {route}",
            headers,
            {"http.request.method": scope.get("method", ""), "http.route": route, "zerank.request_id": rid},
        )
        state["span"] = span
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if self.add_header:
                    MutableHeaders(scope=message).append("X-Request-Id", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ApiError as error:
            if not status:
                await self._error(scope, send_with_id, error.status, error.message, error.param, error.headers)
        except _ClientGone as gone:
            logger.debug("request %s: %s; nothing sent", rid, gone)
        except Exception:
            logger.exception("request %s (%s %s) failed", rid, scope.get("method"), path)
            if not status:
                message = f"internal server error (request id {rid}); the server log has the details"
                await self._error(scope, send_with_id, 500, message, None, {})
        finally:
            self._account(record, status or 499, time.perf_counter() - began, span)

    def _account(self, record: RequestRecord, status: int, elapsed: float, span: Any) -> None:
        """Count, time, trace and log one finished request; never raises into the request."""
        try:
            self.metrics.requests.labels(record.route, record.dialect, str(status)).inc()
            self.metrics.duration.labels(record.route, record.dialect).observe(elapsed)
            times = record.times
            fields = {
                "request_id": record.request_id,
                "route": record.route,
                "dialect": record.dialect,
                "status": status,
                "documents": record.documents,
                "tokens": record.tokens,
                "duration_ms": round(elapsed * 1e3, 3),
                "queue_ms": round(times.seconds("queue") * 1e3, 3) if times.scored_ns else None,
                "tokenize_ms": round(times.seconds("tokenize") * 1e3, 3) if times.scored_ns else None,
                "model_ms": round(times.seconds("model") * 1e3, 3) if times.scored_ns else None,
                "batch_requests": times.batch_requests or None,
            }
            self.tracer.finish(
                span,
                status,
                {
                    "zerank.dialect": record.dialect,
                    "zerank.documents": record.documents,
                    "zerank.tokens": record.tokens,
                    "zerank.batch.requests": times.batch_requests or None,
                },
            )
            level = logging.INFO if record.route in RERANK_PATHS else logging.DEBUG
            if access_logger.isEnabledFor(level):
                access_logger.log(
                    level,
                    "%s %s %d: %s documents, %s tokens, %.1f ms",
                    record.request_id,
                    record.route,
                    status,
                    record.documents if record.documents is not None else "-",
                    record.tokens if record.tokens is not None else "-",
                    elapsed * 1e3,
                    extra={"zerank": fields},
                )
        except Exception:
            logger.exception("request %s: accounting failed", record.request_id)

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


def _openapi(
    app: FastAPI, *, accepts_instruction: bool, auth: bool, max_documents: int, final: bool = True
) -> dict[str, Any]:
    """FastAPI's schema plus each dialect's request body, which the routes parse themselves (bounded).

    Kept once the model is loaded (``final``): whether ``instruction`` is offered depends on its family.
    """
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
    if final:
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
