"""Bad input gets the right 4xx in OpenAI's shape, with 0 DynamoDB writes and 0 upstream calls."""

from __future__ import annotations

import json

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
