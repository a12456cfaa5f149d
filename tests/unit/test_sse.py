"""The SSE parser and the reply accumulator (no sockets)."""

from __future__ import annotations

import json

import pytest
import requests

from llm_gateway.providers.sse import SSEChunkStream, sse_data
from llm_gateway.retry import UpstreamHTTPError, UpstreamStreamError
from llm_gateway.streaming import ReplyBuilder

EVENTS = (
    b": keep-alive comment\n\n"
    b"data: {\"a\": 1}\n\n"
    b"event: ignored\r\ndata: {\"b\":\r\ndata: 2}\r\n\r\n"
    b"data:[DONE]\n\n"
)


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
        ((), requests.ConnectionError),
        ((b"data: [DONE]\n\n",), requests.ConnectionError),
    ],
)
def test_failures_before_the_first_chunk_are_retryable_attempt_failures(parts, error):
    stream, _ = stream_of(*parts)
    with pytest.raises(error):
        next(stream)


def test_reply_builder_joins_text_and_tool_call_deltas():
    b = ReplyBuilder()
    b.add({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    assert b.add({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    b.add({"choices": [{"index": 0, "delta": {"content": "lo"}}]})
    b.add({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\""}}]}}]})
    b.add({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]})
    b.add({"choices": [{"index": 1, "delta": {"content": "other choice"}}]})
    b.add({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    b.add({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}})
    assert b.message() == {"role": "assistant", "content": "Hello", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\": 1}"}}]}
    assert b.finish_reason == "tool_calls" and (b.usage.prompt_tokens, b.usage.completion_tokens) == (5, 7)
