"""Edge checks on what a client sends: unencodable text, request ids, adapter headers."""

from __future__ import annotations

import json

import pytest

from llm_gateway.settings import Settings
from llm_gateway.text import first_unencodable, may_hold_surrogates, repaired
from middleware import request_id_from, trusted_headers, valid_request_id


def test_first_unencodable_names_the_field_in_openai_param_style():
    body = json.loads('{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\ud800"}]}]}')
    assert first_unencodable(body) == "messages[0].content[0].text"
    assert first_unencodable(json.loads('{"metadata": {"\\udfff": "v"}}')) == "metadata"
    assert first_unencodable(json.loads('"\\ud800"')) == "body"
    assert first_unencodable(json.loads('{"a": ["ok", "\\ud83d\\ude00", 1, null]}')) is None  # a pair is an emoji


def test_first_unencodable_reports_the_first_field_in_document_order():
    body = json.loads('{"a": "\\ud800", "b": ["\\ud800"]}')
    assert first_unencodable(body) == "a"


def test_the_cheap_check_finds_every_way_to_spell_a_surrogate():
    assert may_hold_surrogates(b'"\\ud800"') and may_hold_surrogates(b'"\\uDBFF"')
    assert may_hold_surrogates('"\ud800"'.encode("utf-8", "surrogatepass"))  # CESU-style bytes
    assert not may_hold_surrogates(json.dumps({"text": "plain \u00e9 \u4e2d"}, ensure_ascii=False).encode())
    assert not may_hold_surrogates(b'"\\u00e9 \\u4e2d"')


def test_repaired_replaces_lone_surrogates_only():
    assert repaired({"k\udc00": ["a\ud800b", "\U0001f600", 3]}) == {"k\ufffd": ["a\ufffdb", "\U0001f600", 3]}


@pytest.mark.parametrize("value", ["abc", "1-5f3c2a1e-abcdef", "Root=1-67891233-abcdef012345678912345678", "a" * 128])
def test_well_formed_request_ids_are_kept(value):
    assert valid_request_id(value) == value
    assert request_id_from({"x-request-id": value}) == value


@pytest.mark.parametrize("value", ["", "a" * 129, "a\rb", "a\r\nSet-Cookie: x", "a b", "caf\u00e9", "x\x00", 7, None])
def test_malformed_request_ids_are_replaced(value):
    assert valid_request_id(value) is None
    fresh = request_id_from({"x-request-id": value} if isinstance(value, str) else {})
    assert len(fresh) == 32 and fresh != value


@pytest.mark.parametrize(
    "context", ['{"requestId": {"a": 1}}', '{"requestId": 5}', "[1]", "null", "{", "[" * 50_000 + "]" * 50_000]
)
def test_a_malformed_adapter_context_falls_back_to_the_client_id(context):
    assert request_id_from({"x-amzn-request-context": context, "x-request-id": "client-1"}) == "client-1"


def test_adapter_headers_are_dropped_unless_trusted():
    headers = {"x-amzn-request-context": "{}", "x-amzn-lambda-context": "{}", "x-request-id": "r", "host": "h"}
    assert trusted_headers(headers, True) == headers
    assert trusted_headers(headers, False) == {"x-request-id": "r", "host": "h"}


def test_adapter_trust_follows_the_web_adapter_unless_configured():
    assert Settings().adapter_headers_trusted is False
    assert Settings(aws_lwa_invoke_mode="response_stream").adapter_headers_trusted is True
    assert Settings(aws_lwa_invoke_mode="response_stream", trust_adapter_headers=False).adapter_headers_trusted is False
    assert Settings(trust_adapter_headers=True).adapter_headers_trusted is True
