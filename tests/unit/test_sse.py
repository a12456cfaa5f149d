"""The SSE parser and the reply accumulator (no sockets)."""

from __future__ import annotations

import json

import pytest

from llm_gateway.chat.streaming import ReplyBuilder
from llm_gateway.providers.base import UpstreamConnectionError, UpstreamHTTPError, UpstreamStreamError, UpstreamTimeout
from llm_gateway.providers.sse import SSEChunkStream, sse_data
from llm_gateway.upstream.retry import should_retry

EVENTS = b': keep-alive comment\n\ndata: {"a": 1}\n\nevent: ignored\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata:[DONE]\n\n'


def test_sse_data_is_the_same_however_the_bytes_are_split():
    whole = list(sse_data(iter([EVENTS])))
    assert whole == ['{"a": 1}', '{"b":\n2}', "[DONE]"]
    for cut in range(1, len(EVENTS)):
        assert list(sse_data(iter([EVENTS[:cut], EVENTS[cut:]]))) == whole
    assert list(sse_data(iter([bytes([b]) for b in EVENTS]))) == whole


def test_an_event_is_yielded_when_its_blank_line_arrives_not_later():
    def source():
        yield b'data: {"x": 1}\n'
        yield b"\n"
        raise AssertionError("read past a complete event")

    assert next(sse_data(source())) == '{"x": 1}'


class FakeRaw:
    def __init__(self, parts):
        self.parts = list(parts)
        self.connection = None

    def read1(self, amt, decode_content=True):
        return self.parts.pop(0) if self.parts else b""


class FakeResponse:
    def __init__(self, parts):
        self.raw = FakeRaw(parts)
        self.closed = False

    def close(self):
        self.closed = True


def chunk(content=None, finish=None):
    delta = {"content": content} if content is not None else {}
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def stream_of(*parts, secret="sk-secret-key-123"):
    resp = FakeResponse(parts)
    return SSEChunkStream(lambda: (resp, secret)), resp


def test_error_event_after_first_chunk_is_a_stream_error_without_the_key():
    stream, resp = stream_of(chunk("hi"), b'data: {"error": {"message": "boom for sk-secret-key-123"}}\n\n')
    assert next(stream)["choices"][0]["delta"] == {"content": "hi"}
    with pytest.raises(UpstreamStreamError) as err:
        next(stream)
    assert err.value.reason == "error" and "sk-secret" not in str(err.value)
    assert resp.closed


def test_done_without_finish_reason_is_a_cut_not_a_clean_end():
    stream, _ = stream_of(chunk("hi"), b"data: [DONE]\n\n")
    next(stream)
    with pytest.raises(UpstreamStreamError) as err:
        next(stream)
    assert err.value.reason == "cut"


def test_clean_end_after_finish_reason_without_done_is_accepted():
    stream, resp = stream_of(chunk("hi"), chunk(finish="stop"))
    assert len(list(stream)) == 2 and resp.closed


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        ((b"data: {nope\n\n",), UpstreamHTTPError),
        ((b'data: {"error": {"message": "overloaded"}}\n\n',), UpstreamHTTPError),
        ((), UpstreamConnectionError),
        ((b"data: [DONE]\n\n",), UpstreamConnectionError),
    ],
)
def test_failures_before_the_first_chunk_are_retryable_attempt_failures(parts, error):
    stream, _ = stream_of(*parts)
    with pytest.raises(error) as info:
        next(stream)
    assert should_retry(info.value)


def test_reply_builder_joins_text_and_tool_call_deltas():
    b = ReplyBuilder()
    b.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    assert b.add({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    b.add({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    b.add(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get", "arguments": '{"a"'},
                            }
                        ]
                    },
                }
            ]
        }
    )
    b.add({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]})
    b.add({"choices": [{"index": 1, "delta": {"content": "other choice"}}]})
    b.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    b.add({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    assert b.message() == {
        "role": "assistant",
        "content": "Hello",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}],
    }
    assert b.finish_reason == "tool_calls" and (b.usage.prompt_tokens, b.usage.completion_tokens) == (5, 7)


# ---- the same reader under Anthropic's event decoder ----------------------------------------


