"""``RemoteScorer``: the local scorer's interface over any rerank API, in that API's own dialect.

The adapters only need ``score``/``rank``/``ascore``/``arank`` and ``model_name``, so
``ZerankRerank(scorer=RemoteScorer(...))`` works unchanged against our own server, a vLLM or TEI replica
pool, or a hosted API (ZeroEntropy, Cohere, Voyage, Jina, Mixedbread).

Each dialect is one :class:`ClientDialect`: its path, how a request body is built, how the answer is read
back into input order, and what its score is: a probability (hosted APIs, our server) or the reranker
family's raw score (vLLM with its activation off, TEI with ``raw_scores``), which the family's calibration
turns into a probability. Large candidate lists are split to respect each provider's document limit and
stitched back in order; ``ascore`` sends the parts concurrently.

One retry conversation serves sync and async alike (:meth:`RemoteScorer._exchange` yields "send this" and
"sleep this long"; two small runners carry them out with httpx or asyncio): 429, 5xx and transport errors
are retried with exponential backoff and jitter, honouring ``Retry-After``; other 4xx raise at once.
API keys are ``SecretStr``, read from each provider's usual environment variable when not given; they
never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from zerank_integrations.base import (
    DEFAULT_MODEL,
    rank_scores,
    validate_documents,
    validate_instruction,
    validate_query,
    validate_top_n,
)
from zerank_integrations.families import FAMILY_NAMES, get_family

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DialectName = Literal["cohere", "voyage", "jina", "tei", "mixedbread", "zeroentropy", "vllm"]


class RemoteRerankError(RuntimeError):
    """The endpoint refused the request or gave an unusable answer; ``status_code`` when it answered."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class RawScoresUnavailableError(RemoteRerankError):
    """``raw=True`` (or probabilities from a raw-score dialect) needs a calibration nobody gave."""


# -- dialects -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scored:
    """One result read back from an answer: its document index, the dialect's score, our raw extension."""

    index: int
    score: float
    raw: float | None = None


@dataclass(frozen=True)
class ClientDialect:
    """One provider's wire format, as the client speaks it."""

    name: str
    path: str
    scores: Literal["probability", "raw"]
    build: Callable[[str, str, list[str], str | None], dict[str, Any]]  # (model, query, documents, instruction)
    results: Callable[[Any], list[Any]]  # the list of result objects in an answer
    score_field: str
    key_env: str | None
    max_documents: int | None
    base_url: str | None = None
    takes_instruction: bool = False


def _with_instruction(body: dict[str, Any], instruction: str | None) -> dict[str, Any]:
    return body if instruction is None else {**body, "instruction": instruction}


def _field(name: str) -> Callable[[Any], list[Any]]:
    def results(body: Any) -> list[Any]:
        value = body.get(name) if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise ValueError(f"no '{name}' list in the answer")
        return value

    return results


def _bare_list(body: Any) -> list[Any]:
    if not isinstance(body, list):
        raise ValueError("the answer is not a list")
    return body


CLIENT_DIALECTS: dict[str, ClientDialect] = {
    dialect.name: dialect
    for dialect in (
        ClientDialect(
            name="cohere",
            path="/v2/rerank",
            scores="probability",
            build=lambda model, query, docs, instruction: {"model": model, "query": query, "documents": docs},
            results=_field("results"),
            score_field="relevance_score",
            key_env="CO_API_KEY",
            max_documents=1000,
            base_url="https://api.cohere.com",
        ),
        ClientDialect(
            name="jina",
            path="/v1/rerank",
            scores="probability",
            build=lambda model, query, docs, instruction: {
                "model": model,
                "query": query,
                "documents": docs,
                "return_documents": False,
            },
            results=_field("results"),
            score_field="relevance_score",
            key_env="JINA_API_KEY",
            max_documents=1000,
            base_url="https://api.jina.ai",
        ),
        ClientDialect(
            name="voyage",
            path="/v1/rerank",
            scores="probability",
            build=lambda model, query, docs, instruction: {
                "model": model,
                "query": query,
                "documents": docs,
                "truncation": True,
            },
            results=_field("data"),
            score_field="relevance_score",
            key_env="VOYAGE_API_KEY",
            max_documents=1000,
            base_url="https://api.voyageai.com",
        ),
        ClientDialect(
            name="mixedbread",
            path="/v1/reranking",
            scores="probability",
            build=lambda model, query, docs, instruction: {
                "model": model,
                "query": query,
                "input": docs,
                "return_input": False,
            },
            results=_field("data"),
            score_field="score",
            key_env="MXBAI_API_KEY",
            max_documents=1000,
            base_url="https://api.mixedbread.com",
        ),
        ClientDialect(
            name="zeroentropy",
            path="/v1/models/rerank",
            scores="probability",
            build=lambda model, query, docs, instruction: {"model": model, "query": query, "documents": docs},
            results=_field("results"),
            score_field="relevance_score",
            key_env="ZEROENTROPY_API_KEY",
            max_documents=1000,
            base_url="https://api.zeroentropy.dev",
        ),
        ClientDialect(
            name="tei",
            path="/rerank",
            scores="raw",
            build=lambda model, query, docs, instruction: {
                "query": query,
                "texts": docs,
                "raw_scores": True,
                "truncate": True,
            },
            results=_bare_list,
            score_field="score",
            key_env=None,
            max_documents=32,  # TEI's default --max-client-batch-size
        ),
        ClientDialect(
            name="vllm",
            path="/v1/rerank",
            scores="raw",
            build=lambda model, query, docs, instruction: _with_instruction(
                {"model": model, "query": query, "documents": docs, "use_activation": False}, instruction
            ),
            results=_field("results"),
            score_field="relevance_score",
            key_env="VLLM_API_KEY",
            max_documents=None,
            takes_instruction=True,
        ),
    )
}


