"""The local stack driven by the official openai client, exactly as a user would."""

from __future__ import annotations

import threading
import time

import openai
import pytest


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_completion(client, fresh_upstream):
    r = client.chat.completions.create(model="default", messages=user("Hello e2e"))
    assert r.choices[0].message.content == "Echo: Hello e2e (messages seen: 1)"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    # The upstream saw the key decrypted from KMS, never the gateway key.
    seen = fresh_upstream.upstream_requests()
    assert len(seen) == 1 and seen[0]["body"]["messages"] == user("Hello e2e")


def test_models_list(client):
    assert "default" in [m.id for m in client.models.list()]


def test_models_retrieve(client):
    model = client.models.retrieve("default")
    assert (model.id, model.object, model.owned_by) == ("default", "model", "llm-gateway")
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


def test_conversation_over_three_turns(client, stack, fresh_upstream):
    conv = client.conversations.create().to_dict()
    assert conv["object"] == "conversation" and conv["id"].startswith("conv_")
    replies = []
    for i in range(1, 4):
        r = client.chat.completions.create(
            model="default", messages=user(f"turn {i}"), extra_body={"conversation_id": conv["id"]}
        )
        replies.append(r.choices[0].message.content)
        assert r.model_extra["conversation_id"] == conv["id"]
    # Turn 3's upstream request carried turns 1-2: 2 * (user + assistant) + the new user message.
    assert replies[2] == "Echo: turn 3 (messages seen: 5)"
    third = fresh_upstream.upstream_requests()[-1]["body"]["messages"]
    assert [m["content"] for m in third] == ["turn 1", replies[0], "turn 2", replies[1], "turn 3"]

    items = list(client.conversations.items.list(conv["id"], order="asc"))
    contents = [m.content[0].text for m in items]
    assert contents == ["turn 1", replies[0], "turn 2", replies[1], "turn 3", replies[2]]
    assert [m.role for m in items] == ["user", "assistant"] * 3


def test_list_get_delete_conversations(client):
    ids = [client.post("/conversations", body={"metadata": {"n": str(i)}}, cast_to=object)["id"] for i in range(3)]
    listed = client.get("/conversations", cast_to=object, options={"params": {"limit": 100}})
    assert set(ids) <= {c["id"] for c in listed["data"]}
    assert client.get(f"/conversations/{ids[0]}", cast_to=object)["metadata"] == {"n": "0"}
    deleted = client.delete(f"/conversations/{ids[0]}", cast_to=object)
    assert deleted == {"id": ids[0], "object": "conversation.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.get(f"/conversations/{ids[0]}", cast_to=object)


# ---- every error reaches the client as openai's typed exception ---------------------------------


def test_bad_key_is_authentication_error(stack):
    bad = openai.OpenAI(base_url=stack.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="default", messages=user("hi"))
    assert err.value.status_code == 401
    assert err.value.body["type"] == "authentication_error"


@pytest.mark.parametrize("messages", [[], [{"role": "wizard", "content": "hi"}], [{"role": "user", "content": 42}]])
def test_bad_input_is_bad_request(client, fresh_upstream, messages):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="default", messages=messages)
    assert err.value.body["type"] == "invalid_request_error"
    assert fresh_upstream.upstream_requests() == []


def test_unknown_ids_are_not_found(client, fresh_upstream):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="default", messages=user("hi"), extra_body={"conversation_id": "conv_doesnotexist"}
        )
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=user("hi"))
    assert err.value.body["code"] == "model_not_found"
    assert fresh_upstream.upstream_requests() == []


def test_concurrent_turn_is_conflict(client, fresh_upstream):
    conv = client.post("/conversations", body={}, cast_to=object)["id"]
    fresh_upstream.script({"hang": True})
    first: dict = {}

    def slow_turn():
        first["reply"] = client.chat.completions.create(
            model="default", messages=user("first"), extra_body={"conversation_id": conv}
        )

    t = threading.Thread(target=slow_turn)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while fresh_upstream.control("/_control/stats")["chat_calls"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(openai.ConflictError) as err:
            client.chat.completions.create(
                model="default", messages=user("second"), extra_body={"conversation_id": conv}
            )
        assert err.value.body["code"] == "conversation_busy"
    finally:
        fresh_upstream.control("/_control/release", {})
        t.join(30)
    assert first["reply"].choices[0].message.content.startswith("Echo: first")
    assert fresh_upstream.control("/_control/stats")["chat_calls"] == 1  # the loser never reached upstream
    stored = list(client.conversations.items.list(conv, order="asc"))
    assert stored[0].content[0].text == "first" and len(stored) == 2


def test_upstream_429_is_rate_limit_error(client, fresh_upstream):
    fresh_upstream.script({"status": 429, "error_code": "insufficient_quota", "message": "quota exhausted"})
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="default", messages=user("hi"))
    assert err.value.status_code == 429
    assert fresh_upstream.control("/_control/stats")["chat_calls"] == 1  # a spend-limit 429 is not retried


def test_upstream_rate_limit_outlasting_retries_passes_retry_after(client, fresh_upstream):
    fresh_upstream.script(*[{"status": 429, "retry_after": 0}] * 3)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="default", messages=user("hi"))
    assert err.value.response.headers.get("retry-after")


def test_upstream_outage_is_server_error(client, fresh_upstream):
    fresh_upstream.script(*[{"status": 503}] * 3)
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="default", messages=user("hi"))
    assert err.value.status_code == 503
    fresh_upstream.script({"status": 500}, {"status": 502}, {"status": 500})
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="default", messages=user("hi"))
    assert err.value.status_code == 502


def test_transient_upstream_failure_is_retried_transparently(client, fresh_upstream):
    fresh_upstream.script({"status": 503}, {})
    r = client.chat.completions.create(model="default", messages=user("retry me"))
    assert r.choices[0].message.content.startswith("Echo: retry me")
    assert fresh_upstream.control("/_control/stats")["chat_calls"] == 2


def test_logs_carry_no_prompt_or_key_and_api_lines_no_worker_context(client, stack):
    canary = "canary-prompt-e2e-7d1c0f"
    r = client.chat.completions.create(model="default", messages=user(canary))
    assert canary in r.choices[0].message.content  # it went through the gateway and back
    job = client.post("/jobs", body={"model": "default", "messages": user(canary)}, cast_to=object)
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{job['id']}", cast_to=object)["status"] != "succeeded":
        assert time.monotonic() < deadline, "the job did not succeed"
        time.sleep(0.05)
    client.models.list()  # an API request after the worker ran in the same process

    # The access line is written as the response finishes, just after the client has it: wait for it.
    deadline = time.monotonic() + 10
    while not [line for line in stack.log_lines() if line.get("route") == "/v1/models"]:
        assert time.monotonic() < deadline, "no access log line for GET /v1/models"
        time.sleep(0.02)

    text = stack.log.read_text()
    assert canary not in text
    assert "sk-fake-upstream-local" not in text  # the provider key, decrypted in the stack
    lines = stack.log_lines()
    assert any(line.get("message") == "job succeeded" for line in lines)
    models_line = [line for line in lines if line.get("route") == "/v1/models"][-1]
    assert "function_name" not in models_line  # the worker's Lambda context stayed with its invocation
