"""The ``/v1/rerank`` HTTP server: one scorer, many clients, cross-request batching.

Speaks the Cohere/Jina-style protocol that vLLM, SGLang, infinity and ZeroEntropy's API share, so any client
of those works here and our ``RemoteScorer`` works there::

    POST /v1/rerank   (also /v1/models/rerank, ZeroEntropy's path, and /rerank)
    {"model": "...", "query": "...", "documents": ["...", {"text": "..."}],
     "top_n": 3, "return_documents": true}
    -> {"id": "...", "model": "...",
        "results": [{"index": 1, "relevance_score": 0.93, "raw_score": 12.9,
                     "document": {"text": "..."}}, ...],
        "usage": {"documents": 2}}

Results are best first; ``relevance_score`` is the core's probability sigmoid(logit / 5) and ``raw_score`` the
"Yes" logit itself (an extension other clients ignore, which lets ``RemoteScorer.score(raw=True)`` work).
Bodies are parsed by hand rather than by a pydantic model so that every bad request gets a 4xx whose message
names the offending field, and so the size limit is enforced while the body streams in, before it is buffered.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, is_dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerank_integrations.base import Calibration, rank_scores, validate_query, validate_top_n
from zerank_integrations.serving.batcher import BatcherBusyError, BatcherClosedError, MicroBatcher

logger = logging.getLogger("zerank_integrations.serving")

DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BATCH_PAIRS = 2048
RERANK_PATHS = ("/v1/rerank", "/v1/models/rerank", "/rerank")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    500: "internal_error",
    503: "overloaded_error",
}


class ServableScorer(Protocol):
    """What the server needs: a name to report and mixed-query pair scoring (raw logits on request)."""

    @property
    def model_name(self) -> str: ...

    @property
    def calibration(self) -> Calibration: ...

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, raw: bool = False) -> list[float]: ...


class ApiError(Exception):
    """A request the server refuses; rendered as ``{"error": {"message", "type", "code", "param"}}``."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers


@dataclass(frozen=True)
class RerankInput:
    """A validated request body."""

    query: str
    documents: list[str]
    top_n: int | None
    return_documents: bool
    model: str | None


