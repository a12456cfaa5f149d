"""The process-local history cache (conversations.cache): the window a turn gets from it is always the one
``read_history`` returns, whoever changed the conversation; and it stays within its bytes."""

from __future__ import annotations

import random

import pytest

from llm_gateway.conversations.cache import (
    EXPIRY_MARGIN_SECONDS,
    CachedConversationStore,
    HistoryCache,
    newest_window,
)
from llm_gateway.conversations.records import History, NewMessage, StoredMessage, TurnUsage
from llm_gateway.errors import ConversationBusy
from tests.fakes import InMemoryConversationStore

TENANT = "tenant-a"


def shape(messages: list[StoredMessage]) -> list[tuple[int, dict, int]]:
    return [(m.seq, m.body, m.tokens) for m in messages]


def new_messages(rng: random.Random, label: str) -> list[NewMessage]:
    return [
        NewMessage({"role": rng.choice(["user", "assistant"]), "content": f"{label}-{i}"}, rng.randint(1, 15))
        for i in range(rng.randint(1, 3))
    ]


def other_process_turn(store: InMemoryConversationStore, conv_id: str, rng: random.Random) -> None:
    lease = store.acquire_lease(TENANT, conv_id, 30)
    store.commit_turn(lease, new_messages(rng, "other"), usage=TurnUsage())


def edit(store, conv_id: str, rng: random.Random, inner: InMemoryConversationStore) -> None:
    seqs = sorted(inner.messages_of[(TENANT, conv_id)])
    if not seqs:
        return
    seq = rng.choice(seqs)
    lease = store.acquire_lease(TENANT, conv_id, 30)
    replacement = None if rng.random() < 0.5 else NewMessage({"role": "user", "content": "edited"}, rng.randint(1, 15))
    store.commit_edit(lease, seq, replacement)


@pytest.mark.parametrize("seed", range(25))
def test_the_cached_window_is_always_what_a_fresh_read_returns(seed):
    rng = random.Random(seed)
    inner = InMemoryConversationStore()
    cache = HistoryCache(rng.choice([3_000, 20_000, 1_000_000]))  # small ones evict between turns
    here = CachedConversationStore(inner, cache)
    conversations = [here.create(TENANT).id for _ in range(3)]
    compared = 0
    for step in range(60):
        conv_id = rng.choice(conversations)
        action = rng.random()
        if action < 0.55:  # a turn in this process
            lease = here.acquire_lease(TENANT, conv_id, 30)
            budget = {"max_messages": rng.randint(1, 8), "max_tokens": rng.randint(1, 60)}
            got = here.turn_history(lease.conversation, **budget)
            fresh = (
                inner.read_history(TENANT, conv_id, **budget) if lease.conversation.message_count else History([], 0)
            )
            assert shape(got.messages) == shape(fresh.messages), (seed, step)
            compared += 1
            ending = rng.random()
            if ending < 0.75:
                here.commit_turn(lease, new_messages(rng, f"here{step}"), usage=TurnUsage())
            elif ending < 0.85:
                inner.fail_commit = RuntimeError("transaction failed")
                with pytest.raises(RuntimeError):
                    here.commit_turn(lease, new_messages(rng, "lost"), usage=TurnUsage())
                here.release_lease(lease)
            else:  # the upstream failed: nothing committed
                here.release_lease(lease)
        elif action < 0.75:  # another process's turn: this one never hears of it
            other_process_turn(inner, conv_id, rng)
        elif action < 0.85:
            edit(here, conv_id, rng, inner)
        elif action < 0.93:
            edit(inner, conv_id, rng, inner)  # another process removes or rewrites an item
        else:
            (here if rng.random() < 0.5 else inner).delete(TENANT, conv_id)
            conversations[conversations.index(conv_id)] = here.create(TENANT).id
        assert cache.bytes <= cache.max_bytes
    assert compared > 20
    assert cache.hits > 0 and cache.misses > 0


def test_a_turn_after_this_process_committed_reads_nothing():
    inner = InMemoryConversationStore()
    here = CachedConversationStore(inner, HistoryCache(1_000_000))
    conv = here.create(TENANT)
    for turn in range(5):
        lease = here.acquire_lease(TENANT, conv.id, 30)
        history = here.turn_history(lease.conversation, max_messages=200, max_tokens=8_000)
        assert [m.body["content"] for m in history.messages] == [f"m{i}" for i in range(2 * turn)]
        assert history.cache_hit is (True if turn else None) and history.items_read == 0
        here.commit_turn(
            lease,
            [
                NewMessage({"role": "user", "content": f"m{2 * turn}"}, 3),
                NewMessage({"role": "assistant", "content": f"m{2 * turn + 1}"}, 3),
            ],
            usage=TurnUsage(),
        )
    assert inner.history_reads == []  # every window came from the cache


def test_another_process_commit_is_seen_on_the_next_turn():
    inner = InMemoryConversationStore()
    here = CachedConversationStore(inner, HistoryCache(1_000_000))
    conv = here.create(TENANT)
    lease = here.acquire_lease(TENANT, conv.id, 30)
    here.turn_history(lease.conversation, max_messages=200, max_tokens=8_000)
    here.commit_turn(lease, [NewMessage({"role": "user", "content": "mine"}, 3)], usage=TurnUsage())
    other = inner.acquire_lease(TENANT, conv.id, 30)
    inner.commit_turn(other, [NewMessage({"role": "user", "content": "theirs"}, 3)], usage=TurnUsage())

    lease = here.acquire_lease(TENANT, conv.id, 30)
    history = here.turn_history(lease.conversation, max_messages=200, max_tokens=8_000)
    assert [m.body["content"] for m in history.messages] == ["mine", "theirs"]
    assert history.cache_hit is False and len(inner.history_reads) == 1


