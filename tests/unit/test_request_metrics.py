"""Request metrics: EMF when enabled; when disabled, nothing built, validated or printed."""

from __future__ import annotations

import json

from llm_gateway import observability
from llm_gateway.observability import RequestMetrics
from llm_gateway.reports import StreamReport, TurnReport


def one_turn(metrics: RequestMetrics) -> None:
    report = TurnReport(alias="default", provider="openai", deployment="primary", prompt_tokens=3)
    report.stream = StreamReport(0.0)
    metrics.add("Latency", 1.5, "Milliseconds")
    metrics.turn(report)
    metrics.flush()


def test_enabled_metrics_print_the_request_blob_and_the_deployment_blob(monkeypatch, capsys):
    monkeypatch.setattr(observability, "metrics_disabled", lambda: False)
    one_turn(RequestMetrics("api"))
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [sorted(m["Name"] for m in b["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for b in blobs] == [
        ["CompletionTokens", "Latency", "PromptTokens"],
        ["DeploymentAnswered"],
    ]
    assert blobs[0]["route"] == "api" and blobs[0]["model"] == "default" and blobs[1]["deployment"] == "primary"


def test_disabled_metrics_build_nothing_and_print_nothing(monkeypatch, capsys):
    monkeypatch.setattr(observability, "metrics_disabled", lambda: True)
    metrics = RequestMetrics("api")
    assert metrics._metrics is None
    one_turn(metrics)
    assert capsys.readouterr().out == ""
