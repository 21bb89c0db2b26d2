"""OpenTelemetry traces for the rerank server (the optional ``tracing`` extra).

Each HTTP request is one server span, the child of the client's W3C ``traceparent`` when it sends one; a
scored request gets three children, ``queue``, ``tokenize`` and ``model``, placed at the times the batcher
recorded (the model thread serves many requests at once, so the spans are written after the fact with their
real start and end). Counts (documents, tokens, batch size) are span attributes; no text ever is.

Without a tracer provider every call here is a no-op and OpenTelemetry is never imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zerank_integrations.serving.batcher import JobTimes

TRACING_INSTALL_HINT = 'pip install "zerank-integrations[tracing]"'
_SCOPE = "zerank_integrations.serving"


class RequestTracer:
    """Starts request spans on ``provider`` (an OpenTelemetry ``TracerProvider``), or does nothing without one."""

    def __init__(self, provider: Any | None) -> None:
        self.enabled = provider is not None
        self._provider = provider
        if not self.enabled:
            return
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self._tracer = provider.get_tracer(_SCOPE)

    def start(self, name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> Any | None:
        """The request's server span (parent: the ``traceparent`` header, if any), started now."""
        if not self.enabled:
            return None
        parent = self._propagate.extract(carrier=dict(headers))
        return self._tracer.start_span(
            name, context=parent, kind=self._trace.SpanKind.SERVER, attributes=dict(attributes)
        )

    def phases(self, span: Any | None, times: JobTimes) -> None:
        """``queue``, ``tokenize`` and ``model`` child spans of ``span`` at the batcher's recorded times."""
        if span is None or not times.scored_ns:
            return
        context = self._trace.set_span_in_context(span)
        batch = {"zerank.batch.requests": times.batch_requests, "zerank.batch.pairs": times.batch_pairs}
        for name, start, end in (
            ("queue", times.enqueued_ns, times.started_ns),
            ("tokenize", times.started_ns, times.prepared_ns),
            ("model", times.model_started_ns, times.scored_ns),
        ):
            child = self._tracer.start_span(
                name, context=context, start_time=start, attributes=batch if name == "model" else None
            )
            child.end(end_time=max(start, end))

    def flush(self, timeout_s: float = 5.0) -> None:
        """Export the spans still buffered (shutdown: the process may end by a re-raised signal, skipping atexit)."""
        flush = getattr(self._provider, "force_flush", None)
        if callable(flush):
            flush(int(timeout_s * 1000))

    @staticmethod
    def finish(span: Any | None, status: int, attributes: Mapping[str, Any]) -> None:
        if span is None:
            return
        span.set_attribute("http.response.status_code", status)
        for key, value in attributes.items():
            if value is not None:
                span.set_attribute(key, value)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR))
        span.end()


def otlp_tracer_provider(endpoint: str, service_name: str = "zerank-rerank") -> Any:
    """A ``TracerProvider`` exporting spans in batches to the OTLP/gRPC collector at ``endpoint``."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as error:
        raise RuntimeError(
            f"tracing needs OpenTelemetry ({error.name} is not installed): {TRACING_INSTALL_HINT}"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider
