"""POST/GET/DELETE /v1/responses over HTTP, on moto (server mode) with a mocked upstream."""

from __future__ import annotations

import json

import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.integration.conftest import OTHER_KEY, UPSTREAM, count_calls, table_snapshot

pytestmark = pytest.mark.integration

EVENTS = TypeAdapter(ResponseStreamEvent)
ITEMS = TypeAdapter(ResponseItem)


def create(gateway, key=None, **body):
    return gateway.post("/v1/responses", {"model": "default", **body}, **({"key": key} if key else {}))


def test_create_retrieve_list_input_items_and_delete(gateway):
    resp = create(gateway, input="Hi", metadata={"topic": "demo"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    response = Response.model_validate(body)
    assert response.output_text == "echo:Hi n=1" and response.status == "completed"
    assert response.usage is not None and response.usage.input_tokens == 7
    rows = [i for i in table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)]
    assert [r["PK"]["S"] for r in rows if "#R#" in r["PK"]["S"]] == [f"T#tenant-a#R#{response.id}"]

    got = gateway.get(f"/v1/responses/{response.id}")
    assert got.status_code == 200 and got.json() == body
    items = gateway.get(f"/v1/responses/{response.id}/input_items").json()
    assert items["object"] == "list" and items["has_more"] is False
    assert [ITEMS.validate_python(i).type for i in items["data"]] == ["message"]
    assert items["first_id"] == items["last_id"] == items["data"][0]["id"]

    deleted = gateway.client.delete(f"/v1/responses/{response.id}", headers=gateway.headers())
    assert deleted.json() == {"id": response.id, "object": "response.deleted", "deleted": True}
    missing = gateway.get(f"/v1/responses/{response.id}")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_input_items_paginate_in_both_orders(gateway):
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    rid = create(gateway, input=inputs).json()["id"]
    for order in ("asc", "desc"):
        seen, after = [], None
        while True:
            page = gateway.get(
                f"/v1/responses/{rid}/input_items",
                params={"limit": 2, "order": order, **({"after": after} if after else {})},
            ).json()
            seen += [i["content"][0]["text"] for i in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        expected = [f"m{i}" for i in range(5)]
        assert seen == (expected if order == "asc" else expected[::-1])
    assert gateway.get(f"/v1/responses/{rid}/input_items", params={"after": "msg_forged"}).status_code == 400
    assert gateway.get(f"/v1/responses/{rid}/input_items", params={"order": "sideways"}).status_code == 400


def test_a_chain_is_read_with_one_get_and_one_batch_get_and_carries_the_turns_in_order(gateway):
    dynamodb = gateway.services.conversations.client
    r1 = create(gateway, input="Q1").json()
    r2 = create(gateway, input="Q2", previous_response_id=r1["id"]).json()
    counter = count_calls(dynamodb, ("GetItem", "BatchGetItem", "Query"))
    r3 = create(gateway, input="Q3", previous_response_id=r2["id"]).json()
    assert r3["status"] == "completed" and r3["previous_response_id"] == r2["id"]
    assert counter.attempted == {"GetItem": 1, "BatchGetItem": 1}  # the parent; its ancestors
    sent = gateway.upstream_calls()[-1]["messages"]
    assert [m["content"] for m in sent] == ["Q1", "echo:Q1 n=1", "Q2", "echo:Q2 n=3", "Q3"]


def test_store_false_stores_nothing_and_naming_it_later_is_404_with_no_upstream_call(gateway):
    client, table = gateway.services.conversations.client, gateway.aws.res.table_name
    before = table_snapshot(client, table, usage=False)
    first = create(gateway, input="Hi", store=False).json()
    assert first["store"] is False and table_snapshot(client, table, usage=False) == before
    calls = len(gateway.upstream_calls())
    follow = create(gateway, input="again", previous_response_id=first["id"])
    assert follow.status_code == 404 and follow.json()["error"]["param"] == "previous_response_id"
    assert len(gateway.upstream_calls()) == calls


def test_another_tenants_response_is_404_everywhere(gateway):
    rid = create(gateway, input="Hi").json()["id"]
    assert create(gateway, key=OTHER_KEY, input="x", previous_response_id=rid).status_code == 404
    for path in (f"/v1/responses/{rid}", f"/v1/responses/{rid}/input_items"):
        assert gateway.get(path, key=OTHER_KEY).status_code == 404
    other = gateway.client.delete(f"/v1/responses/{rid}", headers=gateway.headers(OTHER_KEY))
    assert other.status_code == 404
    assert gateway.get(f"/v1/responses/{rid}").status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation"),
        ({"input": "x", "previous_response_id": "resp_unknown"}, "previous_response_id"),
        ({"input": "x", "tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
        ({"input": [{"type": "message", "role": "user"}]}, "input[0].content"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"input": "x", "temperature": "hot"}, "temperature"),
        ({"input": "x", "store": "yes"}, "store"),
    ],
)
def test_bad_input_is_a_4xx_in_openais_shape_with_no_write_and_no_upstream_call(gateway, body, param):
    client, table = gateway.services.conversations.client, gateway.aws.res.table_name
    before = table_snapshot(client, table)
    resp = create(gateway, **body)
    assert resp.status_code in (400, 404), resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["param"] == param
    assert table_snapshot(client, table) == before
    assert gateway.upstream_calls() == []


def sse_events(text: str) -> list[dict]:
    events = []
    for frame in text.strip().split("\n\n"):
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        event = json.loads(lines[1].removeprefix("data: "))
        assert event["type"] == lines[0].removeprefix("event: ")
        EVENTS.validate_python(event)
        events.append(event)
    return events


def stream_reply(request):
    body = json.loads(request.body)
    assert body["stream"] is True
    chunks = [{"role": "assistant", "content": ""}, {"content": "Hello "}, {"content": "world"}]
    lines = []
    for i, delta in enumerate(chunks + [{}]):
        finish = "stop" if i == len(chunks) else None
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        lines.append(f"data: {json.dumps(chunk)}\n\n")
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": usage,
        }
        lines.append(f"data: {json.dumps(chunk)}\n\n")
    lines.append("data: [DONE]\n\n")
    return 200, {"Content-Type": "text/event-stream"}, "".join(lines)


