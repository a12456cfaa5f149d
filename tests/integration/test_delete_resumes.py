"""Deletes that finish (issue 13 item 5): a DELETE whose item cleanup fails after the head is marked
leaves a conversation that every read treats as gone, and the retried DELETE finishes it (2xx) —
nothing of the conversation is left in the table."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import EndpointConnectionError

from llm_gateway.conversations.store import NewMessage, TurnUsage, conversation_pk
from llm_gateway.errors import ConversationBusy
from tests.integration.conftest import chat, table_snapshot


def fail_once(client, operation: str) -> list[int]:
    """The next ``operation`` call on ``client`` fails as a lost connection would; returns a call log."""
    calls: list[int] = []
    lock = threading.Lock()

    def before(**_):
        with lock:
            calls.append(1)
            first = len(calls) == 1
        if first:
            raise EndpointConnectionError(endpoint_url="http://dynamodb.partitioned")

    client.meta.events.register(f"before-call.dynamodb.{operation}", before)
    return calls


def of_conversation(gateway, conv: str) -> list[dict]:
    pk = conversation_pk("tenant-a", conv)
    return [
        i
        for i in table_snapshot(gateway.services.conversations.client, gateway.aws.res.table_name)
        if i["PK"]["S"] == pk
    ]


def test_a_delete_whose_cleanup_failed_once_is_finished_by_its_retry(gateway):
    conv = gateway.post("/v1/conversations", {"metadata": {"k": "v"}}).json()["id"]
    for text in ("one", "two"):
        assert gateway.post("/v1/chat/completions", chat(text, conv)).status_code == 200
    assert len(of_conversation(gateway, conv)) == 5  # head + 4 messages
    other = gateway.post("/v1/conversations", {}).json()["id"]  # untouched by all of this

    calls = fail_once(gateway.services.conversations.client, "BatchWriteItem")
    first = gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers())
    assert first.status_code >= 500 and len(calls) == 1, first.text  # the cleanup failed after the head was marked
    left = of_conversation(gateway, conv)
    assert len(left) == 5 and "deleted_at" in next(i for i in left if i["SK"]["S"] == "META")

    # marked: gone for every read and write, though its items are still stored
    assert gateway.get(f"/v1/conversations/{conv}").status_code == 404
    assert gateway.get(f"/v1/conversations/{conv}/items").status_code == 404
    assert gateway.post(f"/v1/conversations/{conv}", {"metadata": {"k": "w"}}).status_code == 404
    assert gateway.post("/v1/chat/completions", chat("three", conv)).status_code == 404
    item = {"items": [{"type": "message", "role": "user", "content": "x"}]}
    assert gateway.post(f"/v1/conversations/{conv}/items", item).status_code == 404
    assert conv not in [c["id"] for c in gateway.get("/v1/conversations").json()["data"]]

    retry = gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers())
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"id": conv, "object": "conversation.deleted", "deleted": True}
    assert of_conversation(gateway, conv) == []  # a scan of the whole table: nothing of it remains
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers()).status_code == 404
    assert gateway.get(f"/v1/conversations/{other}").status_code == 200


def test_a_delete_whose_last_step_failed_is_finished_by_its_retry(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    assert gateway.post("/v1/chat/completions", chat("one", conv)).status_code == 200
    fail_once(gateway.services.conversations.client, "DeleteItem")  # items gone, the marked head stays
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers()).status_code >= 500
    assert [i["SK"]["S"] for i in of_conversation(gateway, conv)] == ["META"]
    assert gateway.get(f"/v1/conversations/{conv}").status_code == 404
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers()).status_code == 200
    assert of_conversation(gateway, conv) == []


def test_a_turn_whose_lease_expired_cannot_commit_into_a_deleted_conversation(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    store = gateway.services.conversations
    lease = store.acquire_lease("tenant-a", conv, 0.001)  # a turn whose lease ran out mid-call
    time.sleep(0.01)
    assert gateway.client.delete(f"/v1/conversations/{conv}", headers=gateway.headers()).status_code == 200
    with pytest.raises(ConversationBusy):
        store.commit_turn(lease, [NewMessage({"role": "user", "content": "late"}, 3)], usage=TurnUsage())
    assert of_conversation(gateway, conv) == []
