"""The rerank server as a Ray Serve application (the optional ``ray`` extra): one scorer per replica.

Every replica runs the very app ``zerank-integrations serve`` runs (:func:`~zerank_integrations.serving.app.create_app`:
the same routes, dialects, validation, error shapes, auth, request ids, metrics, tracing and its own
cross-request batcher), so nothing about serving is written twice. Ray Serve adds replica placement (one
GPU per replica through ``ray_actor_options``), a fixed count or autoscaling bounds, and the restart of a
replica that dies.

Each replica counts into its own Prometheus registry. Serve's HTTP proxy sends a scrape of ``/metrics``
to whichever replica it picks, so every replica reports its exposition and ``/health`` counters to a small
``ReplicaHub`` deployment (every second, and whenever it answers a probe), and whichever replica answers
``/metrics`` or ``/health`` answers for all of them: each sample carries a ``replica`` label, and
``/health`` lists per replica what it has served. Reports older than ``STALE_AFTER_S`` (a replica that died)
drop out.

Entry points: ``zerank-integrations serve --engine ray`` (:mod:`~zerank_integrations.serving.ray_engine`),
:func:`application` in Python, and
:func:`build` for ``serve run zerank_integrations.serving.ray_serve:build model=...`` and Serve config files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from zerank_integrations.ray_support import keep_replica_grpc_on_loopback, require_ray

logger = logging.getLogger("zerank_integrations.serving")

APP_NAME = "zerank"
REPORT_EVERY_S = 1.0
HUB_TIMEOUT_S = 5.0
STALE_AFTER_S = 30.0
DEFAULT_MAX_ONGOING_REQUESTS = 256  # per replica: high, so requests reach the replica's batcher and share passes
_FEATURE = "serve --engine ray"
APP_SETTINGS = (
    "max_request_bytes",
    "max_documents",
    "batch_wait_ms",
    "max_batch_pairs",
    "max_queued_requests",
    "max_json_depth",
    "max_concurrent_requests",
)


class RayCluster:
    """The app's ``cluster`` on a Ray replica: reports this replica to the hub, answers for all of them."""

    engine = "ray"
    proxy_sets_request_id = True  # Serve's proxy forwards the client's X-Request-Id (or its own) and echoes it

    def __init__(self, hub: Any, replica_id: str) -> None:
        self.hub = hub
        self.replica_id = replica_id
        self._snapshot: Callable[[], tuple[dict[str, Any], bytes]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, snapshot: Callable[[], tuple[dict[str, Any], bytes]]) -> None:
        """Report every ``REPORT_EVERY_S`` from the app's event loop until :meth:`stop`."""
        self._snapshot = snapshot
        self._task = asyncio.get_running_loop().create_task(self._report_forever(), name="zerank-ray-report")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._report()  # the last counts outlive this replica (unless the hub is going away too)

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            await self._report()

    async def _report(self) -> None:
        if self._snapshot is None:
            return
        health, exposition = self._snapshot()
        try:
            call = self.hub.report.remote(self.replica_id, exposition.decode(), _served(health))
            await asyncio.wait_for(asyncio.ensure_future(_awaited(call)), HUB_TIMEOUT_S)
        except Exception as error:  # the hub restarts with the app; the next report fills it again
            logger.debug("replica %s: report to the hub failed: %s", self.replica_id, error)

    async def _reports(self) -> dict[str, tuple[str, dict[str, Any]]]:
        await self._report()
        call = self.hub.snapshot.remote()
        return await asyncio.wait_for(asyncio.ensure_future(_awaited(call)), HUB_TIMEOUT_S)

    async def health(self, local: dict[str, Any]) -> dict[str, Any]:
        try:
            reports = await self._reports()
        except Exception as error:  # the hub is restarting: say so, answer with this replica alone
            return {**local, "replica": self.replica_id, "replicas": None, "replicas_error": type(error).__name__}
        return {**local, "replica": self.replica_id, "replicas": {rid: served for rid, (_, served) in reports.items()}}

    async def metrics(self, local: bytes) -> bytes:
        from zerank_integrations.serving.metrics import merge_replicas

        try:
            reports = await self._reports()
        except Exception:  # the hub is restarting: this replica's own metrics, labelled as such
            return merge_replicas({self.replica_id: local.decode()})
        return merge_replicas({rid: text for rid, (text, _) in reports.items()})


async def _awaited(response: Any) -> Any:
    return await response


