"""tools/bedrock_arns.py: the BedrockModelArns parameter derived from a routing document."""

from __future__ import annotations

import json

import pytest

from llm_gateway.errors import ConfigurationError
from tools.bedrock_arns import bedrock_arns

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
APP_PROFILE = "arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/x1"


def doc(*deployments: dict) -> str:
    return json.dumps({"version": 1, "aliases": {"m": {"deployments": list(deployments)}}})


def test_models_profiles_and_arns_each_get_exactly_what_they_invoke():
    text = doc(
        {"name": "haiku", "provider": "bedrock", "model": HAIKU, "region": "us-west-2"},
        {"name": "sonnet", "provider": "bedrock", "model": "anthropic.claude-sonnet-4-20250514-v1:0"},
        {"name": "profile", "provider": "bedrock", "model": "us.meta.llama3-1-8b-instruct-v1:0"},
        {"name": "app", "provider": "bedrock", "model": APP_PROFILE},
        {"name": "openai", "provider": "openai", "model": "gpt-4o-mini"},
    )
    assert bedrock_arns(text, "test", region="us-east-1", account="123456789012") == [
        f"arn:aws:bedrock:us-west-2::foundation-model/{HAIKU}",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-20250514-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.meta.llama3-1-8b-instruct-v1:0",
        "arn:aws:bedrock:*::foundation-model/meta.llama3-1-8b-instruct-v1:0",
        APP_PROFILE,
    ]


def test_no_bedrock_deployment_means_no_arn_and_a_bad_document_is_refused():
    assert bedrock_arns(doc({"name": "o", "provider": "openai", "model": "gpt-4o-mini"}), "t", region="us-east-1") == []
    with pytest.raises(ConfigurationError):
        bedrock_arns(doc({"name": "b", "provider": "bedrock", "model": "x", "key_ref": "k"}), "t", region="us-east-1")
