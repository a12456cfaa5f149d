"""The routing document from an SSM parameter (moto server), fetched with Powertools parameters."""

from __future__ import annotations

import json

import pytest

from llm_gateway.errors import ConfigurationError
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import load_routing

CONFIG = {
    "version": 1,
    "aliases": {
        "from-ssm": {
            "deployments": [
                {"name": "ssm-dep", "provider": "openai_compatible", "model": "m", "base_url": "http://x.test/v1"}
            ]
        }
    },
}


def test_ssm_parameter_wins_over_routing_config(aws):
    ssm = aws.client("ssm")
    name = f"/{aws.res.table_name}/routing"
    ssm.put_parameter(Name=name, Value=json.dumps(CONFIG), Type="SecureString")
    env_config = {"version": 1, "aliases": {"from-env": CONFIG["aliases"]["from-ssm"]}}
    settings = Settings(table_name="t", routing_config_ssm_parameter=name, routing_config=json.dumps(env_config))
    routing = load_routing(settings, ssm_client=ssm)
    assert list(routing.aliases) == ["default", "from-ssm"]
    assert routing.source == f"SSM parameter '{name}'"


def test_a_missing_ssm_parameter_fails_at_start_up_naming_it(aws):
    settings = Settings(table_name="t", routing_config_ssm_parameter="/nope/routing")
    with pytest.raises(ConfigurationError) as err:
        load_routing(settings, ssm_client=aws.client("ssm"))
    assert "/nope/routing" in err.value.message


def test_a_bad_document_in_ssm_names_the_parameter_and_the_entry(aws):
    ssm = aws.client("ssm")
    bad = {"version": 1, "aliases": {"x": {"deployments": [{"name": "y", "provider": "nope", "model": "m"}]}}}
    ssm.put_parameter(Name="/bad/routing", Value=json.dumps(bad), Type="String")
    with pytest.raises(ConfigurationError) as err:
        load_routing(Settings(table_name="t", routing_config_ssm_parameter="/bad/routing"), ssm_client=ssm)
    assert "'/bad/routing'" in err.value.message and "deployment 'y'" in err.value.message