def _served(health: Mapping[str, Any]) -> dict[str, Any]:
    """What ``/health`` lists per replica: readiness and what its batcher has served."""
    batcher = health.get("batcher") or {}
    return {
        "ready": health.get("ready"),
        "requests": batcher.get("requests", 0),
        "pairs": batcher.get("pairs", 0),
        "batches": batcher.get("batches", 0),
        "largest_batch_requests": batcher.get("largest_batch_requests", 0),
        "queued": health.get("queued", 0),
    }


class _ReplicaHub:
    """One tiny replica (no CPU reserved) holding each rerank replica's latest exposition and counters."""

    def __init__(self) -> None:
        keep_replica_grpc_on_loopback()
        self.reports: dict[str, tuple[float, str, dict[str, Any]]] = {}

    def report(self, replica_id: str, exposition: str, served: dict[str, Any]) -> None:
        self.reports[replica_id] = (time.monotonic(), exposition, served)

    def snapshot(self) -> dict[str, tuple[str, dict[str, Any]]]:
        now = time.monotonic()
        for rid in [rid for rid, (at, _, _) in self.reports.items() if now - at > STALE_AFTER_S]:
            del self.reports[rid]
        return {rid: (text, served) for rid, (_, text, served) in self.reports.items()}


class _RerankReplica:
    """One Serve replica: loads its scorer, then serves ``create_app`` over it (Serve runs the app's lifespan)."""

    def __init__(
        self,
        model: str,
        scorer_options: dict[str, Any],
        app_settings: dict[str, Any],
        hub: Any,
        api_key: SecretStr | None = None,
        ledger_llm: str | None = None,
        observability: dict[str, Any] | None = None,
    ) -> None:
        from ray import serve

        from zerank_integrations import ZerankScorer

        keep_replica_grpc_on_loopback()
        from zerank_integrations.serving.logs import configure_logging

        seen = dict(observability or {})
        configure_logging(seen.get("log_level", "info"), seen.get("log_format", "text"), "zerank_integrations")
        self.otlp_endpoint = seen.get("otlp_endpoint")

        self.scorer = ZerankScorer(model, **scorer_options)
        self.app_settings = dict(app_settings)
        self.api_key = api_key or (
            SecretStr(os.environ["ZERANK_API_KEY"]) if os.environ.get("ZERANK_API_KEY") else None
        )
        self.ledger_llm = ledger_llm
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.cluster = RayCluster(hub, self.replica_id)
        self.rerank_app: Any = None

    def __serve_build_asgi_app__(self) -> Any:
        from zerank_integrations.serving.app import create_app

        ledger = None
        if self.ledger_llm:
            from zerank_integrations.accounting import TokenLedger

            ledger = TokenLedger(llm=self.ledger_llm, max_records=0)
        provider = None
        if self.otlp_endpoint:
            from zerank_integrations.serving.tracing import otlp_tracer_provider

            provider = otlp_tracer_provider(self.otlp_endpoint, service_name=f"zerank-rerank-{self.replica_id}")
        self.rerank_app = create_app(
            self.scorer,
            api_key=self.api_key,
            warm_up=True,
            ledger=ledger,
            cluster=self.cluster,
            tracer_provider=provider,
            **self.app_settings,
        )
        return self.rerank_app

    def check_health(self) -> None:
        """Serve's periodic health check: a replica whose batcher stopped is restarted."""
        batcher = getattr(getattr(self.rerank_app, "state", None), "batcher", None)
        if batcher is not None and batcher.closed:
            raise RuntimeError("the batcher has stopped")


