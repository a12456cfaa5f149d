"""Bedrock Converse / ConverseStream translation: botocore's Stubber for converse, documented events for streams.

botocore's Stubber cannot express ConverseStream's response: it validates the stubbed
response against the output shape, and the ``stream`` member must be a botocore
``EventStream`` (a dict or a list of events is rejected with ParamValidationError). So
the stream translation is tested here on the documented event dicts, and end to end in
tests/integration/test_bedrock_stream.py, where a real boto3 client parses a real
``application/vnd.amazon.eventstream`` body served from loopback.
"""

from __future__ import annotations

import base64
import copy
import json

import boto3
import pytest
from botocore.stub import Stubber

from llm_gateway.errors import InvalidRequest
from llm_gateway.providers.base import UpstreamHTTPError
from llm_gateway.providers.bedrock import BedrockProvider, StreamTranslator, from_converse, to_converse
from llm_gateway.upstream.retry import should_retry
from tests.unit.providers_common import deployment, fixture, without_volatile

DOC = fixture("bedrock_converse.json")
STREAM = fixture("bedrock_converse_stream.json")
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def bedrock_deployment(**kw):
    return deployment(**{"provider": "bedrock", "model": MODEL, "name": "claude-bedrock", **kw})


@pytest.fixture
def stubbed():
    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield BedrockProvider(bedrock_deployment(), client), stubber
        stubber.assert_no_pending_responses()


def test_converse_request_and_response_match_the_documented_format(stubbed):
    provider, stubber = stubbed
    response = {**DOC["converse_response"], "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 200}}
    stubber.add_response("converse", response, expected_params=DOC["converse_request"])
    reply = provider.complete(copy.deepcopy(DOC["openai_request"]), (1, 5))
    body = without_volatile(reply.body)
    assert body.pop("id") == "chatcmpl-req-1"
    assert body == DOC["openai_response"]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (140, 60)


def test_tool_use_response_becomes_tool_calls():
    reply = from_converse(DOC["converse_tool_response"], MODEL)
    choice = reply.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look that up."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"
    assert json.loads(call["function"]["arguments"]) == {"city": "Seattle"}


def test_images_travel_as_bytes_and_image_urls_are_refused():
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    body = {
        "model": "x",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
    }
    out = to_converse(body, bedrock_deployment())
    assert out["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": b"\x89PNG\r\n\x1a\n"}}}
    body["messages"][0]["content"][1]["image_url"]["url"] = "https://example.com/cat.png"
    with pytest.raises(InvalidRequest) as err:
        to_converse(body, bedrock_deployment())
    assert err.value.param == "messages[0].content[1]"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 3}, "n"),
        # a JSON format is a forced tool (json_mode): with the client's own tools it cannot be honoured
        (
            {
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            },
            "response_format",
        ),
        ({"presence_penalty": 1}, "presence_penalty"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"}, "tool_choice"),
        (
            {"tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": False},
            "parallel_tool_calls",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_unsupported_features_are_refused_with_a_400_naming_the_param_and_nothing_is_sent(stubbed, extra, param):
    provider, _ = stubbed  # no stubbed response: a call would fail the test
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(InvalidRequest) as err:
        provider.complete(body, (1, 5))
    assert err.value.param == param
    assert "bedrock" in err.value.message


@pytest.mark.parametrize(
    ("code", "http", "status", "retry"),
    [
        ("ThrottlingException", 429, 429, True),
        ("ModelNotReadyException", 429, 503, True),
        ("ServiceUnavailableException", 503, 503, True),
        ("ModelTimeoutException", 408, 408, True),
        ("InternalServerException", 500, 500, True),
        ("ValidationException", 400, 400, False),
        ("AccessDeniedException", 403, 403, False),
        ("ServiceQuotaExceededException", 400, 429, False),
    ],
)
def test_bedrock_errors_map_to_retry_decisions(stubbed, code, http, status, retry):
    provider, stubber = stubbed
    stubber.add_client_error("converse", service_error_code=code, service_message="nope", http_status_code=http)
    with pytest.raises(UpstreamHTTPError) as err:
        provider.complete({"model": "x", "messages": [{"role": "user", "content": "hi"}]}, (1, 5))
    assert (err.value.status, err.value.code) == (status, code)
    assert should_retry(err.value) is retry


def test_the_client_is_created_lazily_on_first_use():
    built = []

    def factory():
        client = boto3.client("bedrock-runtime", region_name="us-east-1")
        stubber = Stubber(client)
        stubber.add_response("converse", DOC["converse_response"])
        stubber.activate()
        built.append(client)
        return client

    provider = BedrockProvider(bedrock_deployment(), client_factory=factory)
    assert built == []
    provider.complete({"model": "x", "messages": [{"role": "user", "content": "hi"}]}, (1, 5))
    assert len(built) == 1


def test_the_default_client_has_botocore_retries_off_and_the_deployment_timeouts():
    provider = BedrockProvider(bedrock_deployment(read_timeout=12, proxy="http://127.0.0.1:9"), region="eu-west-1")
    config = provider.client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert config.read_timeout == 12
    assert config.proxies == {"http": "http://127.0.0.1:9", "https": "http://127.0.0.1:9"}
    assert provider.client.meta.region_name == "eu-west-1"


def translate(events, include_usage=True):
    t = StreamTranslator(MODEL, include_usage)
    return t, [chunk for event in events for chunk in t.feed(event)]


def test_stream_events_become_chunks_whose_text_equals_the_non_streaming_text():
    translator, chunks = translate(STREAM["events"])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    expected = from_converse(DOC["converse_response"], MODEL).body["choices"][0]["message"]["content"]
    assert text == expected
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["usage"] == DOC["openai_response"]["usage"]
    assert translator.stopped


def test_streamed_tool_use_assembles_to_the_tool_input():
    _, chunks = translate(STREAM["tool_events"], include_usage=False)
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q" and calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(tc["function"]["arguments"] for tc in calls)) == {"city": "Seattle"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stubber_cannot_express_a_converse_stream_response():
    """Why the stream is tested on event dicts and over loopback instead (see the module docstring)."""
    from botocore.exceptions import ParamValidationError

    client = boto3.client("bedrock-runtime", region_name="us-east-1")
    stubber = Stubber(client)
    with pytest.raises(ParamValidationError):
        stubber.add_response("converse_stream", {"stream": STREAM["events"]})
