"""Bad input gets the right 4xx in OpenAI's shape, with 0 DynamoDB writes and 0 upstream calls."""

from __future__ import annotations

import json
import re

import pytest

from llm_gateway.security.api_keys import ApiKeyStore
from tests.integration.conftest import DYNAMODB_WRITES, OTHER_KEY, chat, count_calls, table_snapshot

USER = {"role": "user", "content": "hi"}
BIG = 300 * 1024  # over the 256 KB message limit, under the 1 MB body limit


def assert_openai_error(r, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text[:400]
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
def watched(gateway):
    """The gateway, with its DynamoDB writes counted and the table captured before the test."""
    client = gateway.services.conversations.client
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    gateway.conv = conv
    gateway.before = table_snapshot(client, gateway.aws.res.table_name)
    gateway.writes = count_calls(client, DYNAMODB_WRITES)
    return gateway


def assert_untouched(gw, *, attempted_writes: bool = False) -> None:
    assert gw.upstream_calls() == []
    if attempted_writes:  # a conditional write that failed: attempted, but nothing was written
        assert gw.writes.total(ok_only=True) == 0
    else:
        assert gw.writes.total() == 0
    assert table_snapshot(gw.services.conversations.client, gw.aws.res.table_name) == gw.before


BODY_CASES = {
    "missing model": ({"messages": [USER]}, "model"),
    "empty model": ({"model": "", "messages": [USER]}, "model"),
    "missing messages": ({"model": "default"}, "messages"),
    "model not a string": ({"model": 42, "messages": [USER]}, "model"),
    "messages not a list": ({"model": "default", "messages": "hi"}, "messages"),
    "empty messages": ({"model": "default", "messages": []}, "messages"),
    "unknown role": ({"model": "default", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    "message not an object": ({"model": "default", "messages": ["hi"]}, "messages[0]"),
    "content a number": ({"model": "default", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    "temperature hot": ({"model": "default", "messages": [USER], "temperature": "hot"}, "temperature"),
    "temperature out of range": ({"model": "default", "messages": [USER], "temperature": 3}, "temperature"),
    "stream yes": ({"model": "default", "messages": [USER], "stream": "yes"}, "stream"),
    "max_tokens string": ({"model": "default", "messages": [USER], "max_tokens": "10"}, "max_tokens"),
    "max_tokens zero": ({"model": "default", "messages": [USER], "max_tokens": 0}, "max_tokens"),
    "body an array": ([USER], None),
    "conversation_id not a string": ({"model": "default", "messages": [USER], "conversation_id": 7}, "conversation_id"),
}


@pytest.mark.parametrize("case", list(BODY_CASES), ids=list(BODY_CASES))
def test_invalid_bodies_get_400_and_touch_nothing(watched, case):
    body, param = BODY_CASES[case]
    r = watched.post("/v1/chat/completions", body)
    error = assert_openai_error(r, 400, param=param)
    assert error["type"] == "invalid_request_error"
    assert_untouched(watched)


def test_malformed_json_gets_400(watched):
    r = watched.client.post(
        "/v1/chat/completions",
        content=b'{"model": "default", "messages": [',
        headers={**watched.headers(), "Content-Type": "application/json"},
    )
    error = assert_openai_error(r, 400)
    assert "JSON" in error["message"]
    assert_untouched(watched)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "only a system prompt"}],
        [{"role": "system", "content": "a"}, {"role": "developer", "content": "b"}],
    ],
    ids=["system", "system+developer"],
)
def test_a_turn_without_a_non_system_message_gets_400_before_any_write(watched, messages):
    r = watched.post(
        "/v1/chat/completions", {"model": "default", "conversation_id": watched.conv, "messages": messages}
    )
    assert_openai_error(r, 400, param="messages")
    assert_untouched(watched)


def test_conversation_turn_with_n_above_1_gets_400(watched):
    r = watched.post("/v1/chat/completions", chat("hi", watched.conv, n=2))
    assert_openai_error(r, 400, param="n")
    assert_untouched(watched)


def test_unknown_model_gets_404(watched):
    r = watched.post("/v1/chat/completions", {"model": "gpt-nope", "messages": [USER]})
    assert_openai_error(r, 404, param="model", code="model_not_found")
    assert_untouched(watched)


def test_one_message_over_the_size_limit_gets_413(watched):
    r = watched.post("/v1/chat/completions", chat("x" * BIG, watched.conv))
    error = assert_openai_error(r, 413, param="messages[0]")
    assert "x" * 100 not in error["message"]
    assert_untouched(watched)


def test_body_over_1mb_gets_413(watched):
    body = {"model": "default", "messages": [{"role": "user", "content": "y" * 200_000}] * 6}
    assert len(json.dumps(body)) > 1_048_576
    r = watched.post("/v1/chat/completions", body)
    assert_openai_error(r, 413, code="request_too_large")
    assert_untouched(watched)


def test_body_over_1mb_without_content_length_gets_413(watched):
    """A chunked body (no Content-Length) is cut off at the limit while it is read."""
    chunk = json.dumps({"model": "default", "messages": [{"role": "user", "content": "z" * 1_100_000}]}).encode()

    def body():
        for i in range(0, len(chunk), 64 * 1024):
            yield chunk[i : i + 64 * 1024]

    r = watched.client.post(
        "/v1/chat/completions", content=body(), headers={**watched.headers(), "Content-Type": "application/json"}
    )
    assert_openai_error(r, 413, code="request_too_large")
    assert_untouched(watched)


def test_unknown_and_other_tenants_conversation_ids_get_identical_404s(watched):
    theirs = watched.post("/v1/conversations", {}, key=OTHER_KEY).json()["id"]
    watched.before = table_snapshot(watched.services.conversations.client, watched.aws.res.table_name)
    watched.writes = count_calls(watched.services.conversations.client, DYNAMODB_WRITES)
    unknown = "conv_" + "0" * 32
    for conversation_id in (unknown, theirs, "not a valid id!"):
        r = watched.post("/v1/chat/completions", chat("hi", conversation_id))
        error = assert_openai_error(r, 404, param="conversation_id", code="not_found")
        shape = json.loads(r.text.replace(conversation_id, "ID"))
        assert shape == json.loads(
            watched.post("/v1/chat/completions", chat("hi", unknown)).text.replace(unknown, "ID")
        )
        assert error["type"] == "invalid_request_error"
        for r in (
            watched.get(f"/v1/conversations/{conversation_id}"),
            watched.client.delete(f"/v1/conversations/{conversation_id}", headers=watched.headers()),
        ):
            assert json.loads(r.text.replace(conversation_id, "ID")) == shape
            assert r.status_code == 404
    # the lease attempt on an unknown id is a conditional write that fails: nothing is written
    assert_untouched(watched, attempted_writes=True)
    assert watched.get(f"/v1/conversations/{theirs}", key=OTHER_KEY).status_code == 200


def test_missing_invalid_malformed_and_revoked_keys_get_401(watched):
    keys = ApiKeyStore(watched.aws.res.table_name, client=watched.aws.client("dynamodb"))
    revoked_key, record = keys.create("tenant-a", "to revoke")
    keys.revoke(record.key_id)
    watched.before = table_snapshot(watched.services.conversations.client, watched.aws.res.table_name)
    cases = {
        "missing": {},
        "invalid": {"Authorization": "Bearer sk-gw-not-a-real-key"},
        "revoked": {"Authorization": f"Bearer {revoked_key}"},
        "not bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "empty bearer": {"Authorization": "Bearer "},
    }
    for name, headers in cases.items():
        for method, path in (
            ("POST", "/v1/chat/completions"),
            ("GET", f"/v1/conversations/{watched.conv}"),
            ("GET", "/v1/models"),
        ):
            r = watched.client.request(method, path, json=chat("hi", watched.conv), headers=headers)
            error = assert_openai_error(r, 401)
            assert error["type"] == "authentication_error", name
            assert revoked_key not in r.text
    assert_untouched(watched)


# --------------------------------------------------------------------------- unencodable text
LONE = "bad \ud800 text"  # an unpaired UTF-16 surrogate: valid JSON, not encodable as UTF-8
# (method, path template, body, param): every route that takes text, every text field
SURROGATE_CASES = {
    "message content": ("POST", "/v1/chat/completions", chat(LONE), "messages[0].content"),
    "system prompt": (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "system", "content": LONE}, USER]},
        "messages[0].content",
    ),
    "content part": (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
        "messages[0].content[0].text",
    ),
    "conversation turn": ("POST", "/v1/chat/completions", chat(LONE, "{conv}"), "messages[0].content"),
    "stop string": ("POST", "/v1/chat/completions", chat("hi", stop=[LONE]), "stop[0]"),
    "job body": ("POST", "/v1/jobs", chat(LONE), "messages[0].content"),
    "job batch": ("POST", "/v1/jobs", {"requests": [chat("ok"), chat(LONE)]}, "requests[1].messages[0].content"),
    "responses input": ("POST", "/v1/responses", {"model": "default", "input": LONE}, "input"),
    "responses item": (
        "POST",
        "/v1/responses",
        {"model": "default", "input": [{"type": "message", "role": "user", "content": LONE}]},
        "input[0].content",
    ),
    "responses instructions": (
        "POST",
        "/v1/responses",
        {"model": "default", "input": "hi", "instructions": LONE},
        "instructions",
    ),
    "conversation items": (
        "POST",
        "/v1/conversations",
        {"items": [{"type": "message", "role": "user", "content": LONE}]},
        "items[0].content",
    ),
    "conversation metadata value": ("POST", "/v1/conversations", {"metadata": {"topic": LONE}}, "metadata.topic"),
    "conversation metadata key": ("POST", "/v1/conversations", {"metadata": {LONE: "v"}}, "metadata"),
    "added item": (
        "POST",
        "/v1/conversations/{conv}/items",
        {"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": LONE}]}]},
        "items[0].content[0].text",
    ),
    "updated metadata": ("POST", "/v1/conversations/{conv}", {"metadata": {"k": LONE}}, "metadata.k"),
    "low surrogate alone": ("POST", "/v1/chat/completions", chat("x\udc00"), "messages[0].content"),
}


