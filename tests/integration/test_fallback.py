"""Fallback, cooldown and the budget across the chain, through the HTTP API (moto server + `responses`).

The fake upstream server (local/fake_upstream.py) is not on main yet, so the two
upstreams are `responses` mocks at two hosts, as in tests/integration/conftest.py.
"""

from __future__ import annotations

import json
import time

import pytest
import responses

from llm_gateway.keys import encrypt_key
from tests.integration.conftest import echo_reply, make_gateway

PRIMARY = "http://primary.test/v1"
SECONDARY = "http://secondary.test/v1"
SECONDARY_KEY = "sk-secondary-KEY-4242"


def routing(**secondary) -> str:
    return json.dumps({"version": 1, "aliases": {"default": {"deployments": [
        {"name": "primary", "provider": "openai_compatible", "model": "p-model", "base_url": PRIMARY},
        {"name": "secondary", "provider": "openai_compatible", "model": "s-model", "base_url": SECONDARY,
         "key_ref": "secondary-key", "input_price_per_1m": 2.0, "output_price_per_1m": 10.0, **secondary},
    ]}}})


def unavailable(request):
    return 503, {}, json.dumps({"error": {"message": "overloaded", "type": "server_error"}})


def emf_records(text: str) -> list[dict]:
    """EMF blobs printed by Powertools, with single-value metric lists unwrapped."""
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]
    return [{k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in r.items()} for r in records]


@pytest.fixture
def mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as m:
        m.add_passthru("http://127.0.0.1")
        m.add_callback(responses.POST, f"{PRIMARY}/chat/completions", callback=unavailable)
        m.add_callback(responses.POST, f"{SECONDARY}/chat/completions", callback=echo_reply)
        yield m


def gateway_for(aws, mock, key_context: str = "secondary", **overrides):
    ciphertext = encrypt_key(SECONDARY_KEY, key_context, aws.res.kms_key_id, aws.client("kms"))
    gw = make_gateway(aws, routing_config=routing(), provider_keys=json.dumps({"secondary-key": ciphertext}),
                      **overrides)
    gw.upstream = mock
    return gw


def calls_to(mock, base: str) -> list:
    return [c for c in mock.calls if c.request.url.startswith(base)]


def test_primary_503_secondary_200_in_one_request_named_in_response_and_metrics(aws, mock, capsys):
    gw = gateway_for(aws, mock)
    capsys.readouterr()
    r = gw.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-gateway-deployment"] == "secondary"
    assert r.json()["model"] == "s-model"
    assert len(calls_to(mock, PRIMARY)) == 1 and len(calls_to(mock, SECONDARY)) == 1
    sent = calls_to(mock, SECONDARY)[0].request
    assert sent.headers["Authorization"] == f"Bearer {SECONDARY_KEY}"  # decrypted with the deployment's context
    assert json.loads(sent.body)["model"] == "s-model"

    out = capsys.readouterr().out
    assert SECONDARY_KEY not in out
    records = emf_records(out)
    main = next(r for r in records if "UpstreamAttempts" in r)
    assert (main["model"], main["provider"], main["deployment"]) == ("default", "openai_compatible", "secondary")
    assert main["UpstreamAttempts"] == 2 and main["Fallbacks"] == 1
    assert main["CostMicroUSD"] == pytest.approx(7 * 2.0 + 3 * 10.0)  # echo usage: 7 prompt, 3 completion
    answered = next(r for r in records if "DeploymentAnswered" in r)
    assert (answered["model"], answered["deployment"], answered["DeploymentAnswered"]) == ("default", "secondary", 1)
    dims = answered["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
    assert "deployment" in dims and "provider" not in dims


def test_after_the_cooldown_trips_the_primary_is_not_called_within_its_window(aws, mock):
    gw = gateway_for(aws, mock, cooldown_failures=2, cooldown_seconds=300)
    for _ in range(5):
        r = gw.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 200 and r.headers["x-llm-gateway-deployment"] == "secondary"
    assert len(calls_to(mock, PRIMARY)) == 2  # two failures tripped it; the next three skipped it
    assert len(calls_to(mock, SECONDARY)) == 5


def test_the_turn_stores_which_deployment_answered_and_its_cost(aws, mock):
    gw = gateway_for(aws, mock)
    conv = gw.post("/v1/conversations", {}).json()
    r = gw.post("/v1/chat/completions", {"model": "default", "conversation_id": conv["id"],
                                         "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    got = gw.get(f"/v1/conversations/{conv['id']}").json()
    reply = got["messages"]["data"][-1]
    assert reply["deployment"] == "secondary"
    assert reply["usage"]["cost_usd"] == pytest.approx((7 * 2.0 + 3 * 10.0) / 1e6)
    assert got["usage"]["cost_usd"] == pytest.approx((7 * 2.0 + 3 * 10.0) / 1e6)


def test_every_deployment_failing_is_one_clean_503_within_the_deadline_and_the_attempt_budget(aws, mock):
    mock.replace(responses.POST, f"{SECONDARY}/chat/completions",
                 body=json.dumps({"error": {"message": "down"}}), status=503, headers={"Retry-After": "30"})
    gw = gateway_for(aws, mock, request_deadline_seconds=3.0, max_attempts=5)
    started = time.monotonic()
    r = gw.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "Hi"}]})
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert elapsed < 3.0
    upstream = len(calls_to(mock, PRIMARY)) + len(calls_to(mock, SECONDARY))
    assert upstream <= 5
    assert upstream == 2  # primary, then secondary at once; a third would sleep 30 s past the deadline
    assert gw.sleeps == [0.0]


def test_a_ciphertext_encrypted_for_another_deployment_does_not_decrypt(aws, mock):
    gw = gateway_for(aws, mock, key_context="primary")
    r = gw.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "provider_key_unavailable"
    assert calls_to(mock, SECONDARY) == []


def test_models_lists_the_configured_aliases(aws, mock):
    config = json.loads(routing())
    config["aliases"]["claude"] = {"deployments": [{"name": "c", "provider": "bedrock", "model": "anthropic.x"}]}
    gw = make_gateway(aws, routing_config=json.dumps(config),
                      provider_keys=json.dumps({"secondary-key": "AAAA"}))
    data = gw.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["default", "claude"]
