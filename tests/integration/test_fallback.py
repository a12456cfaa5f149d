"""Fallback, cooldown and the budget across the chain, through the HTTP API.

Real parts: the app over TestClient, DynamoDB/KMS in moto server mode, and two fake
OpenAI-compatible upstreams (local/fake_upstream.py) on loopback: a primary scripted to
answer 503 and a secondary that answers 200 and checks the secondary's key.
"""

from __future__ import annotations

import json
import time

import pytest

from llm_gateway.security.provider_keys import encrypt_key
from local.fake_upstream import FakeUpstream
from tests.integration.conftest import make_gateway

pytestmark = pytest.mark.integration

SECONDARY_KEY = "sk-secondary-KEY-4242"
IN_PRICE, OUT_PRICE = 2.0, 10.0
HI = {"model": "default", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def upstreams():
    with FakeUpstream() as primary, FakeUpstream(api_key=SECONDARY_KEY) as secondary:
        primary.script(*[{"status": 503, "message": "overloaded"}] * 20)
        yield primary, secondary


def routing(primary: FakeUpstream, secondary: FakeUpstream) -> str:
    return json.dumps(
        {
            "version": 1,
            "aliases": {
                "default": {
                    "deployments": [
                        {
                            "name": "primary",
                            "provider": "openai_compatible",
                            "model": "p-model",
                            "base_url": primary.url,
                        },
                        {
                            "name": "secondary",
                            "provider": "openai_compatible",
                            "model": "s-model",
                            "base_url": secondary.url,
                            "key_ref": "secondary-key",
                            "input_price_per_1m": IN_PRICE,
                            "output_price_per_1m": OUT_PRICE,
                        },
                    ]
                }
            },
        }
    )


def gateway_for(aws, upstreams, key_context: str = "secondary", **overrides):
    ciphertext = encrypt_key(SECONDARY_KEY, key_context, aws.res.kms_key_id, aws.client("kms"))
    return make_gateway(
        aws, routing_config=routing(*upstreams), provider_keys=json.dumps({"secondary-key": ciphertext}), **overrides
    )


def emf_records(text: str) -> list[dict]:
    """EMF blobs printed by Powertools, with single-value metric lists unwrapped."""
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]
    return [{k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in r.items()} for r in records]


def cost(usage: dict) -> float:
    return (usage["prompt_tokens"] * IN_PRICE + usage["completion_tokens"] * OUT_PRICE) / 1e6


def test_primary_503_secondary_200_in_one_request_named_in_response_and_metrics(aws, upstreams, capsys):
    primary, secondary = upstreams
    gw = gateway_for(aws, upstreams)
    capsys.readouterr()
    r = gw.post("/v1/chat/completions", HI)
    assert r.status_code == 200, r.text
    assert r.headers["x-llm-gateway-deployment"] == "secondary"
    assert r.json()["choices"][0]["message"]["content"].startswith("Echo: Hi")
    assert (primary.chat_calls, secondary.chat_calls) == (1, 1)
    sent = secondary.requests[0]
    assert sent["auth_ok"] is True  # the key decrypted with the encryption context naming "secondary"
    assert sent["body"]["model"] == "s-model"

    out = capsys.readouterr().out
    assert SECONDARY_KEY not in out
    records = emf_records(out)
    main = next(r for r in records if "UpstreamAttempts" in r)
    assert (main["model"], main["provider"], main["deployment"]) == ("default", "openai_compatible", "secondary")
    assert main["UpstreamAttempts"] == 2 and main["Fallbacks"] == 1 and main["UpstreamErrors_server_error"] == 1
    assert main["CostMicroUSD"] == pytest.approx(cost(r.json()["usage"]) * 1e6)
    answered = next(r for r in records if "DeploymentAnswered" in r)
    assert (answered["model"], answered["deployment"], answered["DeploymentAnswered"]) == ("default", "secondary", 1)


def test_after_the_cooldown_trips_the_primary_is_not_called_within_its_window(aws, upstreams):
    primary, secondary = upstreams
    gw = gateway_for(aws, upstreams, cooldown_failures=2, cooldown_seconds=300)
    for _ in range(5):
        r = gw.post("/v1/chat/completions", HI)
        assert r.status_code == 200 and r.headers["x-llm-gateway-deployment"] == "secondary"
    assert primary.chat_calls == 2  # two failures tripped it; the next three requests skipped it
    assert secondary.chat_calls == 5


def test_the_turn_stores_which_deployment_answered_and_its_cost(aws, upstreams):
    gw = gateway_for(aws, upstreams)
    conv = gw.post("/v1/conversations", {}).json()
    r = gw.post("/v1/chat/completions", {**HI, "conversation_id": conv["id"]})
    assert r.status_code == 200, r.text
    expected = cost(r.json()["usage"])
    assert expected > 0
    got = gw.get(f"/v1/conversations/{conv['id']}").json()
    reply = gw.services.conversations.messages("tenant-a", conv["id"], limit=10, after=None)[0][-1].meta
    assert reply["deployment"] == "secondary"
    assert reply["usage"]["cost_usd"] == pytest.approx(expected)
    assert got["usage"]["cost_usd"] == pytest.approx(expected)


def test_every_deployment_failing_is_one_clean_503_within_the_deadline_and_the_attempt_budget(aws, upstreams):
    primary, secondary = upstreams
    secondary.script(*[{"status": 503, "retry_after": 30}] * 5)
    gw = gateway_for(aws, upstreams, request_deadline_seconds=3.0, max_attempts=5)
    started = time.monotonic()
    r = gw.post("/v1/chat/completions", HI)
    elapsed = time.monotonic() - started
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert elapsed < 3.0
    assert primary.chat_calls + secondary.chat_calls <= 5
    assert (primary.chat_calls, secondary.chat_calls) == (1, 1)  # a third attempt would sleep 30 s past the deadline
    assert gw.sleeps == [0.0]


def test_a_ciphertext_encrypted_for_another_deployment_does_not_decrypt(aws, upstreams):
    primary, secondary = upstreams
    gw = gateway_for(aws, upstreams, key_context="primary")
    r = gw.post("/v1/chat/completions", HI)
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "provider_key_unavailable"
    assert SECONDARY_KEY not in r.text
    assert secondary.chat_calls == 0


def test_models_lists_the_configured_aliases(aws, upstreams):
    config = json.loads(routing(*upstreams))
    config["aliases"]["claude"] = {"deployments": [{"name": "c", "provider": "bedrock", "model": "anthropic.x"}]}
    gw = make_gateway(aws, routing_config=json.dumps(config), provider_keys=json.dumps({"secondary-key": "AAAA"}))
    assert [m["id"] for m in gw.get("/v1/models").json()["data"]] == ["default", "claude"]
