"""OpenAI's Conversations API over the store (issue 10): items, paging, both views, isolation, bad input.

Bodies are parsed with openai-python's own types, checking no required field is missing.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai import BaseModel as OpenAIModel
from openai.types.conversations import (
    Conversation,
    ConversationDeletedResource,
    ConversationItem,
    ConversationItemList,
)
from pydantic import TypeAdapter

from llm_gateway.conversations.store import conversation_pk
from tests.integration.conftest import OTHER_KEY, chat, table_snapshot

SDK_ITEM: TypeAdapter[Any] = TypeAdapter(ConversationItem)


def complete(model: OpenAIModel) -> None:
    """No required field of the SDK type (or of a nested one) was missing from the body."""
    missing = {n for n, f in type(model).model_fields.items() if f.is_required()} - model.model_fields_set
    assert not missing, (type(model).__name__, missing)
    for name in model.model_fields_set:
        value = getattr(model, name)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, OpenAIModel):
                complete(child)


def parse(sdk_type: Any, body: dict) -> Any:
    parsed = sdk_type.model_validate(body) if hasattr(sdk_type, "model_validate") else sdk_type.validate_python(body)
    complete(parsed)
    return parsed


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def texts(page: dict) -> list[str]:
    return [part.get("text") for item in page["data"] for part in item.get("content", [])]


def delete(gateway, path: str, key: str | None = None):
    return gateway.client.delete(path, headers=gateway.headers(key) if key else gateway.headers())


def stored(gateway, conversation_id: str) -> list[dict]:
    return gateway.services.conversations.client.query(
        TableName=gateway.aws.res.table_name,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": conversation_pk("tenant-a", conversation_id)}},
        ConsistentRead=True,
    )["Items"]


def test_create_with_items_and_metadata_then_retrieve_update_delete(gateway):
    r = gateway.post(
        "/v1/conversations",
        {"metadata": {"topic": "demo"}, "items": [user("a"), {"role": "assistant", "content": "b"}, user("c")]},
    )
    assert r.status_code == 200, r.text
    conv = parse(Conversation, r.json())
    assert conv.id.startswith("conv_") and conv.object == "conversation" and conv.metadata == {"topic": "demo"}
    assert len(stored(gateway, conv.id)) == 4  # head + 3 messages, one transaction

    got = parse(Conversation, gateway.get(f"/v1/conversations/{conv.id}").json())
    assert got.id == conv.id and "messages" not in gateway.get(f"/v1/conversations/{conv.id}").json()
    page = gateway.get(f"/v1/conversations/{conv.id}/items", params={"order": "asc"}).json()
    parsed = parse(ConversationItemList, page)
    assert [(i.type, i.role) for i in parsed.data] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert texts(page) == ["a", "b", "c"]
    assert [p.type for i in parsed.data for p in i.content] == ["input_text", "output_text", "input_text"]

    r = gateway.post(f"/v1/conversations/{conv.id}", {"metadata": {"topic": "renamed"}})
    assert parse(Conversation, r.json()).metadata == {"topic": "renamed"}
    assert gateway.get(f"/v1/conversations/{conv.id}").json()["metadata"] == {"topic": "renamed"}

    r = delete(gateway, f"/v1/conversations/{conv.id}")
    assert parse(ConversationDeletedResource, r.json()).deleted is True
    assert stored(gateway, conv.id) == []  # the items go too
    assert gateway.get(f"/v1/conversations/{conv.id}").status_code == 404
    assert gateway.get(f"/v1/conversations/{conv.id}/items").status_code == 404


def test_items_create_list_retrieve_delete(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    calls = [
        user("weather?"),
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    r = gateway.post(f"/v1/conversations/{conv}/items", {"items": calls})
    assert r.status_code == 200, r.text
    created = parse(ConversationItemList, r.json())
    assert [i.type for i in created.data] == ["message", "function_call", "function_call_output"]
    assert created.has_more is False and created.first_id == created.data[0].id

    listed = parse(ConversationItemList, gateway.get(f"/v1/conversations/{conv}/items").json())
    assert [i.id for i in listed.data] == [i.id for i in reversed(created.data)]  # default order: desc
    call = created.data[1]
    one = parse(SDK_ITEM, gateway.get(f"/v1/conversations/{conv}/items/{call.id}").json())
    assert (one.type, one.call_id, one.name, one.arguments) == ("function_call", "call_1", "weather", '{"city":"Oslo"}')

    r = delete(gateway, f"/v1/conversations/{conv}/items/{created.data[0].id}")
    assert r.status_code == 200 and parse(Conversation, r.json()).id == conv  # the Conversation, as OpenAI
    assert r.json()["message_count"] == 2
    assert gateway.get(f"/v1/conversations/{conv}/items/{created.data[0].id}").status_code == 404
    assert delete(gateway, f"/v1/conversations/{conv}/items/{created.data[0].id}").status_code == 404
    left = gateway.get(f"/v1/conversations/{conv}/items", params={"order": "asc"}).json()
    assert [i["id"] for i in left["data"]] == [call.id, created.data[2].id]


def test_deleting_one_function_call_rewrites_its_message_and_the_next_turn_omits_it(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    items = [
        user("look up"),
        {"role": "assistant", "content": "checking"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": "two"},
    ]
    data = gateway.post(f"/v1/conversations/{conv}/items", {"items": items}).json()["data"]
    assert len(stored(gateway, conv)) == 1 + 4  # user, assistant(+2 calls), 2 tool results
    before = {i["SK"]["S"]: int(i["tokens"]["N"]) for i in stored(gateway, conv) if i["SK"]["S"].startswith("M#")}

    second_call = data[3]
    assert second_call["call_id"] == "c2"
    assert delete(gateway, f"/v1/conversations/{conv}/items/{second_call['id']}").status_code == 200
    after = {i["SK"]["S"]: int(i["tokens"]["N"]) for i in stored(gateway, conv) if i["SK"]["S"].startswith("M#")}
    assert after["M#0000000001"] < before["M#0000000001"]  # its stored token count follows its content
    ids = [i["id"] for i in gateway.get(f"/v1/conversations/{conv}/items", params={"order": "asc"}).json()["data"]]
    assert ids == [data[0]["id"], data[1]["id"], data[2]["id"], data[4]["id"], data[5]["id"]]  # the rest keep ids

    assert gateway.post("/v1/chat/completions", chat("next", conv)).status_code == 200
    sent = gateway.upstream_calls()[-1]["messages"]
    assert sent[1]["tool_calls"] == [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert [m.get("tool_call_id") for m in sent if m["role"] == "tool"] == ["c1"]  # c2's orphaned output is not sent


def test_both_views_agree(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    for text in ("one", "two", "three"):
        assert gateway.post("/v1/chat/completions", chat(text, conv)).status_code == 200
    page = gateway.get(f"/v1/conversations/{conv}/items", params={"order": "asc"}).json()
    parse(ConversationItemList, page)
    assert [i["role"] for i in page["data"]] == ["user", "assistant"] * 3
    assert texts(page)[0::2] == ["one", "two", "three"]
    assert all(t.startswith("echo:") for t in texts(page)[1::2])

    gateway.post(f"/v1/conversations/{conv}/items", {"items": [user("added 1"), user("added 2")]})
    assert gateway.post("/v1/chat/completions", chat("four", conv)).status_code == 200
    sent = gateway.upstream_calls()[-1]["messages"]
    assert sent[-3:] == [
        {"role": "user", "content": "added 1"},
        {"role": "user", "content": "added 2"},
        {"role": "user", "content": "four"},
    ]
    assert len(sent) == 9


def test_a_chat_message_without_an_item_form_is_a_400_naming_it(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    before = table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
    body = chat("x", conv)
    body["messages"][0]["name"] = "bob"
    r = gateway.post("/v1/chat/completions", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].name"
    assert gateway.upstream_calls() == []
    assert table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name) == before


def test_paging_walks_every_item_once_in_both_orders_with_exact_has_more(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    for start in range(0, 45, 15):
        items = [user(f"m{n}") for n in range(start, start + 15)]
        assert gateway.post(f"/v1/conversations/{conv}/items", {"items": items}).status_code == 200
    for order, expected in (("asc", [f"m{n}" for n in range(45)]), ("desc", [f"m{n}" for n in reversed(range(45))])):
        seen: list[str] = []
        pages = 0
        after = None
        while True:
            params: dict[str, Any] = {"limit": 10, "order": order} | ({"after": after} if after else {})
            page = gateway.get(f"/v1/conversations/{conv}/items", params=params).json()
            parse(ConversationItemList, page)
            seen += texts(page)
            pages += 1
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == expected and pages == 5
    full = gateway.get(f"/v1/conversations/{conv}/items", params={"limit": 45}).json()
    assert len(full["data"]) == 45 and full["has_more"] is False  # exactly full: no empty page to chase
    last = gateway.get(f"/v1/conversations/{conv}/items", params={"limit": 5, "after": full["data"][39]["id"]})
    assert texts(last.json()) == ["m4", "m3", "m2", "m1", "m0"] and last.json()["has_more"] is False


def test_items_create_while_a_turn_holds_the_lease_is_409_and_writes_nothing(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    lease = gateway.services.conversations.acquire_lease("tenant-a", conv, 30)
    before = table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
    r = gateway.post(f"/v1/conversations/{conv}/items", {"items": [user("x")]})
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error"
    assert table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name) == before
    gateway.services.conversations.release_lease(lease)
    assert gateway.post(f"/v1/conversations/{conv}/items", {"items": [user("x")]}).status_code == 200


def test_another_tenants_conversation_and_items_are_404_on_every_route(gateway):
    conv = gateway.post("/v1/conversations", {"items": [user("secret")]}).json()["id"]
    item = gateway.get(f"/v1/conversations/{conv}/items").json()["data"][0]["id"]
    before = table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
    calls = [
        gateway.get(f"/v1/conversations/{conv}", key=OTHER_KEY),
        gateway.post(f"/v1/conversations/{conv}", {"metadata": {"a": "b"}}, key=OTHER_KEY),
        gateway.post(f"/v1/conversations/{conv}/items", {"items": [user("x")]}, key=OTHER_KEY),
        gateway.get(f"/v1/conversations/{conv}/items", key=OTHER_KEY),
        gateway.get(f"/v1/conversations/{conv}/items/{item}", key=OTHER_KEY),
        delete(gateway, f"/v1/conversations/{conv}/items/{item}", key=OTHER_KEY),
        delete(gateway, f"/v1/conversations/{conv}", key=OTHER_KEY),
        gateway.post("/v1/chat/completions", chat("x", conv), key=OTHER_KEY),
    ]
    assert [r.status_code for r in calls] == [404] * len(calls)
    assert all(r.json()["error"]["code"] == "not_found" for r in calls)
    assert table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name) == before
    assert conv not in [c["id"] for c in gateway.get("/v1/conversations", key=OTHER_KEY).json()["data"]]
    # an item id of one conversation is unknown in another
    other = gateway.post("/v1/conversations", {"items": [user("mine")]}).json()["id"]
    assert gateway.get(f"/v1/conversations/{other}/items/{item}").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "params", "param"),
    [
        ("get", "items", None, {"order": "sideways"}, "order"),
        ("get", "items", None, {"limit": 0}, "limit"),
        ("get", "items", None, {"limit": 101}, "limit"),
        ("get", "items", None, {"after": "msg_forged"}, "after"),
        ("post", "items", {"items": [user("x")] * 21}, None, "items"),
        ("post", "items", {"items": [{"type": "reasoning", "summary": []}]}, None, "items[0].type"),
        ("post", "items", {"items": [user("ok"), {"type": "message", "role": "user"}]}, None, "items[1].content"),
        ("post", "items", {"items": []}, None, "items"),
        ("post", "items", {}, None, "items"),
        ("post", "", {"metadata": {"k": 5}}, None, "metadata.k"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter_with_no_write(gateway, method, path, body, params, param):
    conv = gateway.post("/v1/conversations", {"items": [user("a")]}).json()["id"]
    before = table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
    url = f"/v1/conversations/{conv}" + (f"/{path}" if path else "")
    r = gateway.post(url, body) if method == "post" else gateway.get(url, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == param
    assert table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name) == before


def test_bad_create_writes_no_conversation(gateway):
    before = table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
    for body, param in (
        ({"items": [user("x")] * 21}, "items"),
        ({"items": [user("x"), {"type": "item_reference", "id": "msg_1"}]}, "items[1].type"),
    ):
        r = gateway.post("/v1/conversations", body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    r = gateway.post("/v1/conversations", {"items": [user("x" * 300_000)]})
    assert r.status_code == 413 and r.json()["error"]["param"] == "items[0]"
    assert table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name) == before


def test_an_item_over_the_size_limit_is_413_with_no_write(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    before = table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
    r = gateway.post(f"/v1/conversations/{conv}/items", {"items": [user("ok"), user("x" * 300_000)]})
    assert r.status_code == 413 and r.json()["error"]["param"] == "items[1]"
    assert table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name) == before


def test_conversation_list_extension_in_the_list_shape(gateway):
    ids = [gateway.post("/v1/conversations", {}).json()["id"] for _ in range(5)]
    theirs = gateway.post("/v1/conversations", {}, key=OTHER_KEY).json()["id"]
    walks: dict[str, list[str]] = {}
    for order in ("desc", "asc"):
        seen: list[str] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": 2, "order": order} | ({"after": after} if after else {})
            page = gateway.get("/v1/conversations", params=params).json()
            assert page["object"] == "list" and page["first_id"] == page["data"][0]["id"]
            for c in page["data"]:
                parse(Conversation, c)
            seen += [c["id"] for c in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert sorted(seen) == sorted(ids)  # each once, none of the other tenant's
        walks[order] = seen
    assert walks["asc"] == walks["desc"][::-1]
    for params in ({"after": theirs}, {"after": "conv_nope"}, {"order": "up"}, {"limit": 0}):
        r = gateway.get("/v1/conversations", params=params)
        assert r.status_code == 400 and r.json()["error"]["param"] in params
