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

    def turn(self, report: TurnReport, *, model_dimension: bool = True) -> None:
        """Everything a chat turn reports, upstream errors by bounded class.

        ``model_dimension=False`` when one metrics object aggregates turns of several models
        (a worker batch): a blob has one set of dimensions.
        """
        if report.alias and model_dimension:
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

    def flush(self) -> None:
        self._metrics.flush_metrics()
