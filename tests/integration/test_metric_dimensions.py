"""Metrics stay bounded: nothing a client chooses (a model name, a path, a conversation id) becomes
a metric dimension or a metric name; only configured aliases, providers and deployments do."""

from __future__ import annotations

import json

from tests.integration.conftest import chat

DIMENSIONS = {"service", "route", "model", "provider", "deployment"}
MARKER = "client-chosen-7d1f"


def emf(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_client_chosen_names_never_become_dimensions_or_metric_names(gateway, capfd):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    capfd.readouterr()
    for body in (
        chat("hi") | {"model": MARKER},
        chat("hi", conv) | {"model": MARKER},
        chat("hi", stream=True) | {"model": MARKER},
        chat("hi", f"conv_{MARKER}"),
    ):
        assert gateway.post("/v1/chat/completions", body).status_code == 404
    assert gateway.post("/v1/conversations", {"model": MARKER}).status_code == 404
    assert gateway.get(f"/v1/{MARKER}").status_code == 404
    assert gateway.get(f"/v1/conversations/conv_{MARKER}").status_code == 404
    assert gateway.post("/v1/jobs", chat("hi") | {"model": MARKER}).status_code == 404
    assert gateway.post("/v1/chat/completions", chat("hi", conv)).status_code == 200  # a real turn, for contrast

    records = emf(capfd.readouterr().out)
    assert len(records) >= 9
    for record in records:
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                assert set(dimension_set) <= DIMENSIONS, dimension_set
            for metric in directive["Metrics"]:
                assert MARKER not in metric["Name"]
        assert all(MARKER not in str(record.get(d, "")) for d in DIMENSIONS), record
    assert any(r.get("model") == "default" for r in records)  # the resolved alias is a dimension
