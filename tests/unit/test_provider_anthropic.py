"""Anthropic Messages API translation, against the documented wire format (fixtures cite the docs)."""

from __future__ import annotations

import copy
import json

import pytest
import requests
import responses

from llm_gateway.errors import InvalidRequest
from llm_gateway.providers.anthropic import AnthropicProvider, from_anthropic, to_anthropic
from llm_gateway.providers.base import UpstreamHTTPError, UpstreamStreamError
from llm_gateway.upstream.retry import should_retry
from tests.fakes import FakeKeys
from tests.unit.providers_common import deployment, fixture, without_volatile

URL = "https://api.anthropic.com/v1/messages"
DOC = fixture("anthropic_messages.json")
TIMEOUT = (1.0, 5.0)


def claude(**kw):
    return deployment(
        **{
            "provider": "anthropic",
            "model": "claude-sonnet-4-20250514",
            "key_ref": "anthropic-key",
            "default_max_tokens": 1024,
            "name": "claude-direct",
            **kw,
        }
    )


def provider(**kw) -> tuple[AnthropicProvider, FakeKeys]:
    keys = FakeKeys({"anthropic-key": "sk-ant-test-123"})
    return AnthropicProvider(claude(**kw), keys, requests.Session()), keys


def chat(**extra):
    return {"model": "claude", "stream": False, "messages": [{"role": "user", "content": "Hi"}], **extra}


def test_request_matches_the_documented_messages_format():
    """System prompts to `system`, same-role turns merged, tools/tool results translated, max_tokens default."""
    assert to_anthropic(copy.deepcopy(DOC["openai_request"]), claude()) == DOC["anthropic_request"]


def test_max_tokens_defaults_from_config_and_the_client_value_wins():
    assert to_anthropic(chat(), claude())["max_tokens"] == 1024
    assert to_anthropic(chat(), claude(default_max_tokens=77))["max_tokens"] == 77
    assert to_anthropic(chat(max_tokens=12), claude())["max_tokens"] == 12
    assert to_anthropic(chat(max_completion_tokens=34, max_tokens=12), claude())["max_tokens"] == 34


def test_single_text_turn_is_sent_as_a_plain_string_and_no_system_field_without_system_messages():
    out = to_anthropic(chat(), claude())
    assert out["messages"] == [{"role": "user", "content": "Hi"}]
    assert "system" not in out


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        # a JSON format is a forced tool (json_mode): with the client's own tools it cannot be honoured
        (
            {
                "response_format": {"type": "json_object"},
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            },
            "response_format",
        ),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"seed": 7}, "seed"),
        ({"temperature": 1.5}, "temperature"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "strict": True, "parameters": {}}}]},
            "tools[0].function.strict",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        ({"messages": [{"role": "user", "name": "bob", "content": "hi"}]}, "messages[0].name"),
    ],
)
@responses.activate
def test_unsupported_features_are_refused_with_a_400_naming_the_param_and_nothing_is_sent(extra, param):
    p, _ = provider()
    with pytest.raises(InvalidRequest) as err:
        p.complete(chat(**extra), TIMEOUT)
    assert err.value.param == param
    assert "anthropic" in err.value.message
    assert len(responses.calls) == 0


@responses.activate
def test_complete_sends_key_and_version_headers_and_parses_the_documented_response():
    responses.post(URL, json=DOC["anthropic_response"])
    p, _ = provider()
    reply = p.complete(copy.deepcopy(DOC["openai_request"]), TIMEOUT)
    sent = responses.calls[0].request
    assert sent.headers["x-api-key"] == "sk-ant-test-123"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent.headers
    assert json.loads(sent.body) == DOC["anthropic_request"]
    assert without_volatile(reply.body) == DOC["openai_response"]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (2245, 503)


def test_tool_use_response_becomes_tool_calls():
    reply = from_anthropic(DOC["anthropic_tool_response"])
    choice = reply.body["choices"][0]
    assert choice["message"] == DOC["openai_tool_message"]
    assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reason_maps_to_finish_reason(stop_reason, finish):
    data = {**DOC["anthropic_response"], "stop_reason": stop_reason}
    assert from_anthropic(data).body["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    ("case", "status", "code", "retry", "retry_after"),
    [
        ("overloaded", 529, "overloaded_error", True, None),
        ("rate_limited", 429, "rate_limit_error", True, 7.0),
        ("spend_limit", 429, "enforced_spend_limit_reached", False, None),
        ("invalid", 400, "invalid_request_error", False, None),
    ],
)
@responses.activate
def test_documented_errors_map_to_retry_decisions(case, status, code, retry, retry_after):
    error = DOC["errors"][case]
    responses.post(URL, json=error["body"], status=error["status"], headers=error.get("headers", {}))
    p, _ = provider()
    with pytest.raises(UpstreamHTTPError) as err:
        p.complete(chat(), TIMEOUT)
    assert (err.value.status, err.value.code, err.value.retry_after) == (status, code, retry_after)
    assert should_retry(err.value) is retry