def test_a_bigger_budget_than_the_cached_one_reads_again_unless_the_window_is_the_whole_history():
    inner = InMemoryConversationStore()
    here = CachedConversationStore(inner, HistoryCache(1_000_000))
    conv = here.create(TENANT, messages=[NewMessage({"role": "user", "content": str(i)}, 10) for i in range(6)])
    lease = here.acquire_lease(TENANT, conv.id, 30)
    assert len(here.turn_history(lease.conversation, max_messages=3, max_tokens=100).messages) == 3
    assert here.turn_history(lease.conversation, max_messages=2, max_tokens=100).cache_hit is True
    assert here.turn_history(lease.conversation, max_messages=4, max_tokens=100).cache_hit is False
    whole = here.turn_history(lease.conversation, max_messages=50, max_tokens=1_000)
    assert len(whole.messages) == 6
    bigger = here.turn_history(lease.conversation, max_messages=100, max_tokens=5_000)
    assert bigger.cache_hit is True and len(bigger.messages) == 6


def stored(seq: int, tokens: int, expires_at: int = 0) -> StoredMessage:
    return StoredMessage(seq, {"role": "user", "content": "x" * 50}, tokens, 0, expires_at=expires_at)


def test_newest_window_keeps_what_read_history_keeps():
    messages = [stored(i, t) for i, t in enumerate([5, 1, 9, 2, 2])]
    assert [m.seq for m in newest_window(messages, 10, 13)[0]] == [2, 3, 4]
    assert newest_window(messages, 10, 13)[1] is True  # message 1 did not fit
    assert [m.seq for m in newest_window(messages, 2, 100)[0]] == [3, 4]
    assert newest_window(messages, 10, 100) == (messages, False)
    assert newest_window(messages, 10, 1) == ([], True)


def test_a_window_with_a_message_near_its_expiry_is_read_from_the_table():
    now = 1_000_000.0
    cache = HistoryCache(1_000_000, clock=lambda: now)
    conv = InMemoryConversationStore().create(TENANT)
    conv.message_count, conv.version = 2, 4
    cache.fill(conv, History([stored(0, 1, int(now) + 10 * EXPIRY_MARGIN_SECONDS), stored(1, 1)], 2), 10, 100)
    assert cache.window(conv, 10, 100) is not None
    now += 9 * EXPIRY_MARGIN_SECONDS + 1  # message 0 expires within the margin: DynamoDB may soon drop it
    assert cache.window(conv, 10, 100) is None
    cache.fill(conv, History([stored(0, 1, int(now) + 10), stored(1, 1)], 2), 10, 100)
    assert len(cache) == 0  # never kept


def test_the_cache_evicts_least_recently_used_conversations_to_stay_within_its_bytes():
    cache = HistoryCache(20_000)
    store = InMemoryConversationStore()
    convs = [store.create(TENANT) for _ in range(40)]
    for conv in convs:
        conv.message_count = 10
        cache.fill(conv, History([stored(i, 1) for i in range(10)], 10), 200, 8_000)
        cache.window(convs[0], 200, 8_000)  # the first stays in use
        assert cache.bytes <= 20_000
    assert cache.window(convs[0], 200, 8_000) is not None
    assert cache.window(convs[-1], 200, 8_000) is not None
    assert cache.window(convs[1], 200, 8_000) is None
    assert 1 < len(cache) < 40
    huge = store.create(TENANT)
    cache.fill(huge, History([stored(i, 1) for i in range(100)], 100), 200, 8_000)
    assert cache.window(huge, 200, 8_000) is None  # larger than the whole cache: not kept


def test_a_failed_commit_or_an_edit_drops_the_entry():
    inner = InMemoryConversationStore()
    here = CachedConversationStore(inner, HistoryCache(1_000_000))
    conv = here.create(TENANT, messages=[NewMessage({"role": "user", "content": "a"}, 1)])
    lease = here.acquire_lease(TENANT, conv.id, 30)
    here.turn_history(lease.conversation, max_messages=10, max_tokens=100)
    assert len(here.cache) == 1
    inner.fail_commit = ConversationBusy("changed")
    with pytest.raises(ConversationBusy):
        here.commit_turn(lease, [NewMessage({"role": "user", "content": "b"}, 1)], usage=TurnUsage())
    assert len(here.cache) == 0
    here.release_lease(lease)
    lease = here.acquire_lease(TENANT, conv.id, 30)
    here.turn_history(lease.conversation, max_messages=10, max_tokens=100)
    here.commit_edit(lease, 0, None)
    assert len(here.cache) == 0


@pytest.mark.parametrize("content", [20, 2_000])
def test_the_bytes_bound_is_the_memory_the_cache_takes(content):
    """What the cache counts is close to the Python memory its windows take (so HISTORY_CACHE_BYTES bounds RSS)."""
    import json
    import tracemalloc

    from llm_gateway.conversations.records import Conversation
    from llm_gateway.conversations.table import Table

    tracemalloc.start()
    try:
        cache = HistoryCache(1 << 18)
        base = tracemalloc.get_traced_memory()[0]
        for n in range(100):
            conv = Conversation(id=f"conv_{n:032x}", tenant=TENANT, created_at=0, updated_at=0, message_count=20)
            items = [
                {
                    "SK": {"S": f"M#{i:010d}"},
                    "msg": {"S": json.dumps({"role": "user", "content": "x" * content + str(i)})},
                    "tokens": {"N": "10"},
                    "created_at": {"N": "1"},
                }
                for i in range(20)
            ]
            cache.fill(conv, History([Table._message(item) for item in items], 20), 200, 8_000)
            del items
        traced = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(cache) < 100  # it evicted
    assert 0.75 * cache.max_bytes < traced < 1.25 * cache.max_bytes
