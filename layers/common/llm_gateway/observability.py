"""Powertools Logger and Metrics, the way every entry point uses them.

* Logs are JSON with the request id as correlation id. They carry ids, counts,
  statuses and timings — never prompts, replies or keys (``LOG_PROMPTS`` is the only
  switch that would, and it is off by default).
* Metrics are EMF, one :class:`EphemeralMetrics` per request (no state shared between
  concurrent requests), flushed when the request ends. Dimensions are bounded: the
  service, and the model alias only once it has been resolved against configuration.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from .service import TurnReport
from .settings import get_settings
from .streaming import StreamReport

logger = Logger(service=get_settings().powertools_service_name)


class RequestMetrics:
    def __init__(self, route: str) -> None:
        settings = get_settings()
        self._metrics = EphemeralMetrics(
            namespace=settings.powertools_metrics_namespace, service=settings.powertools_service_name
        )
        self._metrics.add_dimension("route", route)

    def add(self, name: str, value: float, unit: str = MetricUnit.Count) -> None:
        self._metrics.add_metric(name=name, unit=unit, value=value)

    def model(self, alias: str) -> None:
        self._metrics.add_dimension("model", alias)

    def turn(self, report: TurnReport) -> None:
        """Everything a chat turn reports, upstream errors by bounded class."""
        if report.alias:
            self.model(report.alias)
        stats = report.stats
        if stats.attempts:
            self.add("UpstreamLatency", stats.upstream_seconds * 1000, MetricUnit.Milliseconds)
            self.add("UpstreamAttempts", stats.attempts)
            self.add("Retries", stats.retries)
        for error_class, count in stats.errors.items():
            self.add(f"UpstreamErrors_{error_class}", count)
        if report.prompt_tokens or report.completion_tokens:
            self.add("PromptTokens", report.prompt_tokens)
            self.add("CompletionTokens", report.completion_tokens)
        if report.cost_usd:
            self.add("CostMicroUSD", round(report.cost_usd * 1e6, 3))
        if report.conversation:
            self.add("HistoryMessages", report.history_messages)
            self.add("HistoryItemsRead", report.history_items_read)
        if report.stream is not None:
            self.stream(report.stream)

    def stream(self, stream: StreamReport) -> None:
        """Time to first chunk/token, duration, chunks, and the outcome as a bounded metric name."""
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
        self._metrics.flush_metrics()
