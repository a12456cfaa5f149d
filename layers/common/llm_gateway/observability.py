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
* Metrics are EMF, one metric set per request (no state shared between concurrent requests),
  printed by Powertools' EMF provider when the request ends (:class:`RequestMetrics`). Dimensions are bounded: the
  service, the model alias only once it has been resolved against configuration, and
  the provider of the deployment that answered. Which deployment answered (a name from
  configuration, so also bounded) is a separate ``DeploymentAnswered`` metric with
  dimensions model + deployment, and metadata on the request's record.
"""

from __future__ import annotations

import contextvars
import functools
import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.lambda_context import build_lambda_context_model
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

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


@functools.lru_cache(maxsize=1)
def emf() -> AmazonCloudWatchEMFProvider:
    """The process's one Powertools EMF provider: it writes every blob (its ``serialize_metric_set``,
    given each request's own metrics, dimensions and metadata), and holds none of a request's state."""
    settings = get_settings()
    return AmazonCloudWatchEMFProvider(
        namespace=settings.powertools_metrics_namespace, service=settings.powertools_service_name
    )


@functools.lru_cache(maxsize=64)
def _unit(unit: str | MetricUnit) -> str:
    return MetricUnit(unit).value  # a name chosen by code: a wrong one fails in every test


class RequestMetrics:
    """One request's metrics, printed as one EMF blob when it ends (:meth:`flush`).

    The metric set is Powertools' own shape (``{"Name": {"Unit", "StorageResolution", "Value": [..]}}``),
    kept per request (no state shared between concurrent requests) and written by the shared
    :func:`emf` provider: a Powertools metrics object per request re-lists the metric units when
    built, validates every value and formats a debug line for it (~0.4 ms a request here). Metric
    names, units and dimensions are chosen by code, so each is not validated again per value. As
    Powertools does, a metric set reaching 100 metrics or 100 values of one is printed at once.
    Disabled (``POWERTOOLS_METRICS_DISABLED``), every method returns at once."""

    def __init__(self, route: str) -> None:
        self._metrics: dict[str, dict[str, Any]] | None = None if metrics_disabled() else {}
        self._dimensions: dict[str, str] = {}
        self._metadata: dict[str, Any] = {}
        self._route = route  # a dimension, added when flushed (a router may name its route)
        self._deployment: tuple[str, str] | None = None

    def route(self, name: str) -> None:
        """Name the route dimension (a bounded name chosen by code, never by the client)."""
        self._route = name

    def add(self, name: str, value: float, unit: str | MetricUnit = MetricUnit.Count) -> None:
        if self._metrics is None:
            return
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = {"Unit": _unit(unit), "StorageResolution": 60, "Value": []}
        metric["Value"].append(float(value))
        if len(self._metrics) == MAX_METRICS or len(metric["Value"]) == MAX_METRICS:
            self._print(self._metrics, self._dimensions_now(), self._metadata)
            self._metrics = {}

    def model(self, alias: str) -> None:
        if self._metrics is not None and alias:
            self._dimensions["model"] = alias

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
            self._dimensions["provider"] = report.provider
        if report.deployment:
            self._metadata["deployment"] = report.deployment
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
        if self._metrics:
            self._print(self._metrics, self._dimensions_now(), self._metadata)
        self._metrics = {}
        if self._deployment is not None:
            answered = {"DeploymentAnswered": {"Unit": "Count", "StorageResolution": 60, "Value": [1.0]}}
            model, deployment = self._deployment
            self._print(answered, {"model": model, "deployment": deployment, "service": emf().service}, {})
            self._deployment = None

    def _dimensions_now(self) -> dict[str, str]:
        return {**self._dimensions, "route": self._route, "service": emf().service}

    @staticmethod
    def _print(metrics: dict[str, Any], dimensions: dict[str, str], metadata: dict[str, Any]) -> None:
        blob = emf().serialize_metric_set(metrics=metrics, dimensions=dimensions, metadata=metadata)
        print(json.dumps(blob, separators=(",", ":")))  # as Powertools' flush_metrics prints it