def error_response(
    status: int, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape of every endpoint (OpenAI/vLLM style, so existing clients show the message)."""
    body = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "internal_error"),
            "code": status,
            "param": param,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def parse_rerank_request(payload: Any, *, max_documents: int) -> RerankInput:
    """Validate a decoded JSON body; raise ``ApiError`` naming the first thing that is wrong."""
    if not isinstance(payload, dict):
        raise ApiError(422, f"the request body must be a JSON object, got {_json_type(payload)}")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(422, f"'model' must be a string, got {_json_type(model)}", param="model")

    if "query" not in payload or payload["query"] is None:
        raise ApiError(422, "'query' is required", param="query")
    query = payload["query"]
    if not isinstance(query, str):
        raise ApiError(422, f"'query' must be a string, got {_json_type(query)}", param="query")
    try:
        validate_query(query)
    except ValueError as error:
        raise ApiError(422, f"'query': {error}", param="query") from None

    if "documents" not in payload or payload["documents"] is None:
        raise ApiError(422, "'documents' is required", param="documents")
    raw_documents = payload["documents"]
    if not isinstance(raw_documents, list):
        raise ApiError(
            422, f"'documents' must be a list of strings, got {_json_type(raw_documents)}", param="documents"
        )
    if len(raw_documents) > max_documents:
        raise ApiError(
            413,
            f"{len(raw_documents)} documents in one request; this server accepts at most {max_documents}",
            param="documents",
        )
    documents: list[str] = []
    for index, item in enumerate(raw_documents):
        if isinstance(item, str):
            documents.append(item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            documents.append(item["text"])
        else:
            got = "an object without a string 'text' field" if isinstance(item, dict) else _json_type(item)
            raise ApiError(
                422,
                f"documents[{index}] must be a string or an object with a string 'text' field, got {got}",
                param=f"documents[{index}]",
            )

    try:
        top_n = validate_top_n(payload.get("top_n"))
    except (TypeError, ValueError) as error:
        raise ApiError(422, f"'top_n': {error}", param="top_n") from None

    return_documents = payload.get("return_documents", False)
    if return_documents is None:
        return_documents = False
    if not isinstance(return_documents, bool):
        raise ApiError(
            422,
            f"'return_documents' must be true or false, got {_json_type(return_documents)}",
            param="return_documents",
        )
    return RerankInput(query, documents, top_n, return_documents, model)


def create_app(
    scorer: ServableScorer,
    *,
    api_key: str | SecretStr | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_documents: int = DEFAULT_MAX_DOCUMENTS,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS,
    max_queued_requests: int = 4096,
    model_name: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``scorer``; run it with any ASGI server (``uvicorn.run(app)``).

    ``api_key`` turns on bearer auth for the rerank routes (``/health`` stays open for load balancers).
    The batcher lives in the app's lifespan, so it binds to the server's event loop; ``app.state.batcher``
    and ``GET /health`` expose its counters.
    """
    if not callable(getattr(scorer, "score_pairs", None)):
        raise TypeError(f"{type(scorer).__name__} has no score_pairs(); the server needs it to batch across requests")
    if max_request_bytes < 1:
        raise ValueError(f"max_request_bytes must be >= 1, got {max_request_bytes}")
    if max_documents < 1:
        raise ValueError(f"max_documents must be >= 1, got {max_documents}")
    secret = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
    if secret is not None and not secret.get_secret_value():
        raise ValueError("api_key is empty; pass None to disable authentication")
    expected_auth = (
        f"Bearer {secret.get_secret_value()}".encode() if secret is not None else None
    )  # kept as bytes for hmac.compare_digest; never logged
    served_name = model_name or str(getattr(scorer, "model_name", "zerank"))
    # Validate the batcher settings now, not at the first request.
    MicroBatcher(
        scorer,
        max_wait_ms=batch_wait_ms,
        max_batch_pairs=max_batch_pairs,
        max_queued_requests=max_queued_requests,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = MicroBatcher(
            scorer,
            max_wait_ms=batch_wait_ms,
            max_batch_pairs=max_batch_pairs,
            max_queued_requests=max_queued_requests,
        )
        batcher.start()
        app.state.batcher = batcher
        try:
            yield
        finally:
            await batcher.close()

    app = FastAPI(
        title="zerank rerank server",
        summary="Cohere/Jina-compatible /v1/rerank over a zerank model, with cross-request batching",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.scorer = scorer
    app.state.model_name = served_name
    app.state.auth_enabled = expected_auth is not None
    app.state.max_request_bytes = max_request_bytes
    app.state.max_documents = max_documents

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, param=error.param, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """Liveness plus counters: cheap, unauthenticated, never touches the model."""
        batcher: MicroBatcher | None = getattr(request.app.state, "batcher", None)
        return {
            "status": "ok" if batcher is not None else "starting",
            "model": served_name,
            "auth": expected_auth is not None,
            "batcher": batcher.stats.as_dict() if batcher is not None else None,
            "queued": batcher.queued if batcher is not None else 0,
            "scorer": _scorer_stats(scorer),
        }

    async def rerank(request: Request) -> JSONResponse:
        started = time.perf_counter()
        if expected_auth is not None:
            _check_auth(request, expected_auth)
        body = await _read_body(request, max_request_bytes)
        payload = _decode_json(body)
        params = parse_rerank_request(payload, max_documents=max_documents)
        batcher: MicroBatcher = request.app.state.batcher
        try:
            logits = await batcher.submit(params.query, params.documents)
        except BatcherBusyError as error:
            raise ApiError(503, str(error), headers={"Retry-After": "1"}) from None
        except BatcherClosedError as error:
            raise ApiError(503, str(error), headers={"Retry-After": "1"}) from None
        except (ValueError, TypeError) as error:  # the core refused this input: the client's problem
            raise ApiError(422, f"the scorer rejected the request: {error}") from None
        except Exception:
            logger.exception("scoring failed for a request with %d documents", len(params.documents))
            raise ApiError(500, "internal error while scoring; see the server log") from None
        probabilities = [scorer.calibration.probability(x) for x in logits]
        results = []
        for index, probability in rank_scores(probabilities, params.top_n):
            item: dict[str, Any] = {
                "index": index,
                "relevance_score": _finite_or_none(probability),
                "raw_score": _finite_or_none(logits[index]),
            }
            if params.return_documents:
                item["document"] = {"text": params.documents[index]}
            results.append(item)
        logger.debug("reranked %d documents in %.1f ms", len(params.documents), (time.perf_counter() - started) * 1e3)
        return JSONResponse(
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": served_name,
                "results": results,
                "usage": {"documents": len(params.documents)},
            }
        )

    for path in RERANK_PATHS:
        app.add_api_route(path, rerank, methods=["POST"], include_in_schema=path == "/v1/rerank")
    return app


def _check_auth(request: Request, expected: bytes) -> None:
    """Constant-time comparison of the whole header, so timing reveals nothing about the key."""
    supplied = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
    if not supplied:
        raise ApiError(
            401,
            "missing bearer token: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(supplied, expected):
        raise ApiError(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` (header first, then stream)."""
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
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise ApiError(413, f"request body is larger than {limit} bytes, the most this server accepts")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "the request body is empty; expected a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError as error:
        raise ApiError(400, f"the request body is not UTF-8 JSON: {error}") from None
    except json.JSONDecodeError as error:
        raise ApiError(400, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN/Infinity; a non-finite score is reported as null rather than crashing the response."""
    return value if math.isfinite(value) else None


def _scorer_stats(scorer: Any) -> dict[str, Any] | None:
    stats = getattr(scorer, "stats", None)
    if stats is None:
        return None
    if is_dataclass(stats) and not isinstance(stats, type):
        fields = stats.__dataclass_fields__
        return {name: getattr(stats, name) for name in fields if isinstance(getattr(stats, name), (int, float))}
    return None