def _read_results(dialect: ClientDialect, body: Any, n: int, url: str, offset: int) -> list[Scored]:
    """Scores in input order from one answer, checking that every document came back exactly once."""
    try:
        items = dialect.results(body)
    except ValueError as error:
        raise RemoteRerankError(
            f"{url} gave an unusable {dialect.name} answer ({error}): {str(body)[:200]!r}"
        ) from None
    found: list[Scored | None] = [None] * n
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
            raise RemoteRerankError(f"{url} returned a result with a bad index: {item!r}")
        if found[index] is not None:
            raise RemoteRerankError(f"{url} returned index {index} twice")
        raw = _number(item["raw_score"], url, "raw_score") if "raw_score" in item else None
        found[index] = Scored(index, _number(item.get(dialect.score_field), url, dialect.score_field), raw)
    missing = [i for i, value in enumerate(found) if value is None]
    if missing:
        raise RemoteRerankError(
            f"{url} returned {n - len(missing)} results for {n} documents (document {missing[0] + offset} "
            "missing); does the server apply a default top_n?"
        )
    return [value for value in found if value is not None]


def _number(value: Any, url: str, field: str) -> float:
    if value is None:  # our server writes a non-finite score as null
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RemoteRerankError(f"{url} returned a non-numeric {field}: {value!r}")
    return float(value)


def _family_of(model: str) -> str | None:
    """The reranker family of a known checkpoint, by hub id or its bare name (``zerank-2``); else ``None``."""
    for name in FAMILY_NAMES:
        known = get_family(name).known_hub_ids()
        if model in known or model in {hub_id.rsplit("/", 1)[-1] for hub_id in known}:
            return name
    return None


# -- the retry conversation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Send:
    request: httpx.Request


@dataclass(frozen=True)
class _Sleep:
    seconds: float


Conversation = Generator["_Send | _Sleep", "httpx.Response | httpx.TransportError | None", Any]


