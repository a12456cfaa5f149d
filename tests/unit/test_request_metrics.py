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


def without_timestamp(blob: dict) -> dict:
    return {**blob, "_aws": {k: v for k, v in blob["_aws"].items() if k != "Timestamp"}}


def test_the_blob_is_what_powertools_own_metrics_object_prints(monkeypatch, capsys):
    """The same metrics, dimensions and metadata through a Powertools ``EphemeralMetrics`` (what each
    request used to build) give the same EMF blob, key for key and in the same order."""
    from aws_lambda_powertools.metrics import EphemeralMetrics

    monkeypatch.setattr(observability, "metrics_disabled", lambda: False)
    one_turn(RequestMetrics("api"))
    ours = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    provider = observability.emf()
    reference = EphemeralMetrics(namespace=provider.namespace, service=provider.service)
    reference.add_metric(name="Latency", unit="Milliseconds", value=1.5)
    reference.add_dimension("model", "default")
    reference.add_dimension("provider", "openai")
    reference.add_metadata("deployment", "primary")
    reference.add_metric(name="PromptTokens", unit="Count", value=3)
    reference.add_metric(name="CompletionTokens", unit="Count", value=0)
    reference.add_dimension("route", "api")
    answered = EphemeralMetrics(namespace=provider.namespace, service=provider.service)
    answered.add_dimension("model", "default")
    answered.add_dimension("deployment", "primary")
    answered.add_metric(name="DeploymentAnswered", unit="Count", value=1)
    want = [reference.serialize_metric_set(), answered.serialize_metric_set()]
    assert [without_timestamp(b) for b in ours] == [without_timestamp(json.loads(json.dumps(b))) for b in want]
    assert [list(b) for b in ours] == [list(b) for b in want]


def test_a_full_metric_set_is_printed_at_100_values_as_powertools_does(monkeypatch, capsys):
    monkeypatch.setattr(observability, "metrics_disabled", lambda: False)
    metrics = RequestMetrics("worker")
    for i in range(150):
        metrics.add("UpstreamLatency", i, "Milliseconds")
    metrics.flush()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(b["UpstreamLatency"]) for b in blobs] == [100, 50]
    assert blobs[1]["UpstreamLatency"][-1] == 149.0 and blobs[0]["route"] == blobs[1]["route"] == "worker"