def application(
    model: str,
    *,
    scorer_options: Mapping[str, Any] | None = None,
    app_settings: Mapping[str, Any] | None = None,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    replica_cpus: float = 1.0,
    replica_gpus: float | None = None,
    api_key: str | SecretStr | None = None,
    ledger_llm: str | None = None,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    log_format: str = "text",
    log_level: str = "info",
    otlp_endpoint: str | None = None,
) -> Any:
    """The Ray Serve ``Application``: ``replicas`` scorers (or ``min_replicas``..``max_replicas``, autoscaled).

    ``replica_gpus`` defaults to 1 when ``scorer_options["device"]`` is CUDA (one GPU per replica), else 0.
    ``app_settings`` are ``create_app``'s limits (``max_documents``, ``batch_wait_ms``, ...). Each replica
    logs one line per request (``log_format`` text or json) and, with ``otlp_endpoint``, exports spans.
    ``max_ongoing_requests`` is Serve's per-replica cap: keep it high so concurrent requests reach the
    replica's batcher and share forward passes (``max_concurrent_requests`` in ``app_settings`` is the
    429 bound).
    """
    serve = require_ray(_FEATURE, "ray.serve")
    options = dict(scorer_options or {})
    settings = dict(app_settings or {})
    unknown = set(settings) - set(APP_SETTINGS)
    if unknown:
        raise ValueError(f"unknown app settings {sorted(unknown)}; expected some of {', '.join(APP_SETTINGS)}")
    if replicas is not None and (min_replicas is not None or max_replicas is not None):
        raise ValueError("give a fixed number of replicas or autoscaling bounds (min/max replicas), not both")
    for name, value in (("replicas", replicas), ("min_replicas", min_replicas), ("max_replicas", max_replicas)):
        if value is not None and value < (0 if name == "min_replicas" else 1):
            raise ValueError(f"{name} must be >= {0 if name == 'min_replicas' else 1}, got {value}")
    resources = replica_resources(options, replica_cpus, replica_gpus)
    deployment_options: dict[str, Any] = {
        "name": "RerankReplica",
        "ray_actor_options": {"num_cpus": resources["CPU"], "num_gpus": resources["GPU"]},
        "max_ongoing_requests": max_ongoing_requests,
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": 10,
        "logging_config": {"enable_access_log": False},  # the app logs one line per request itself
    }
    if min_replicas is not None or max_replicas is not None:
        low = min_replicas if min_replicas is not None else 1
        high = max_replicas if max_replicas is not None else max(low, 1)
        if high < low:
            raise ValueError(f"max_replicas ({high}) is below min_replicas ({low})")
        deployment_options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": max(1, max_ongoing_requests // 4),
        }
    else:
        deployment_options["num_replicas"] = replicas or 1
    hub = serve.deployment(
        _ReplicaHub,
        name="ReplicaHub",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        logging_config={"enable_access_log": False},
    )
    replica = serve.deployment(serve.ingress()(_RerankReplica), **deployment_options)
    secret = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
    observability = {"log_format": log_format, "log_level": log_level, "otlp_endpoint": otlp_endpoint}
    return replica.bind(model, options, settings, hub.bind(), secret, ledger_llm, observability)


def replica_resources(
    scorer_options: Mapping[str, Any], replica_cpus: float = 1.0, replica_gpus: float | None = None
) -> dict[str, float]:
    """What one rerank replica reserves: ``replica_cpus`` CPUs and ``replica_gpus`` GPUs (default: one GPU
    when the scorer's device is CUDA, else none)."""
    if replica_gpus is None:
        replica_gpus = 1.0 if str(scorer_options.get("device") or "").startswith("cuda") else 0.0
    return {"CPU": float(replica_cpus), "GPU": float(replica_gpus)}


def build(args: dict[str, Any]) -> Any:
    """Application builder for ``serve run zerank_integrations.serving.ray_serve:build model=...`` and config files.

    Keys: ``model`` (required), the scorer options (``device``, ``dtype``, ``max_length``, ``batch_tokens``,
    ``revision``, ``local_files_only``), the app limits of :func:`application`, ``replicas`` or
    ``min_replicas``/``max_replicas``, ``replica_cpus``, ``replica_gpus``, ``ledger_llm``, ``log_format``,
    ``log_level``, ``otlp_endpoint``. The API key
    comes from ``$ZERANK_API_KEY`` on the replicas (never from the config file).
    """
    values = dict(args)
    if not values.get("model"):
        raise ValueError("the Serve config needs args.model (a Hugging Face id or a local checkpoint path)")
    model = str(values.pop("model"))
    scorer_keys = ("device", "dtype", "max_length", "batch_tokens", "revision", "local_files_only", "cache_size")
    scorer_options = {key: values.pop(key) for key in scorer_keys if key in values}
    app_settings = {key: values.pop(key) for key in APP_SETTINGS if key in values}
    counts = {key: _int(values.pop(key)) for key in ("replicas", "min_replicas", "max_replicas") if key in values}
    extra = {key: float(values.pop(key)) for key in ("replica_cpus", "replica_gpus") if key in values}
    ledger_llm = values.pop("ledger_llm", None)
    observability = {key: str(values.pop(key)) for key in ("log_format", "log_level", "otlp_endpoint") if key in values}
    if values:
        raise ValueError(f"unknown Serve config args {sorted(values)}")
    return application(
        model,
        scorer_options=scorer_options,
        app_settings=app_settings,
        ledger_llm=ledger_llm,
        **counts,
        **extra,
        **observability,
    )


def _int(value: Any) -> int:
    return int(value)