def anthropic_stream_of(*parts):
    from llm_gateway.providers.anthropic import AnthropicEvents, StreamTranslator

    resp = FakeResponse(parts)
    return SSEChunkStream(
        lambda: (resp, "sk-ant-secret-1"), lambda key: AnthropicEvents(StreamTranslator("claude", False), key)
    ), resp


def anthropic_event(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


START = anthropic_event({"type": "message_start", "message": {"id": "msg_1", "model": "c", "usage": {}}})
HELLO = anthropic_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
STOP = anthropic_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}) + anthropic_event(
    {"type": "message_stop"}
)


class Stalled(FakeRaw):
    """Raises a read timeout once its parts are used up (the upstream went silent)."""

    def read1(self, amt, decode_content=True):
        from urllib3.exceptions import ReadTimeoutError

        if self.parts:
            return self.parts.pop(0)
        raise ReadTimeoutError(None, "/v1/messages", "Read timed out.")


def test_anthropic_stream_ends_at_message_stop_and_closes_the_response():
    stream, resp = anthropic_stream_of(START, HELLO, STOP)
    chunks = list(stream)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["Hi", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and resp.closed


def test_anthropic_silence_before_the_first_chunk_is_a_retryable_read_timeout():
    stream, resp = anthropic_stream_of()
    resp.raw = Stalled([START])
    with pytest.raises(UpstreamTimeout):
        next(stream)
    assert resp.closed


def test_anthropic_silence_after_the_first_chunk_is_a_stall():
    stream, resp = anthropic_stream_of()
    resp.raw = Stalled([START, HELLO])
    next(stream)
    with pytest.raises(UpstreamStreamError) as err:
        next(stream)
    assert err.value.reason == "stall" and resp.closed


def test_anthropic_error_event_is_scrubbed_of_the_key():
    error = anthropic_event({"type": "error", "error": {"type": "api_error", "message": "bad sk-ant-secret-1"}})
    stream, _ = anthropic_stream_of(START, HELLO, error)
    next(stream)
    with pytest.raises(UpstreamStreamError) as err:
        next(stream)
    assert err.value.reason == "error" and "sk-ant-secret-1" not in str(err.value)


def test_anthropic_stream_ending_before_any_chunk_is_a_retryable_502():
    stream, _ = anthropic_stream_of(START)
    with pytest.raises(UpstreamHTTPError) as err:
        next(stream)
    assert err.value.status == 502


@pytest.mark.parametrize(
    "event",
    [
        {"choices": ["not an object"]},
        {"choices": [{"index": 0, "delta": "not an object"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": ["not an object"]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": "first", "function": {"name": "f"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": {"a": 1}}}]}}]},
    ],
    ids=["choice", "delta", "tool-call", "tool-call-index", "tool-call-arguments"],
)
def test_a_chunk_the_reply_builder_cannot_fold_is_malformed(event):
    """Caught by the reader (a retryable 502 before the first chunk, reason 'malformed' after it),
    not by the reply builder as an internal error of the gateway's."""
    stream, _ = stream_of(chunk("hi"), b"data: " + json.dumps(event).encode() + b"\n\n")
    builder = ReplyBuilder()
    builder.add(next(stream))
    with pytest.raises(UpstreamStreamError) as err:
        builder.add(next(stream))
    assert err.value.reason == "malformed"
    first, _ = stream_of(b"data: " + json.dumps(event).encode() + b"\n\n")
    with pytest.raises(UpstreamHTTPError) as before:
        next(first)
    assert before.value.status == 502


@pytest.mark.parametrize(
    "usage",
    ["not an object", {"completion_tokens": "many"}, {"prompt_tokens": -5, "completion_tokens": 10**30}],
    ids=["usage", "usage-count", "usage-bounds"],
)
def test_unbelievable_usage_is_folded_as_suspect_not_a_failure(usage):
    """Usage is never trusted (chat.usage replaces a suspect counter by the gateway's own count), so
    a chunk whose usage makes no sense does not end a reply that is otherwise fine."""
    stream, _ = stream_of(chunk("hi"), b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n")
    builder = ReplyBuilder()
    builder.add(next(stream))
    builder.add(next(stream))
    assert builder.usage is not None and builder.usage.suspect
    assert (builder.usage.prompt_tokens, builder.usage.completion_tokens) == (0, 0)
