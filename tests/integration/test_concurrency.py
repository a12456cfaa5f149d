"""50 concurrent turns on one conversation (issue 2, "Concurrency").

The app runs under uvicorn in a thread (really concurrent requests, unlike TestClient),
DynamoDB is moto in server mode, the upstream is `responses`.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.integration.conftest import TENANT_KEY, chat, echo_reply, regateway, serve, set_upstream

THREADS = 50
HISTORY = 4
HEADERS = {"Authorization": f"Bearer {TENANT_KEY}"}


def stored_messages(gateway, conversation_id: str) -> list[dict]:
    """The stored messages with their sequence numbers (the store's view; the items API shows the same)."""
    messages, more = gateway.services.conversations.messages("tenant-a", conversation_id, limit=1000, after=None)
    assert more is False
    return [{"seq": m.seq, **m.body} for m in messages]


def assert_turns_stored_once(messages: list[dict], accepted: list[str]) -> None:
    """Gap-free seqs; each accepted turn's user message once, immediately followed by its reply."""
    assert [m["seq"] for m in messages] == list(range(2 * len(accepted)))
    users = [m["content"] for m in messages[0::2]]
    assert [m["role"] for m in messages[0::2]] == ["user"] * len(accepted)
    assert [m["role"] for m in messages[1::2]] == ["assistant"] * len(accepted)
    assert sorted(users) == sorted(accepted)  # none lost, none duplicated, no loser stored
    for question, answer in zip(messages[0::2], messages[1::2], strict=True):
        assert answer["content"].startswith(f"echo:{question['content']} ")


def test_50_concurrent_turns_one_holds_the_lease_the_rest_get_409_before_any_upstream_call(gateway):
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    upstream_entered = threading.Event()
    losers_done = threading.Event()

    def held_upstream(request):
        # The first turn to win the lease parks in its upstream call until every other turn has
        # answered, so all 50 really overlap (events, not sleeps).
        upstream_entered.set()
        assert losers_done.wait(30), "the other turns never finished"
        return echo_reply(request)

    set_upstream(gateway, held_upstream)
    results: list[tuple[int, dict, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    with serve(gateway.app) as base:

        def one(i: int) -> None:
            text = f"turn-{i}"
            barrier.wait()
            r = requests.post(f"{base}/v1/chat/completions", json=chat(text, conv), headers=HEADERS, timeout=60)
            with lock:
                results.append((r.status_code, r.json(), text))
                if sum(1 for s, _, _ in results if s == 409) == THREADS - 1:
                    losers_done.set()

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(one, range(THREADS)))

    statuses = sorted(s for s, _, _ in results)
    assert statuses == [200] + [409] * (THREADS - 1)
    for status, body, _ in results:
        if status == 409:
            assert body["error"]["type"] == "conflict_error"
            assert body["error"]["code"] == "conversation_busy"
    assert upstream_entered.is_set()
    assert len(gateway.upstream_calls()) == 1  # the 49 losers never reached the upstream

    winner = [text for s, _, text in results if s == 200]
    assert_turns_stored_once(stored_messages(gateway, conv), winner)


def test_50_contending_turns_retrying_on_409_are_all_stored_exactly_once(gateway):
    """Every thread retries its turn after a 409 until accepted: under heavy contention no turn
    is lost, none is stored twice, and sequence numbers stay gap-free (0..99)."""
    # A small history budget keeps each turn's reads cheap (moto's Query is slow); the history
    # each turn sent is still checked against what was stored before it.
    gateway = regateway(gateway, history_max_messages=HISTORY)
    conv = gateway.post("/v1/conversations", {}).json()["id"]
    attempts: list[tuple[int, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    with serve(gateway.app) as base:

        def one(i: int) -> None:
            text = f"turn-{i}"
            rng = random.Random(i)
            session = requests.Session()
            barrier.wait()
            for _ in range(400):
                r = session.post(f"{base}/v1/chat/completions", json=chat(text, conv), headers=HEADERS, timeout=60)
                with lock:
                    attempts.append((r.status_code, text))
                if r.status_code == 200:
                    return
                assert r.status_code == 409, r.text
                # back off a little before retrying, as a client would (not synchronisation)
                time.sleep(rng.uniform(0.05, 0.25))
            raise AssertionError(f"{text} never got the conversation")

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(one, range(THREADS)))

    accepted = [text for status, text in attempts if status == 200]
    conflicts = [text for status, text in attempts if status == 409]
    assert sorted(accepted) == sorted(f"turn-{i}" for i in range(THREADS))
    assert conflicts, "the turns never contended"
    # each 409 was refused before its upstream call: the upstream saw exactly the accepted turns
    sent = [body["messages"][-1]["content"] for body in gateway.upstream_calls()]
    assert sorted(sent) == sorted(accepted)
    messages = stored_messages(gateway, conv)
    assert_turns_stored_once(messages, accepted)
    # and each accepted turn read the history committed before it, never a stale or partial one:
    # the newest HISTORY messages preceding its own user message, in order
    seq_of = {m["content"]: m["seq"] for m in messages[0::2]}
    wire = [{"role": m["role"], "content": m["content"]} for m in messages]
    for body in gateway.upstream_calls():
        seq = seq_of[body["messages"][-1]["content"]]
        assert body["messages"][:-1] == wire[max(0, seq - HISTORY) : seq]
    assert gateway.get(f"/v1/conversations/{conv}").json()["message_count"] == 2 * THREADS