def test_a_streamed_response_is_typed_sse_and_stored_as_streamed(gateway):
    import responses as responses_lib

    gateway.upstream.remove(responses_lib.POST, f"{UPSTREAM}/chat/completions")
    gateway.upstream.add_callback(responses_lib.POST, f"{UPSTREAM}/chat/completions", callback=stream_reply)
    resp = create(gateway, input="Hi", stream=True)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in resp.text
    events = sse_events(resp.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    final = events[-1]["response"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello world"
    assert gateway.get(f"/v1/responses/{final['id']}").json() == final
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (11, 2)  # the upstream's own


def stored_messages(gateway, conversation_id: str) -> list[tuple[str, str]]:
    messages, _ = gateway.services.conversations.messages("tenant-a", conversation_id, limit=100, after=None)
    return [(m.body["role"], m.body.get("content")) for m in messages]


def test_a_response_on_a_conversation_appends_its_turn_and_instructions_are_not_stored(gateway):
    conversation = gateway.post("/v1/conversations", {}).json()["id"]
    first = create(gateway, input="Q1", conversation=conversation, instructions="Be terse.")
    assert first.status_code == 200, first.text
    assert first.json()["conversation"] == {"id": conversation}
    assert gateway.upstream_calls()[-1]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Q1"},
    ]
    second = create(gateway, input="Q2", conversation={"id": conversation}).json()
    assert [m["content"] for m in gateway.upstream_calls()[-1]["messages"]] == ["Q1", "echo:Q1 n=2", "Q2"]
    assert stored_messages(gateway, conversation) == [
        ("user", "Q1"),
        ("assistant", "echo:Q1 n=2"),
        ("user", "Q2"),
        ("assistant", "echo:Q2 n=3"),
    ]
    assert gateway.get(f"/v1/responses/{second['id']}").json() == second


def test_a_turn_on_a_busy_conversation_is_409_before_any_upstream_call_and_another_tenants_is_404(gateway):
    store = gateway.services.conversations
    conversation = gateway.post("/v1/conversations", {}).json()["id"]
    lease = store.acquire_lease("tenant-a", conversation, 30)  # another turn in flight
    for stream in (False, True):
        busy = create(gateway, input="x", conversation=conversation, stream=stream)
        assert busy.status_code == 409 and busy.json()["error"]["type"] == "conflict_error"
    store.release_lease(lease)
    other = create(gateway, key=OTHER_KEY, input="x", conversation=conversation)
    assert other.status_code == 404 and other.json()["error"]["param"] == "conversation"
    assert gateway.upstream_calls() == [] and stored_messages(gateway, conversation) == []


def test_a_streamed_response_on_a_conversation_commits_what_it_streamed(gateway):
    import responses as responses_lib

    conversation = gateway.post("/v1/conversations", {}).json()["id"]
    gateway.upstream.remove(responses_lib.POST, f"{UPSTREAM}/chat/completions")
    gateway.upstream.add_callback(responses_lib.POST, f"{UPSTREAM}/chat/completions", callback=stream_reply)
    events = sse_events(create(gateway, input="Hi", conversation=conversation, stream=True).text)
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["conversation"] == {"id": conversation}
    assert stored_messages(gateway, conversation) == [("user", "Hi"), ("assistant", "Hello world")]
    assert gateway.get(f"/v1/responses/{final['id']}").json() == final


def test_a_reply_cut_by_max_output_tokens_is_incomplete(gateway):
    def long_reply(request):
        body = json.loads(request.body)
        assert body["max_completion_tokens"] == 16
        reply = {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": "cut"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21},
        }
        return 200, {}, json.dumps(reply)

    import responses as responses_lib

    gateway.upstream.remove(responses_lib.POST, f"{UPSTREAM}/chat/completions")
    gateway.upstream.add_callback(responses_lib.POST, f"{UPSTREAM}/chat/completions", callback=long_reply)
    body = create(gateway, input="Tell me everything", max_output_tokens=16).json()
    response = Response.model_validate(body)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens" and response.output_text == "cut"
