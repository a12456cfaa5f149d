"""The routing document: versioned file, env override, validation at cold start naming the entry."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llm_gateway.errors import ConfigurationError
from llm_gateway.runtime import build_services
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import PACKAGED_CONFIG, load_routing, parse_routing

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "routing.example.json"


def settings(**kw) -> Settings:
    return Settings(table_name="t", **kw)


def doc(aliases: dict, version: int = 1) -> str:
    return json.dumps({"version": version, "aliases": aliases})


def dep(name: str, **kw) -> dict:
    return {"name": name, "provider": "openai", "model": "gpt-4o-mini", **kw}


def test_the_packaged_file_is_versioned_and_yields_the_default_alias_from_settings():
    raw = json.loads(PACKAGED_CONFIG.read_text())
    assert raw["version"] == 1
    routing = load_routing(settings(openai_base_url="http://up.test/v1", default_model="m1"))
    assert routing.source == "routing config file 'routing.json'"
    (default,) = routing.resolve("default").deployments
    assert (default.model, default.url) == ("m1", "http://up.test/v1")


def test_the_example_config_is_valid_and_every_key_ref_has_its_deployment_as_context():
    routing = parse_routing(EXAMPLE.read_text(), "example", settings())
    assert set(routing.aliases) == {"default", "claude", "llama"}
    assert {d.provider for d in routing.deployments().values()} == {
        "openai",
        "azure",
        "bedrock",
        "anthropic",
        "openai_compatible",
    }
    contexts = routing.key_contexts()  # key ref -> the deployment its encryption context names
    assert contexts["groq"] == "groq-llama" and contexts["anthropic-sonnet"] == "anthropic-sonnet"
    assert set(contexts) == routing.key_refs() == {"openai-4o-mini", "azure-4o-mini", "anthropic-sonnet", "groq"}
    routing.check_keys(routing.key_refs())


def test_routing_config_env_overrides_the_file_and_keeps_a_default_alias():
    routing = load_routing(settings(routing_config=doc({"fast": {"deployments": [dep("fast-1")]}})))
    assert list(routing.aliases) == ["default", "fast"]
    assert routing.source == "ROUTING_CONFIG"


def test_the_pre_versioned_shape_is_still_read():
    routing = load_routing(settings(routing_config=json.dumps({"fast": {"deployments": [dep("fast-1")]}})))
    assert "fast" in routing.aliases


@pytest.mark.parametrize(
    ("config", "needles"),
    [
        (
            doc({"chat": {"deployments": [dep("ok"), dep("mystery", provider="mystery-ai")]}}),
            ["alias 'chat'", "deployment 'mystery'", "unknown provider 'mystery-ai'"],
        ),
        (
            doc({"claude": {"deployments": [{"name": "claude-1", "provider": "anthropic", "model": "claude-x"}]}}),
            ["alias 'claude'", "deployment 'claude-1'", "missing key reference"],
        ),
        (
            '{"version": 1, "aliases": {"chat": {"deployments": [{"name": "a", "model": "m"}]},'
            ' "chat": {"deployments": [{"name": "b", "model": "m"}]}}}',
            ["duplicate entry 'chat'"],
        ),
        (
            doc({"a": {"deployments": [dep("shared")]}, "b": {"deployments": [dep("shared", model="other")]}}),
            ["alias 'b'", "deployment 'shared'", "duplicate deployment name"],
        ),
        (
            doc({"a": {"deployments": [dep("x", key_ref="k")]}, "b": {"deployments": [dep("y", key_ref="k")]}}),
            ["deployment 'y'", "key ref 'k'", "deployment 'x'"],
        ),
        (doc({"a": {"deployments": [dep("x"), dep("x")]}}), ["alias 'a'", "listed twice"]),
        (doc({"a": {"deployments": [dep("br", provider="bedrock", key_ref="k")]}}), ["deployment 'br'", "IAM"]),
        (doc({"a": {"deployments": [dep("c", provider="openai_compatible")]}}), ["deployment 'c'", "base_url"]),
        (doc({"a": {"deployments": [dep("x", temperature=1)]}}), ["deployment 'x'", "temperature"]),
        (doc({}, version=2), ["version 2"]),
        ("{not json", ["not valid JSON"]),
    ],
)
def test_bad_configuration_fails_naming_the_entry(config, needles):
    with pytest.raises(ConfigurationError) as err:
        load_routing(settings(routing_config=config))
    for needle in needles:
        assert needle in err.value.message, err.value.message


def test_a_deployment_shared_by_two_aliases_with_one_definition_is_allowed():
    routing = load_routing(
        settings(routing_config=doc({"a": {"deployments": [dep("s")]}, "b": {"deployments": [dep("s")]}}))
    )
    assert list(routing.deployments()) == ["default", "s"]


def test_a_key_ref_without_ciphertext_fails_at_start_up_naming_the_deployment():
    config = doc(
        {
            "claude": {
                "deployments": [{"name": "claude-1", "provider": "anthropic", "model": "c", "key_ref": "claude-key"}]
            }
        }
    )
    with pytest.raises(ConfigurationError) as err:
        build_services(settings(routing_config=config, provider_keys=json.dumps({"other": "AAAA"})))
    message = err.value.message
    assert "alias 'claude'" in message and "deployment 'claude-1'" in message and "'claude-key'" in message
    services = build_services(settings(routing_config=config, provider_keys=json.dumps({"claude-key": "AAAA"})))
    assert "claude" in services.routing.aliases


def test_weighted_deployments_share_the_head_of_the_order_and_unweighted_ones_follow():
    routing = load_routing(
        settings(
            routing_config=doc(
                {"w": {"deployments": [dep("heavy", weight=3), dep("light", weight=1), dep("fallback")]}}
            )
        )
    )
    alias = routing.resolve("w")
    rng = random.Random(7)
    firsts = [alias.order(rng)[0].name for _ in range(2000)]
    share = firsts.count("heavy") / len(firsts)
    assert 0.68 < share < 0.82  # 3:1 -> 0.75
    assert all(alias.order(rng)[-1].name == "fallback" for _ in range(50))
    unweighted = load_routing(settings(routing_config=doc({"u": {"deployments": [dep("p"), dep("q")]}})))
    assert [d.name for d in unweighted.resolve("u").order(rng)] == ["p", "q"]


def test_the_app_refuses_to_start_with_a_bad_configuration():
    from starlette.testclient import TestClient

    from app import create_app

    config = doc({"chat": {"deployments": [dep("odd", provider="mystery-ai")]}})

    def services():
        return build_services(settings(routing_config=config))

    with pytest.raises(ConfigurationError) as err, TestClient(create_app(services)):
        pass
    assert "deployment 'odd'" in err.value.message and "unknown provider" in err.value.message