class RemoteScorer:
    """Scores (query, document) pairs through an HTTP rerank API; thread- and asyncio-safe.

    Args:
        base_url: e.g. ``"http://127.0.0.1:8000"``; ``None`` uses the hosted API of ``dialect``.
        dialect: ``cohere`` (default, ``/v2/rerank``), ``voyage``, ``jina``, ``tei``, ``mixedbread``,
            ``zeroentropy`` (the hosted API) or ``vllm``.
        model: sent as ``"model"``; the name vLLM serves, or the provider's model id.
        family: the reranker family behind the endpoint (``zerank``, ``qwen3-reranker``, ...), whose
            calibration turns raw scores into probabilities (vLLM, TEI) or back (``raw=True``). ``None``:
            looked up from ``model`` when it is a known hub id.
        api_key: sent as ``Authorization: Bearer ...``; default: the dialect's environment variable
            (``CO_API_KEY``, ``VOYAGE_API_KEY``, ``JINA_API_KEY``, ``MXBAI_API_KEY``, ``ZEROENTROPY_API_KEY``,
            ``VLLM_API_KEY``). Held as a ``SecretStr``.
        path: override the dialect's route.
        timeout: seconds per HTTP attempt.
        max_retries: extra attempts after a 429/5xx/transport error (0 disables retrying).
        backoff_base_s / backoff_max_s: delay before retry k is ``base * 2**k`` (with jitter), capped.
        extra_body: merged into every request body.
        max_documents_per_request: longer lists are split; default: the provider's limit; ``None``: never.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        dialect: DialectName = "cohere",
        model: str = DEFAULT_MODEL,
        family: str | None = None,
        api_key: str | SecretStr | None = None,
        path: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        max_documents_per_request: int | Literal["auto"] | None = "auto",
    ) -> None:
        if dialect not in CLIENT_DIALECTS:
            raise ValueError(f"dialect must be one of {sorted(CLIENT_DIALECTS)}, got {dialect!r}")
        spec = CLIENT_DIALECTS[dialect]
        base_url = base_url if base_url is not None else spec.base_url
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_documents_per_request == "auto":
            max_documents_per_request = spec.max_documents
        if max_documents_per_request is not None and max_documents_per_request < 1:
            raise ValueError(f"max_documents_per_request must be >= 1 or None, got {max_documents_per_request}")
        self.dialect = spec
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/" + (path or spec.path).lstrip("/")
        self._model = model
        self.family = family if family is not None else _family_of(model)
        self._calibration = get_family(self.family).calibration if self.family is not None else None
        if spec.scores == "raw" and self._calibration is None:
            raise ValueError(
                f"the {dialect} dialect returns raw scores; pass family= (the reranker family the server runs) "
                "so they can be turned into probabilities"
            )
        env_key = os.environ.get(spec.key_env) if spec.key_env and api_key is None else None
        key = api_key if api_key is not None else env_key or None
        self.api_key = key if isinstance(key, SecretStr) or key is None else SecretStr(key)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.extra_body = dict(extra_body or {})
        self.max_documents_per_request = max_documents_per_request
        self._headers = {"Accept": "application/json", **dict(headers or {})}
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._async_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._served_model: str | None = None
        self.requests_sent = 0  # HTTP attempts, retries included
        self.retries = 0

    # -- the Reranker interface ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        """The model that actually answers: learned from the server (an answer's ``model``, ``/health``,
        ``/v1/models``, TEI's ``/info``) on first use, else the configured ``model``."""
        if self._served_model is None:
            self._served_model = self._ask_model() or ""
        return self._served_model or self._model

    @property
    def accepts_instruction(self) -> bool:
        return self.dialect.takes_instruction

    def score(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]:
        """Probabilities in [0, 1] in input order (``raw=True``: the family's raw scores)."""
        parts = self._parts(query, documents, instruction)
        answers = [self._run(self._exchange(body)) for _, _, body in parts]
        return self._scores(parts, answers, raw=raw)

    def rank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, *, instruction: str | None = None
    ) -> list[tuple[int, float]]:
        """(index, probability) best first; ties keep input order, exactly like ``ZerankScorer.rank``."""
        top_n = validate_top_n(top_n)
        return rank_scores(self.score(query, documents, instruction=instruction), top_n)

    async def ascore(
        self, query: str, documents: Sequence[str], *, instruction: str | None = None, raw: bool = False
    ) -> list[float]:
        """``score`` without blocking the event loop; split requests run concurrently."""
        parts = self._parts(query, documents, instruction)
        answers = await asyncio.gather(*(self._arun(self._exchange(body)) for _, _, body in parts))
        return self._scores(parts, list(answers), raw=raw)

    async def arank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, *, instruction: str | None = None
    ) -> list[tuple[int, float]]:
        top_n = validate_top_n(top_n)
        return rank_scores(await self.ascore(query, documents, instruction=instruction), top_n)

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
            f"RemoteScorer(url={self.url!r}, dialect={self.dialect.name!r}, model={self._model!r}, "
            f"family={self.family!r}, api_key={key}, max_retries={self.max_retries})"
        )

    # -- requests and answers -----------------------------------------------------------------------------
    def _parts(
        self, query: str, documents: Sequence[str], instruction: str | None
    ) -> list[tuple[int, int, dict[str, Any]]]:
        """(offset, count, body) per request; validated locally first, exactly like the local scorer."""
        query, docs = validate_query(query), validate_documents(documents)
        instruction = validate_instruction(instruction)
        if instruction is not None and not self.dialect.takes_instruction:
            raise ValueError(f"the {self.dialect.name} dialect has no instruction field; leave instruction out")
        size = self.max_documents_per_request or max(len(docs), 1)
        parts = []
        for start in range(0, len(docs), size):
            chunk = docs[start : start + size]
            body = {**self.extra_body, **self.dialect.build(self._model, query, chunk, instruction)}
            parts.append((start, len(chunk), body))
        return parts

    def _scores(self, parts: list[tuple[int, int, dict[str, Any]]], answers: list[Any], *, raw: bool) -> list[float]:
        scored: list[Scored] = []
        for (offset, count, _), answer in zip(parts, answers, strict=True):
            if isinstance(answer, dict) and isinstance(answer.get("model"), str) and not self._served_model:
                self._served_model = answer["model"]
            scored.extend(_read_results(self.dialect, answer, count, self.url, offset))
        if self.dialect.scores == "raw":
            raws = [s.score for s in scored]
            return raws if raw else [self._calibration.probability(x) for x in raws]
        if not raw:
            return [s.score for s in scored]
        if all(s.raw is not None for s in scored):
            return [float(s.raw) for s in scored]  # type: ignore[arg-type]
        if self._calibration is None:
            raise RawScoresUnavailableError(
                f"raw=True needs raw scores, but {self.url} returned only probabilities and the reranker family "
                "is unknown; pass family= to invert the family's calibration"
            )
        return [self._calibration.raw(s.score) for s in scored]

    def _exchange(self, body: dict[str, Any]) -> Conversation:
        """One request with retries, as a conversation: yields what to do, receives what happened."""
        request = httpx.Request("POST", self.url, json=body, headers=self._request_headers())
        for attempt in range(self.max_retries + 1):
            self._count(attempt)
            outcome = yield _Send(request)
            last = attempt == self.max_retries
            if isinstance(outcome, httpx.TransportError):
                if last:
                    raise RemoteRerankError(
                        f"could not get an answer from {self.url} after {attempt + 1} attempt(s): "
                        f"{type(outcome).__name__}: {outcome}"
                    ) from outcome
                yield _Sleep(self._delay(attempt, None))
                continue
            assert isinstance(outcome, httpx.Response)
            if outcome.status_code in RETRY_STATUSES and not last:
                yield _Sleep(self._delay(attempt, outcome.headers.get("retry-after")))
                continue
            return self._json(outcome, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, conversation: Conversation) -> Any:
        """Carry out a conversation with the sync httpx client and ``time.sleep``."""
        client = self._sync_client()
        step = next(conversation)
        while True:
            if isinstance(step, _Sleep):
                time.sleep(step.seconds)
                result: Any = None
            else:
                try:
                    result = client.send(step.request)
                    result.read()
                except httpx.TransportError as error:
                    result = error
            try:
                step = conversation.send(result)
            except StopIteration as done:
                return done.value

    async def _arun(self, conversation: Conversation) -> Any:
        """Carry out a conversation with this loop's async httpx client and ``asyncio.sleep``."""
        client = self._async_client()
        step = next(conversation)
        while True:
            if isinstance(step, _Sleep):
                await asyncio.sleep(step.seconds)
                result: Any = None
            else:
                try:
                    result = await client.send(step.request)
                    await result.aread()
                except httpx.TransportError as error:
                    result = error
            try:
                step = conversation.send(result)
            except StopIteration as done:
                return done.value

    def _ask_model(self) -> str | None:
        """Ask the server which model it runs: ``/health`` (ours), ``/v1/models`` (vLLM), ``/info`` (TEI)."""
        probes = (("/health", "model"), ("/v1/models", "data"), ("/info", "model_id"))
        client = self._sync_client()
        for path, key in probes:
            try:
                response = client.get(self.base_url + path, headers=self._request_headers(), timeout=5.0)
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                continue
            value = body.get(key) if isinstance(body, dict) else None
            if path == "/health" and isinstance(body, dict):
                self._learn_family(body.get("family"))
            if key == "data" and isinstance(value, list) and value and isinstance(value[0], dict):
                value = value[0].get("id")
            if isinstance(value, str) and value:
                return value
        return None

    def _learn_family(self, family: object) -> None:
        """Our server's ``/health`` names the family its checkpoint was read as: where none was given or known
        by name, its calibration applies from then on (raw scores from probabilities, and back)."""
        if self.family is None and isinstance(family, str) and family in FAMILY_NAMES:
            self.family = family
            self._calibration = get_family(family).calibration

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

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff with jitter in [50%, 100%]; a server's Retry-After (seconds) wins, capped."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.backoff_max_s)
            except ValueError:
                pass  # an HTTP-date: fall back to our own schedule
        delay = min(self.backoff_base_s * (2**attempt), self.backoff_max_s)
        return delay * (0.5 + random.random() / 2)

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


def _error_message(response: httpx.Response) -> str:
    """The server's own words, whatever the dialect: ``error.message``, ``message``, ``detail``, ``error``."""
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
