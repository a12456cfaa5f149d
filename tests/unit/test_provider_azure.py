"""Azure OpenAI: deployment URL, api-version, api-key header, and Retry-After that may be missing."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from llm_gateway.deadline import Deadline
from llm_gateway.providers.azure import AzureOpenAIProvider
from llm_gateway.providers.base import UpstreamHTTPError
from llm_gateway.upstream.aliases import ModelAlias
from llm_gateway.upstream.retry import CallStats, RetryBudget, RetryPolicy, should_retry
from llm_gateway.upstream.router import Router
from tests.fakes import FakeKeys
from tests.unit.providers_common import deployment, fixture

DOC = fixture("azure_chat.json")


def azure(**kw):
    return deployment(
        **{
            "provider": "azure",
            "name": "azure-gpt4o",
            "base_url": DOC["base_url"] + "/",
            "model": DOC["deployment_id"],
            "key_ref": "azure-key",
            **kw,
        }
    )


def provider() -> AzureOpenAIProvider:
    return AzureOpenAIProvider(azure(), FakeKeys({"azure-key": "azure-secret-1"}), requests.Session())


BODY = {"model": "gpt", "messages": [{"role": "user", "content": "Does Azure OpenAI support customer managed keys?"}]}


@responses.activate
def test_request_goes_to_the_deployment_url_with_api_version_and_api_key_header():
    responses.post(DOC["expected_url"], json=DOC["response"])
    reply = provider().complete(dict(BODY), (1, 5))
    sent = responses.calls[0].request
    assert sent.url == DOC["expected_url"]
    assert sent.headers["api-key"] == "azure-secret-1"
    assert "Authorization" not in sent.headers
    assert json.loads(sent.body)["messages"] == BODY["messages"]
    assert reply.body["choices"][0]["message"]["content"].startswith("Yes, other Azure AI services")
    assert reply.body["prompt_filter_results"]  # Azure's own fields pass through
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (33, 557)


def test_api_version_is_configurable():
    p = AzureOpenAIProvider(azure(api_version="2025-01-01-preview"), FakeKeys({}), requests.Session())
    assert p.url.endswith("/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-01-01-preview")


@pytest.mark.parametrize(
    ("case", "retry_after"),
    [
        ("rate_limited_without_retry_after", None),  # -> our backoff
        ("rate_limited_with_retry_after_ms", 1.5),  # retry-after-ms is preferred to Retry-After
    ],
)
@responses.activate
def test_429_retry_after_is_honoured_when_present_and_absent_otherwise(case, retry_after):
    error = DOC[case]
    responses.post(DOC["expected_url"], json=error["body"], status=429, headers=error["headers"])
    with pytest.raises(UpstreamHTTPError) as err:
        provider().complete(dict(BODY), (1, 5))
    assert err.value.retry_after == retry_after
    assert err.value.code == "429"
    assert should_retry(err.value)


@responses.activate
def test_content_filter_400_is_not_retried():
    error = DOC["content_filtered"]
    responses.post(DOC["expected_url"], json=error["body"], status=400)
    with pytest.raises(UpstreamHTTPError) as err:
        provider().complete(dict(BODY), (1, 5))
    assert err.value.code == "content_filter" and not should_retry(err.value)


@responses.activate
def test_a_429_without_retry_after_falls_back_to_our_jittered_backoff():
    error = DOC["rate_limited_without_retry_after"]
    responses.post(DOC["expected_url"], json=error["body"], status=429)
    responses.post(DOC["expected_url"], json=DOC["response"])
    sleeps: list[float] = []
    policy = RetryPolicy(
        max_attempts=3, backoff_base=0.5, backoff_max=8, budget=RetryBudget(1, 100), sleep=sleeps.append
    )
    p = provider()
    router = Router({p.name: p}, policy, connect_timeout=1, read_timeout=5)
    alias = ModelAlias(name="gpt", deployments=[p.deployment])
    routed = router.complete(alias, dict(BODY), Deadline.after(30), CallStats())
    assert routed.deployment.name == "azure-gpt4o"
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5  # full jitter within the first backoff step


def test_azure_streams_like_openai():
    """Azure's stream is OpenAI's SSE; the provider inherits OpenAIProvider.stream (streaming branch)."""
    sse = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}\n\n'
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
        b'[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    )
    with responses.RequestsMock() as mock:
        mock.post(DOC["expected_url"], body=sse, content_type="text/event-stream")
        chunks = list(provider().stream({**BODY, "stream": True}, (1, 5)))
        assert mock.calls[0].request.headers["api-key"] == "azure-secret-1"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hi"
