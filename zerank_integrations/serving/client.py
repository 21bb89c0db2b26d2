"""``RemoteScorer``: the ``ZerankScorer`` interface over any ``/v1/rerank`` endpoint.

The adapters only need ``score``/``rank``/``ascore``/``arank`` and ``model_name``, so a remote scorer makes
``ZerankRerank(scorer=RemoteScorer(...))`` work unchanged against our own server, a vLLM/SGLang/infinity
replica pool behind a load balancer, or ZeroEntropy's hosted API (``path="/v1/models/rerank"``).

Scores always come back in input order (the client asks for every result and re-sorts locally, so ranking
ties break exactly as ``ZerankScorer.rank`` breaks them). What ``relevance_score`` means depends on the
server, hence ``score_transform``:

- ``"none"``: the server returns zerank probabilities (our server, ZeroEntropy's API). Raw logits come from
  our server's ``raw_score`` extension; other servers cannot answer ``raw=True``.
- ``"sigmoid_div5"``: the server returns the raw "Yes" logit (vLLM serving zerank-2 as a one-label
  ``Qwen3ForSequenceClassification`` with its activation off); probability = sigmoid(logit / 5) here.
- ``"resigmoid_div5"``: the server returns sigmoid(logit) (vLLM's default activation for one label); the
  logit is recovered as log(p / (1 - p)) and rescaled. Lossy once sigmoid(logit) rounds to 0 or 1.

Retries: 429 and 5xx responses and transport errors (refused connection, reset, timeout) are retried with
exponential backoff and jitter, honouring ``Retry-After``; other 4xx are the caller's mistake and raise
at once.
The API key is a ``SecretStr``: it never appears in ``repr``, logs or error messages.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from zerank_integrations.base import (
    DEFAULT_MODEL,
    rank_scores,
    validate_documents,
    validate_query,
    validate_top_n,
)
from zerank_integrations.families import get_family

ScoreTransform = Literal["none", "sigmoid_div5", "resigmoid_div5"]
_TRANSFORMS: tuple[str, ...] = ("none", "sigmoid_div5", "resigmoid_div5")
_ZERANK = get_family("zerank").calibration
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RemoteRerankError(RuntimeError):
    """The endpoint refused the request or gave an unusable answer; ``status_code`` when it answered."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RawScoresUnavailableError(RemoteRerankError):
    """``raw=True`` was asked of an endpoint that only returns probabilities."""


def _logit(p: float) -> float:
    if math.isnan(p):
        return math.nan
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p) - math.log1p(-p)


