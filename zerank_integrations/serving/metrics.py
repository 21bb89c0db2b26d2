"""Prometheus metrics for the rerank server: one registry per app, names prefixed ``zerank_``.

Each app owns its own ``CollectorRegistry`` (never prometheus-client's global one), so several apps in one
process (tests, a Ray replica beside its metrics hub) never collide, and ``GET /metrics`` shows exactly
what that app served. What is counted where:

- the outermost app layer counts *every* response (``zerank_requests_total{route, dialect, status}``) and
  times it (``zerank_request_duration_seconds``); a client that left before any answer counts as 499;
- each scored request adds its queue, tokenization and model phases, its documents
  (``zerank_pairs_scored_total``) and the prompt tokens selection kept and saved (with a ledger);
- each batch the model thread runs adds its size in pairs and tokens, the tokens computed (padding
  included), the forward passes and the score-cache hits and misses, from the scorer's counters.

:func:`merge_replicas` turns several replicas' expositions into one, each sample labelled with its
``replica``: what the Ray engine serves on ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a cache hit (~1 ms) to a large CPU request (tens of seconds).
_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PAIR_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_TOKEN_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class ServerMetrics:
    """Every metric one app exposes, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "zerank_requests", "HTTP responses, every route and status", ["route", "dialect", "status"], registry=r
        )
        self.duration = Histogram(
            "zerank_request_duration_seconds",
            "time from the request's arrival to its answer, every response",
            ["route", "dialect"],
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "zerank_queue_duration_seconds",
            "time a scored request waited for the model thread",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.tokenize = Histogram(
            "zerank_tokenize_duration_seconds",
            "time spent preparing a request's pairs in the model thread (per-request document cuts)",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.model = Histogram(
            "zerank_model_duration_seconds",
            "time of the scoring call a request was part of (the core's tokenization and forward passes)",
            buckets=_TIME_BUCKETS,
            registry=r,
        )
        self.batch_pairs = Histogram(
            "zerank_batch_pairs", "pairs per scoring call across requests", buckets=_PAIR_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "zerank_batch_requests", "requests sharing one scoring call", buckets=_PAIR_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "zerank_batch_tokens", "token slots computed per scoring call", buckets=_TOKEN_BUCKETS, registry=r
        )
        self.queue_length = Gauge("zerank_queue_length", "requests waiting for the model thread", registry=r)
        self.in_flight = Gauge("zerank_requests_in_flight", "rerank requests being handled now", registry=r)
        self.ready = Gauge("zerank_ready", "1 when /ready answers 200", registry=r)
        self.pairs_scored = Counter("zerank_pairs_scored", "documents scored (one per document answered)", registry=r)
        self.prompt_tokens = Counter(
            "zerank_prompt_tokens", "prompt tokens the model read for answered requests", registry=r
        )
        self.tokens_computed = Counter(
            "zerank_tokens_computed", "token slots the model computed, padding included", registry=r
        )
        self.forward_passes = Counter("zerank_forward_passes", "forward passes run", registry=r)
        self.cache_hits = Counter("zerank_score_cache_hits", "distinct pairs answered from the score cache", registry=r)
        self.cache_misses = Counter(
            "zerank_score_cache_misses", "distinct pairs the model scored with a cache configured", registry=r
        )
        self.selection_in = Counter(
            "zerank_selection_tokens_in", "LLM prompt tokens of every candidate (with a ledger)", registry=r
        )
        self.selection_kept = Counter(
            "zerank_selection_tokens_kept", "LLM prompt tokens of the kept documents (with a ledger)", registry=r
        )
        self.selection_saved = Counter(
            "zerank_selection_tokens_saved", "LLM prompt tokens selection removed (with a ledger)", registry=r
        )
        self.model_info = Gauge(
            "zerank_model_info",
            "the served model (value 1)",
            ["model", "revision", "family", "device", "dtype"],
            registry=r,
        )

    def describe_model(self, scorer: Any, model_name: str) -> None:
        """Set ``zerank_model_info`` from whatever the scorer tells about itself."""
        self.model_info.clear()
        self.model_info.labels(
            model=model_name,
            revision=str(getattr(scorer, "revision", None) or ""),
            family=str(getattr(scorer, "family", None) or ""),
            device=str(getattr(scorer, "device", None) or ""),
            dtype=str(getattr(scorer, "dtype", None) or "").removeprefix("torch."),
        ).set(1)

    def watch(self, queued: Callable[[], float]) -> None:
        self.queue_length.set_function(queued)

    def observe_batch(self, requests: int, pairs: int, work: Mapping[str, int]) -> None:
        """One scoring call by the model thread; ``work`` is the scorer's counters' change during it."""
        self.batch_requests.observe(requests)
        self.batch_pairs.observe(pairs)
        computed = int(work.get("computed_tokens", 0))
        self.batch_tokens.observe(computed)
        self.tokens_computed.inc(computed)
        self.forward_passes.inc(int(work.get("forward_passes", 0)))
        self.cache_hits.inc(int(work.get("cache_hits", 0)))
        self.cache_misses.inc(int(work.get("cache_misses", 0)))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def merge_replicas(expositions: Mapping[str, str]) -> bytes:
    """One exposition from several replicas' (``{replica id: text}``), each sample labelled ``replica``.

    The ``_created`` timestamps of counters and histograms are left out: they describe one replica's process.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(expositions))
    return generate_latest(registry)


class _Merged:
    def __init__(self, expositions: Mapping[str, str]) -> None:
        self.expositions = expositions

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for replica, text in sorted(self.expositions.items()):
            for family in text_string_to_metric_families(text):
                if family.name.endswith("_created"):
                    continue
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    merged.add_sample(sample.name, {**sample.labels, "replica": replica}, sample.value)
        yield from families.values()