@responses.activate
def test_a_401_decrypts_the_key_again_once():
    responses.post(URL, json={"type": "error", "error": {"type": "authentication_error", "message": "bad"}}, status=401)
    responses.post(URL, json=DOC["anthropic_response"])
    keys = FakeKeys({"anthropic-key": "sk-ant-test-123"}, rotated={"anthropic-key": "sk-ant-test-456"})
    p = AnthropicProvider(claude(), keys, requests.Session())
    p.complete(chat(), TIMEOUT)
    assert keys.refreshes == 1
    assert len(responses.calls) == 2
    assert responses.calls[1].request.headers["x-api-key"] == "sk-ant-test-456"  # the rotated key


@responses.activate
def test_a_401_with_a_key_that_did_not_change_is_not_sent_again():
    responses.post(URL, json={"type": "error", "error": {"type": "authentication_error", "message": "bad"}}, status=401)
    p, keys = provider()
    with pytest.raises(UpstreamHTTPError) as err:
        p.complete(chat(), TIMEOUT)
    assert err.value.status == 401
    assert keys.refreshes == 1
    assert len(responses.calls) == 1  # the same key again cannot succeed


def stream_chunks(sse: bytes, **body) -> list[dict]:
    with responses.RequestsMock() as mock:
        mock.post(URL, body=sse, content_type="text/event-stream")
        p, _ = provider()
        chunks = list(p.stream(chat(stream=True, **body), TIMEOUT))
        assert json.loads(mock.calls[0].request.body)["stream"] is True
    return chunks


def test_stream_events_become_chunks_whose_text_equals_the_non_streaming_text():
    chunks = stream_chunks(fixture("anthropic_stream.sse"), stream_options={"include_usage": True})
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    text = "".join(part for part in content if part)
    expected = from_anthropic(DOC["anthropic_response"]).body["choices"][0]["message"]["content"]
    assert text == expected == "Hello! How can I help you today?"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("role")) == 1
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-1]["choices"] == []  # include_usage: the last chunk carries usage, as OpenAI's does
    assert chunks[-1]["usage"] == DOC["openai_response"]["usage"]
    assert {c["id"] for c in chunks} == {"msg_013Zva2CMHLNnXjNJJKqJ2EF"}


def test_stream_without_include_usage_has_no_usage_chunk():
    chunks = stream_chunks(fixture("anthropic_stream.sse"))
    assert all(c["choices"] for c in chunks)


def test_streamed_tool_call_arguments_assemble_to_the_tool_input():
    chunks = stream_chunks(fixture("anthropic_stream_tools.sse"))
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert calls[0]["function"]["name"] == "get_weather"
    assert {tc["index"] for tc in calls} == {0}
    arguments = "".join(tc["function"].get("arguments", "") for tc in calls)
    assert json.loads(arguments) == {"location": "San Francisco, CA"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


START = {"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 3}}}
DELTA = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_an_error_event_before_any_chunk_is_a_retryable_http_error():
    with pytest.raises(UpstreamHTTPError) as err:
        stream_chunks(sse(START, OVERLOADED))
    assert err.value.status == 529 and should_retry(err.value)


def test_an_error_event_after_the_first_chunk_is_a_stream_error():
    gen_chunks: list[dict] = []
    with responses.RequestsMock() as mock:
        mock.post(URL, body=sse(START, DELTA, OVERLOADED), content_type="text/event-stream")
        p, _ = provider()
        with pytest.raises(UpstreamStreamError) as err:
            for chunk in p.stream(chat(stream=True), TIMEOUT):
                gen_chunks.append(chunk)
    assert err.value.reason == "error"
    assert gen_chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}


def test_a_stream_cut_before_message_stop_is_a_stream_error():
    with pytest.raises(UpstreamStreamError) as err:
        stream_chunks(sse(START, DELTA))
    assert err.value.reason == "cut"


def test_malformed_event_after_the_first_chunk_is_a_stream_error():
    body = sse(START, DELTA) + b"event: content_block_delta\ndata: {not json\n\n"
    with pytest.raises(UpstreamStreamError) as err:
        stream_chunks(body)
    assert err.value.reason == "malformed"
