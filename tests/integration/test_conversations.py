"""The conversation routes: create, list (our extension: tenant-scoped, paginated), retrieve, delete."""

from __future__ import annotations

import time

from llm_gateway.conversations.store import conversation_pk
from tests.integration.conftest import OTHER_KEY, chat, conversation_messages


def items_of(gateway, tenant: str, conversation_id: str) -> list[dict]:
    return gateway.services.conversations.client.query(
        TableName=gateway.aws.res.table_name,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": conversation_pk(tenant, conversation_id)}},
        ConsistentRead=True,
    )["Items"]


def test_create_returns_the_conversation(gateway):
    r = gateway.post("/v1/conversations", {"model": "default", "system": "Be brief.", "metadata": {"team": "a"}})
    assert r.status_code == 200  # as OpenAI's conversations.create
    body = r.json()
    assert body["id"].startswith("conv_") and body["object"] == "conversation"
    assert (body["model"], body["system"], body["metadata"], body["message_count"]) == (
        "default",
        "Be brief.",
        {"team": "a"},
        0,
    )
    assert gateway.get(f"/v1/conversations/{body['id']}").json()["system"] == "Be brief."
    # an empty body is fine; unknown fields and unknown models are not
    assert gateway.client.post("/v1/conversations", headers=gateway.headers()).status_code == 200
    assert gateway.post("/v1/conversations", {"colour": "red"}).status_code == 400
    r = gateway.post("/v1/conversations", {"model": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_list_is_tenant_scoped_and_paginates_with_a_cursor(gateway):
    created_order = []
    for _ in range(5):
        created_order.append(gateway.post("/v1/conversations", {}).json()["id"])
        time.sleep(0.002)  # distinct creation milliseconds (the list's sort key), not a timed assertion
    mine = set(created_order)
    theirs = gateway.post("/v1/conversations", {}, key=OTHER_KEY).json()["id"]

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2} | ({"after": cursor} if cursor else {})
        page = gateway.get("/v1/conversations", params=params).json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["last_id"]
    assert sorted(seen) == sorted(mine)  # each exactly once, none of the other tenant's
    # newest first, by creation order (created_at has whole seconds: all five may share one)
    listed = [c["id"] for c in gateway.get("/v1/conversations", params={"limit": 100}).json()["data"]]
    assert listed == created_order[::-1]
    assert [c["id"] for c in gateway.get("/v1/conversations", key=OTHER_KEY).json()["data"]] == [theirs]
    r = gateway.get("/v1/conversations", params={"after": "!!not-a-conversation"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"


def test_get_returns_the_conversation_and_its_items_have_their_own_route(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    assert gateway.post("/v1/chat/completions", chat("hello", conv)).status_code == 200
    got = gateway.get(f"/v1/conversations/{conv}").json()
    assert got["id"] == conv and got["message_count"] == 2
    assert "messages" not in got  # OpenAI's Conversation embeds no items (issue 10)
    assert [m["role"] for m in conversation_messages(gateway, conv)] == ["user", "assistant"]
    assert got["usage"]["total_tokens"] == got["usage"]["prompt_tokens"] + got["usage"]["completion_tokens"] > 0


def test_delete_removes_the_conversation_and_every_message(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    for text in ("one", "two"):
        assert gateway.post("/v1/chat/completions", chat(text, conv)).status_code == 200
    assert len(items_of(gateway, "tenant-a", conv)) == 5  # head + 4 messages

    r = gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers())
    assert r.status_code == 200
    assert r.json() == {"id": conv, "object": "conversation.deleted", "deleted": True}
    assert items_of(gateway, "tenant-a", conv) == []
    assert gateway.get(f"/v1/conversations/{conv}").status_code == 404
    assert gateway.post("/v1/chat/completions", chat("three", conv)).status_code == 404
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers()).status_code == 404
    assert conv not in [c["id"] for c in gateway.get("/v1/conversations").json()["data"]]


def test_delete_while_a_turn_holds_the_lease_is_409_and_deletes_nothing(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    assert gateway.post("/v1/chat/completions", chat("one", conv)).status_code == 200
    lease = gateway.services.conversations.acquire_lease("tenant-a", conv, 30)  # a turn in flight
    r = gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers())
    assert r.status_code == 409 and r.json()["error"]["type"] == "conflict_error"
    assert len(items_of(gateway, "tenant-a", conv)) == 3
    gateway.services.conversations.release_lease(lease)
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers()).status_code == 200


def test_another_tenant_cannot_delete(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers(OTHER_KEY)).status_code == 404
    assert gateway.get(f"/v1/conversations/{conv}").status_code == 200


def test_has_more_is_exact_when_a_page_is_exactly_full(gateway):
    ids = {gateway.post("/v1/conversations", {}).json()["id"] for _ in range(4)}
    full = gateway.get("/v1/conversations", params={"limit": 4}).json()
    assert {c["id"] for c in full["data"]} == ids
    assert full["has_more"] is False  # no empty page to chase
    first = gateway.get("/v1/conversations", params={"limit": 3}).json()
    assert first["has_more"] is True
    rest = gateway.get("/v1/conversations", params={"limit": 3, "after": first["last_id"]}).json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert {c["id"] for c in first["data"] + rest["data"]} == ids