@pytest.mark.parametrize("case", list(SURROGATE_CASES), ids=list(SURROGATE_CASES))
def test_unpaired_surrogates_in_any_text_field_get_400(watched, case):
    method, path, body, param = SURROGATE_CASES[case]
    text = json.dumps(body)  # ensure_ascii: the surrogate travels as the escape "\ud800"
    text = text.replace("{conv}", watched.conv)
    r = watched.client.request(
        method,
        path.format(conv=watched.conv),
        content=text.encode(),
        headers={**watched.headers(), "Content-Type": "application/json"},
    )
    error = assert_openai_error(r, 400, param=param)
    assert error["type"] == "invalid_request_error"
    assert_untouched(watched)


def test_raw_surrogate_bytes_and_invalid_utf8_get_400(watched):
    """Surrogate bytes (CESU-8, which json.loads lets through) and bytes that are no UTF-8 at all."""
    for raw in (b"\xed\xa0\x80", b"\xff\xfe"):
        body = b'{"model": "default", "messages": [{"role": "user", "content": "a' + raw + b'"}]}'
        r = watched.client.post(
            "/v1/chat/completions", content=body, headers={**watched.headers(), "Content-Type": "application/json"}
        )
        assert_openai_error(r, 400)
    assert_untouched(watched)


def test_paired_surrogates_are_text_not_an_error(watched):
    """An emoji escaped as a surrogate pair (json.dumps' default) is ordinary text."""
    r = watched.client.post(
        "/v1/chat/completions",
        content=json.dumps(chat("smile \U0001f600")).encode(),
        headers={**watched.headers(), "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert "\U0001f600" in watched.upstream_calls()[0]["messages"][0]["content"]


# --------------------------------------------------------------------------- message counts
MANY = 30_000


@pytest.mark.parametrize(
    "path,body,param",
    [
        (
            "/v1/chat/completions",
            {"model": "default", "messages": [{"role": "user", "content": "x"}] * MANY},
            "messages",
        ),
        ("/v1/responses", {"model": "default", "input": [{"role": "user", "content": "x"}] * MANY}, "input"),
        ("/v1/jobs", {"model": "default", "messages": [{"role": "user", "content": "x"}] * MANY}, "messages"),
    ],
    ids=["chat", "responses", "job"],
)
def test_stateless_requests_over_the_message_count_get_400_and_no_upstream_call(watched, path, body, param):
    assert len(json.dumps(body)) < 1_048_576  # under the body limit: the count is what is refused
    r = watched.post(path, body)
    error = assert_openai_error(r, 400, param=param)
    assert "2048" in error["message"]
    assert_untouched(watched)


def test_the_message_count_is_a_setting(gateway):
    from tests.integration.conftest import regateway

    small = regateway(gateway, max_messages_per_request=3)
    assert_openai_error(small.post("/v1/chat/completions", {"model": "default", "messages": [USER] * 4}), 400)
    assert small.upstream_calls() == []
    assert small.post("/v1/chat/completions", {"model": "default", "messages": [USER] * 3}).status_code == 200


# --------------------------------------------------------------------------- trust headers
HEX_ID = r"[0-9a-f]{32}"


def test_a_well_formed_client_request_id_is_echoed(watched):
    r = watched.client.get("/v1/models", headers={**watched.headers(), "x-request-id": "req-123_abc.4"})
    assert r.headers["x-request-id"] == "req-123_abc.4"


@pytest.mark.parametrize(
    "value",
    ["a" * 129, "two words", "semi;colon", 'quote"d', "caf\u00e9"],
    ids=["overlong", "space", "semicolon", "quote", "latin-1"],
)
def test_a_malformed_client_request_id_is_replaced_by_a_fresh_one(watched, value):
    r = watched.client.get("/v1/models", headers={**watched.headers(), "x-request-id": value.encode("latin-1")})
    assert r.status_code == 200
    assert re.fullmatch(HEX_ID, r.headers["x-request-id"])


def test_crlf_in_the_request_id_is_ignored_over_a_real_connection(gateway):
    """uvicorn in front, no Web Adapter: a bare CR in the header value reaches the app (h11 lets
    it through in a value) and must not be echoed into the response head."""
    import socket as sockets

    from tests.integration.conftest import TENANT_KEY, serve

    with serve(gateway.app) as base:
        host, port = base.removeprefix("http://").split(":")
        for value in (b"abc\rSet-Cookie: x=1", b"abc\x00def", b"a" * 5000):
            with sockets.create_connection((host, int(port)), timeout=10) as conn:
                conn.sendall(
                    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    + f"Authorization: Bearer {TENANT_KEY}\r\n".encode()
                    + b"x-request-id: "
                    + value
                    + b"\r\n\r\n"
                )
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            status = head.split("\r\n", 1)[0]
            assert status.split()[1] in ("200", "400"), head  # the server's own 400 is fine; no abort, no 500
            assert "Set-Cookie" not in head
            echoed = [line for line in head.split("\r\n") if line.lower().startswith("x-request-id:")]
            if status.split()[1] == "200":
                assert len(echoed) == 1 and re.fullmatch(HEX_ID, echoed[0].split(":", 1)[1].strip()), head


@pytest.mark.parametrize(
    "context",
    [
        '{"requestId": {"nested": 1}}',
        '{"requestId": 42}',
        '{"requestId": null}',
        '{"requestId": "has space"}',
        '["requestId"]',
        "not json",
        "[" * 100_000 + "]" * 100_000,
        '{"requestId": "' + "r" * 500 + '"}',
    ],
    ids=["object", "number", "null", "space", "list", "not json", "deep", "overlong"],
)
def test_a_malformed_adapter_request_context_is_ignored(gateway, context):
    from tests.integration.conftest import regateway

    trusting = regateway(gateway, trust_adapter_headers=True)
    r = trusting.client.get("/v1/models", headers={**trusting.headers(), "x-amzn-request-context": context})
    assert r.status_code == 200, r.text
    assert re.fullmatch(HEX_ID, r.headers["x-request-id"])


def test_adapter_headers_are_honoured_only_when_configured(gateway):
    from tests.integration.conftest import regateway

    context = json.dumps({"requestId": "apigw-req-1"})
    # a past Lambda deadline would leave no time at all: honoured, the turn gets a 504 at once
    lambda_context = json.dumps({"deadline": 1_000})
    headers = {"x-amzn-request-context": context, "x-amzn-lambda-context": lambda_context}

    trusting = regateway(gateway, trust_adapter_headers=True)
    r = trusting.client.post("/v1/chat/completions", json=chat("hi"), headers={**trusting.headers(), **headers})
    assert r.headers["x-request-id"] == "apigw-req-1"
    assert r.status_code == 504, r.text

    default = regateway(gateway)  # local: no Web Adapter in front, so a client could forge them
    assert default.services.settings.adapter_headers_trusted is False
    r = default.client.post("/v1/chat/completions", json=chat("hi"), headers={**default.headers(), **headers})
    assert r.status_code == 200, r.text
    assert re.fullmatch(HEX_ID, r.headers["x-request-id"])
