"""The conversation lease's ownership rules against DynamoDB (moto server mode)."""

from __future__ import annotations

import pytest

from llm_gateway.conversations.store import DynamoConversationStore
from llm_gateway.errors import ConversationBusy

pytestmark = pytest.mark.integration


def head_lease(store: DynamoConversationStore, tenant: str, conversation_id: str) -> dict:
    item = store.client.get_item(TableName=store.table, Key=store._key(tenant, conversation_id), ConsistentRead=True)[
        "Item"
    ]
    return {k: v for k, v in item.items() if k.startswith("lease")}


def test_only_the_holder_extends_or_releases_the_lease(aws):
    store = DynamoConversationStore(aws.res.table_name, client=aws.client("dynamodb"))
    conv = store.create("tenant-a")
    stale = store.acquire_lease("tenant-a", conv.id, -1)  # expired at once: the next turn may take over
    holder = store.acquire_lease("tenant-a", conv.id, 60)
    assert holder.lease_id != stale.lease_id

    with pytest.raises(ConversationBusy):
        store.extend_lease(stale, 60)
    store.release_lease(stale)  # not held: nothing happens
    assert head_lease(store, "tenant-a", conv.id)["lease_id"] == {"S": holder.lease_id}
    with pytest.raises(ConversationBusy):
        store.acquire_lease("tenant-a", conv.id, 60)

    before = holder.expires_at
    store.extend_lease(holder, 120)
    assert holder.expires_at > before
    assert head_lease(store, "tenant-a", conv.id)["lease_expires"] == {"N": str(holder.expires_at)}

    store.release_lease(holder)
    assert head_lease(store, "tenant-a", conv.id) == {}
    store.release_lease(holder)  # releasing twice is harmless
    assert store.acquire_lease("tenant-a", conv.id, 60).lease_id
