"""The history cache against DynamoDB (moto server): a second store (another process) commits between this
process's turns, and this process's next turn sees it; its own turns read no history."""

from __future__ import annotations

import pytest

from llm_gateway.conversations.cache import CachedConversationStore, HistoryCache
from llm_gateway.conversations.records import NewMessage, TurnUsage
from llm_gateway.conversations.store import DynamoConversationStore
from tests.integration.conftest import count_calls

pytestmark = pytest.mark.integration


def turn(store, conv_id: str, text: str) -> list[str]:
    lease = store.acquire_lease("tenant-a", conv_id, 30)
    history = store.turn_history(lease.conversation, max_messages=200, max_tokens=8_000)
    store.commit_turn(lease, [NewMessage({"role": "user", "content": text}, 5)], usage=TurnUsage())
    return [m.body["content"] for m in history.messages]


def test_a_commit_by_another_process_is_seen_and_this_process_turns_skip_the_query(aws):
    here = CachedConversationStore(
        DynamoConversationStore(aws.res.table_name, client=aws.client("dynamodb"), ttl_days=30), HistoryCache(1 << 20)
    )
    other = DynamoConversationStore(aws.res.table_name, client=aws.client("dynamodb"), ttl_days=30)
    conv = here.create("tenant-a", messages=[NewMessage({"role": "user", "content": "seeded"}, 5)])
    queries = count_calls(here.store.client, ("Query",))

    assert turn(here, conv.id, "one") == ["seeded"]  # a miss: read
    assert turn(here, conv.id, "two") == ["seeded", "one"]  # a hit: nothing read
    assert queries.attempted.get("Query", 0) == 1
    assert turn(other, conv.id, "theirs") == ["seeded", "one", "two"]
    assert turn(here, conv.id, "three") == ["seeded", "one", "two", "theirs"]  # the version moved: read again
    assert queries.attempted.get("Query", 0) == 2
    assert turn(here, conv.id, "four") == ["seeded", "one", "two", "theirs", "three"]
    assert queries.attempted.get("Query", 0) == 2
    assert here.cache.hits == 2 and here.cache.misses == 2

    # an item removed by the other process: the next turn reads the table again and misses it
    lease = other.acquire_lease("tenant-a", conv.id, 30)
    other.commit_edit(lease, 1, None)
    fresh = other.read_history("tenant-a", conv.id, max_messages=200, max_tokens=8_000)
    lease = here.acquire_lease("tenant-a", conv.id, 30)
    window = here.turn_history(lease.conversation, max_messages=200, max_tokens=8_000)
    assert [m.body for m in window.messages] == [m.body for m in fresh.messages]
    assert "one" not in [m.body["content"] for m in window.messages]
    here.release_lease(lease)
