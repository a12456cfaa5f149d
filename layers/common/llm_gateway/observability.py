"""Powertools Logger and Metrics, the way every entry point uses them.

* Logs are JSON with the request id as correlation id. They carry ids, counts,
  statuses and timings — never prompts, replies or keys. ``LOG_PROMPTS`` (off by default) is
  the one exception: the router then logs each request's prompt at DEBUG, secrets redacted
  (``redaction.prompt_lines``); replies are never logged.
* Per-request and per-invocation keys (the correlation id, the worker's Lambda context)
  live in a context variable the formatter reads (Powertools' thread-safe keys), never in
  the logger's process-wide keys: one process serving many requests at once (uvicorn, the
  local stack's API beside its worker, a container) logs each line with its own request's
  keys. Each ASGI request runs in its own task (its own context, copied into the threads it
  starts); a worker invocation runs in a context of its own (:func:`per_invocation_logging`).
* Metrics are EMF, one :class:`EphemeralMetrics` per request (no state shared between
  concurrent requests), flushed when the request ends. Dimensions are bounded: the
  service, the model alias only once it has been resolved against configuration, and
  the provider of the deployment that answered. Which deployment answered (a name from
  configuration, so also bounded) is a separate ``DeploymentAnswered`` metric with
  dimensions model + deployment, and metadata on the request's record.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from llm_gateway.reports import StreamReport, TurnReport
from llm_gateway.settings import get_settings

logger = Logger(service=get_settings().powertools_service_name)


def request_log_keys(**keys: Any) -> None:
    """Keys on every log line of the current request (its task and the threads it starts) only."""
    logger.thread_safe_append_keys(**keys)


_cold_start = [True]


def per_invocation_logging(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``inject_lambda_context`` for handlers that share a process with other work: the Lambda
    context keys (``function_name``, ``function_request_id``, ``cold_start``, ...) and the
    correlation id (the invocation's request id) are on this invocation's lines only."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        return contextvars.copy_context().run(_invoke, handler, event, context)

    return wrapper


def _invoke(handler: Callable[[Any, Any], Any], event: Any, context: Any) -> Any:
    cold_start, _cold_start[0] = _cold_start[0], False
    keys = build_lambda_context_model(context).__dict__
    request_log_keys(cold_start=cold_start, correlation_id=context.aws_request_id, **keys)
    return handler(event, context)


@functools.lru_cache(maxsize=1)
def metrics_disabled() -> bool:
    """``POWERTOOLS_METRICS_DISABLED`` (or ``POWERTOOLS_DEV``), read once per container."""
    return is_metrics_disabled()


class RequestMetrics:
    """One request's metrics. Disabled (``POWERTOOLS_METRICS_DISABLED``), every method returns at
    once: no Powertools object per request, nothing validated or serialised."""

    def __init__(self, route: str) -> None:
        self._metrics: EphemeralMetrics | None = None
        if not metrics_disabled():
            settings = get_settings()
            self._metrics = EphemeralMetrics(
                namespace=settings.powertools_metrics_namespace, service=settings.powertools_service_name
            )
        self._route = route  # a dimension, added when flushed (a router may name its route)
        self._deployment: tuple[str, str] | None = None

    def route(self, name: str) -> None:
        """Name the route dimension (a bounded name chosen by code, never by the client)."""
        self._route = name

    def add(self, name: str, value: float, unit: str | MetricUnit = MetricUnit.Count) -> None:
        if self._metrics is not None:
            self._metrics.add_metric(name=name, unit=unit, value=value)

    def model(self, alias: str) -> None:
        if self._metrics is not None:
            self._metrics.add_dimension("model", alias)

    def turn(self, report: TurnReport, *, model_dimension: bool = True) -> None:
        """Everything a chat turn reports, upstream errors by bounded class.

        ``model_dimension=False`` when one metrics object aggregates turns of several models
        (a worker batch): a blob has one set of dimensions.
        """
        if self._metrics is None:
            return
        if report.alias and model_dimension:
            self.model(report.alias)
        if report.provider:
            self._metrics.add_dimension("provider", report.provider)
        if report.deployment:
            self._metrics.add_metadata("deployment", report.deployment)
            self._deployment = (report.alias, report.deployment)
        stats = report.stats
        if stats.attempts:
            self.add("UpstreamLatency", stats.upstream_seconds * 1000, MetricUnit.Milliseconds)
            self.add("UpstreamAttempts", stats.attempts)
            self.add("Retries", stats.retries)
        for error_class, count in stats.errors.items():
            self.add(f"UpstreamErrors_{error_class}", count)
        if stats.fallbacks:
            self.add("Fallbacks", stats.fallbacks)
        if stats.cooled_down:
            self.add("DeploymentsCoolingDown", stats.cooled_down)
        if report.prompt_tokens or report.completion_tokens:
            self.add("PromptTokens", report.prompt_tokens)
            self.add("CompletionTokens", report.completion_tokens)
        if report.usage_replaced:
            self.add("UpstreamUsageReplaced", 1)
        if report.cost_usd:
            self.add("CostMicroUSD", round(report.cost_usd * 1e6, 3))
        if report.conversation:
            self.add("HistoryMessages", report.history_messages)
            self.add("HistoryItemsRead", report.history_items_read)
            if report.history_cache_hit is not None:
                self.add("HistoryCacheHits" if report.history_cache_hit else "HistoryCacheMisses", 1)
        if report.stream is not None:
            self.stream(report.stream)

    def stream(self, stream: StreamReport) -> None:
        """Time to first chunk/token, duration, chunks, and the outcome as a bounded metric name."""
        if self._metrics is None:
            return
        if stream.first_chunk_ms is not None:
            self.add("TimeToFirstChunk", round(stream.first_chunk_ms, 2), MetricUnit.Milliseconds)
        if stream.first_token_ms is not None:
            self.add("TimeToFirstToken", round(stream.first_token_ms, 2), MetricUnit.Milliseconds)
        if stream.outcome is None:  # the stream never began: an ordinary HTTP error was sent
            return
        if stream.duration_ms is not None:
            self.add("StreamDuration", round(stream.duration_ms, 2), MetricUnit.Milliseconds)
        self.add("StreamChunks", stream.chunks)
        self.add(f"StreamOutcome_{stream.outcome}", 1)

    def flush(self) -> None:
        if self._metrics is None:
            return
        self._metrics.add_dimension("route", self._route)
        self._metrics.flush_metrics()
        if self._deployment is not None:
            settings = get_settings()
            answered = EphemeralMetrics(
                namespace=settings.powertools_metrics_namespace, service=settings.powertools_service_name
            )
            answered.add_dimension("model", self._deployment[0])
            answered.add_dimension("deployment", self._deployment[1])
            answered.add_metric(name="DeploymentAnswered", unit=MetricUnit.Count, value=1)
            answered.flush_metrics()