class RemoteScorer:
    """Scores (query, document) pairs through an HTTP rerank endpoint; thread- and asyncio-safe.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000"`` or ``"https://api.zeroentropy.dev"``.
        path: the rerank route: ``/v1/rerank`` (ours, vLLM, Cohere-style) or ``/v1/models/rerank``.
        model: sent as ``"model"`` and reported as ``model_name``; vLLM requires the served name.
        api_key: sent as ``Authorization: Bearer ...``; held as a ``SecretStr``.
        timeout: seconds per HTTP attempt.
        max_retries: extra attempts after a 429/5xx/transport error (0 disables retrying).
        backoff_base_s / backoff_max_s: delay before retry k is ``base * 2**k`` (with jitter), capped.
        score_transform: what the server's ``relevance_score`` is (see the module docstring).
        extra_body: merged into every request body, e.g. ``{"use_activation": False}`` for vLLM.
        max_documents_per_request: longer document lists are split into several requests (sent
            concurrently by the async methods) and stitched back in order; ``None`` never splits.
    """

    def __init__(
        self,
        base_url: str,
        *,
        path: str = "/v1/rerank",
        model: str = DEFAULT_MODEL,
        api_key: str | SecretStr | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        score_transform: ScoreTransform = "none",
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        max_documents_per_request: int | None = 1000,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if score_transform not in _TRANSFORMS:
            raise ValueError(f"score_transform must be one of {_TRANSFORMS}, got {score_transform!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_documents_per_request is not None and max_documents_per_request < 1:
            raise ValueError(f"max_documents_per_request must be >= 1 or None, got {max_documents_per_request}")
        self.url = base_url.rstrip("/") + "/" + path.lstrip("/")
        self._model = model
        self.api_key = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.score_transform: ScoreTransform = score_transform
        self.extra_body = dict(extra_body or {})
        self.max_documents_per_request = max_documents_per_request
        self._headers = {"Accept": "application/json", **dict(headers or {})}
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self.requests_sent = 0  # HTTP attempts, retries included
        self.retries = 0

    # -- the Reranker interface ---------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model

    def score(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]:
        """Probabilities in [0, 1] in input order (or raw "Yes" logits when the server can give them)."""
        query, docs = validate_query(query), validate_documents(documents)
        scores: list[float] = []
        for start, chunk in self._chunks(docs):
            body = self._post(self._payload(query, chunk))
            scores.extend(self._scores_from(body, len(chunk), raw=raw, offset=start))
        return scores

    def rank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        """(index, probability) best first; ties keep input order, exactly like ``ZerankScorer.rank``."""
        top_n = validate_top_n(top_n)
        return rank_scores(self.score(query, documents), top_n)

    async def ascore(self, query: str, documents: Sequence[str], *, raw: bool = False) -> list[float]:
        """``score`` without blocking the event loop; split requests run concurrently."""
        query, docs = validate_query(query), validate_documents(documents)
        chunks = list(self._chunks(docs))
        bodies = await asyncio.gather(*(self._apost(self._payload(query, chunk)) for _, chunk in chunks))
        scores: list[float] = []
        for (start, chunk), body in zip(chunks, bodies, strict=True):
            scores.extend(self._scores_from(body, len(chunk), raw=raw, offset=start))
        return scores

    async def arank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[tuple[int, float]]:
        top_n = validate_top_n(top_n)
        return rank_scores(await self.ascore(query, documents), top_n)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync connection pool (async pools close with ``aclose``)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this loop's async pool and the sync pool."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self) -> RemoteScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RemoteScorer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        key = "SecretStr('**********')" if self.api_key is not None else "None"
        return (
            f"RemoteScorer(url={self.url!r}, model={self._model!r}, api_key={key}, "
            f"score_transform={self.score_transform!r}, max_retries={self.max_retries})"
        )

    # -- HTTP ---------------------------------------------------------------------------------------------

    def _chunks(self, docs: list[str]) -> list[tuple[int, list[str]]]:
        if not docs:
            return []
        size = self.max_documents_per_request or len(docs)
        return [(start, docs[start : start + size]) for start in range(0, len(docs), size)]

    def _payload(self, query: str, documents: list[str]) -> dict[str, Any]:
        # No top_n: every result comes back, so scores can be returned in input order.
        return {
            **self.extra_body,
            "model": self._model,
            "query": query,
            "documents": documents,
            "return_documents": False,
        }

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return headers

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout)
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        # An AsyncClient's pool belongs to one event loop; frameworks that call asyncio.run() repeatedly
        # would otherwise reuse dead connections, so each loop gets its own.
        loop = asyncio.get_running_loop()
        with self._lock:
            for other in [other for other in self._async_clients if other.is_closed()]:
                del self._async_clients[other]
            client = self._async_clients.get(loop)
            if client is None:
                client = self._async_clients[loop] = httpx.AsyncClient(timeout=self.timeout)
            return client

    def _count(self, attempt: int) -> None:
        with self._lock:
            self.requests_sent += 1
            if attempt:
                self.retries += 1

    def _post(self, payload: dict[str, Any]) -> Any:
        client = self._sync_client()
        attempt = 0
        while True:
            self._count(attempt)
            try:
                response = client.post(self.url, json=payload, headers=self._request_headers())
            except httpx.TransportError as error:
                if attempt >= self.max_retries:
                    raise self._unreachable(error, attempt) from error
                time.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(self._delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return self._json(response, attempt)

    async def _apost(self, payload: dict[str, Any]) -> Any:
        client = self._async_client()
        attempt = 0
        while True:
            self._count(attempt)
            try:
                response = await client.post(self.url, json=payload, headers=self._request_headers())
            except httpx.TransportError as error:
                if attempt >= self.max_retries:
                    raise self._unreachable(error, attempt) from error
                await asyncio.sleep(self._delay(attempt, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
                attempt += 1
                continue
            return self._json(response, attempt)

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff with jitter in [50%, 100%]; a server's Retry-After (seconds) wins, capped."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.backoff_max_s)
            except ValueError:
                pass  # an HTTP-date: fall back to our own schedule
        delay = min(self.backoff_base_s * (2**attempt), self.backoff_max_s)
        return delay * (0.5 + random.random() / 2)

    def _unreachable(self, error: httpx.TransportError, attempt: int) -> RemoteRerankError:
        return RemoteRerankError(
            f"could not get an answer from {self.url} after {attempt + 1} attempt(s): {type(error).__name__}: {error}"
        )

    def _json(self, response: httpx.Response, attempt: int) -> Any:
        if response.status_code >= 400:
            tries = f" after {attempt + 1} attempts" if attempt else ""
            raise RemoteRerankError(
                f"{self.url} answered HTTP {response.status_code}{tries}: {_error_message(response)}",
                status_code=response.status_code,
            )
        try:
            return response.json()
        except ValueError:
            raise RemoteRerankError(
                f"{self.url} answered HTTP {response.status_code} with a body that is not JSON: "
                f"{response.text[:200]!r}",
                status_code=response.status_code,
            ) from None

    # -- response -> scores -------------------------------------------------------------------------------

    def _scores_from(self, body: Any, n: int, *, raw: bool, offset: int) -> list[float]:
        """Scores in input order from a rerank response, checking that every document came back once."""
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise RemoteRerankError(f"{self.url} returned no 'results' list: {str(body)[:200]!r}")
        relevance: list[float | None] = [None] * n
        raw_scores: list[float | None] = [None] * n
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
                raise RemoteRerankError(f"{self.url} returned a result with a bad index: {item!r}")
            if relevance[index] is not None:
                raise RemoteRerankError(f"{self.url} returned index {index} twice")
            relevance[index] = _number(item.get("relevance_score"), self.url, "relevance_score")
            if "raw_score" in item:
                raw_scores[index] = _number(item.get("raw_score"), self.url, "raw_score")
        missing = [i for i, value in enumerate(relevance) if value is None]
        if missing:
            raise RemoteRerankError(
                f"{self.url} returned {n - len(missing)} results for {n} documents (document "
                f"{missing[0] + offset} missing); does the server apply a default top_n?"
            )
        values = [float(v) for v in relevance if v is not None]
        if self.score_transform == "sigmoid_div5":
            return values if raw else [_ZERANK.probability(v) for v in values]
        if self.score_transform == "resigmoid_div5":
            logits = [_logit(v) for v in values]
            return logits if raw else [_ZERANK.probability(v) for v in logits]
        if not raw:
            return values
        if any(v is None for v in raw_scores):
            raise RawScoresUnavailableError(
                f"raw=True needs raw logits, but {self.url} returned only probabilities (no 'raw_score' "
                "in its results). zerank's own server returns them; for vLLM, serve the model with its "
                "activation off and use score_transform='sigmoid_div5' (see docs/serving.md)."
            )
        return [float(v) for v in raw_scores if v is not None]


def _number(value: Any, url: str, field: str) -> float:
    if value is None:  # our server writes a non-finite score as null
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RemoteRerankError(f"{url} returned a non-numeric {field}: {value!r}")
    return float(value)


def _error_message(response: httpx.Response) -> str:
    """The server's own words: ``error.message`` (ours, vLLM, OpenAI), ``message`` (Cohere), ``detail``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        for key in ("message", "detail", "error"):
            if isinstance(body.get(key), str):
                return body[key]
    return str(body)[:300]
