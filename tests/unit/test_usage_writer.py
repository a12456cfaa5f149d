"""The usage writer over the in-memory counter store: coalescing, back-pressure, retries, drain,
and which settlements QuotaService hands it (unlimited holds only)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from llm_gateway.quotas.admin import AdminService
from llm_gateway.quotas.counters import Counter
from llm_gateway.quotas.limits import Limits
from llm_gateway.quotas.service import QuotaService, Windows, key_pk, tenant_pk
from llm_gateway.quotas.writer import UsageWriter, coalesce
from llm_gateway.upstream.aliases import Deployment, ModelAlias
from tests.fakes import InMemoryCounterStore, InMemoryLimitsStore

NOW = 1_800_000_030.0  # 2027-01-15T08:00:30Z
DAY = Windows.at(NOW).day
ALIAS = ModelAlias(
    name="m", deployments=[Deployment(name="d", model="x", input_price_per_1m=1.0, output_price_per_1m=2.0)]
)


class GatedCounterStore(InMemoryCounterStore):
    """Settle calls from the writer thread wait for ``gate``; any other caller's go straight through."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.held = threading.Event()  # the writer thread is waiting at the gate
        self.writer_calls = 0

    def settle(self, counters: list[Any], releases: list[tuple[str, str, str]], token: str) -> None:
        if threading.current_thread().name == "usage-writer":
            self.held.set()
            self.gate.wait()
            self.writer_calls += 1
        super().settle(counters, releases, token)


@pytest.fixture
def store() -> GatedCounterStore:
    return GatedCounterStore()


def service(store: InMemoryCounterStore, writer: UsageWriter | None) -> QuotaService:
    quotas = QuotaService(store, InMemoryLimitsStore(), output_reserve_tokens=100, writer=writer)
    quotas.clock = lambda: NOW
    return quotas


def test_coalesce_sums_every_add_exactly_per_item_and_drops_empty_ones():
    merged = coalesce(
        [
            Counter("p", "D#1", {"req": 1, "tok": 10, "nusd": 7}, ttl=5),
            Counter("p", "D#1", {"req": 1, "tok": -3, "in": 2}, ttl=5),
            Counter("q", "D#1", {"req": 1}, ttl=9),
            Counter("p", "D#1", {"nusd": -7}, ttl=5),
            Counter("r", "D#1", {"tok": 4}),
            Counter("r", "D#1", {"tok": -4}),
        ]
    )
    assert merged == [
        Counter("p", "D#1", {"req": 2, "tok": 7, "in": 2}, ttl=5),
        Counter("q", "D#1", {"req": 1}, ttl=9),
    ]


def test_what_is_pending_is_written_in_one_call_with_the_exact_sums(store):
    writer = UsageWriter(store)
    quotas = service(store, writer)
    for i in range(30):  # the writer is held on its first write: the other 29 wait, then go together
        quotas.admit("t", "k", ALIAS, 10 + i, 5, 30).settle(10 + i, 5, 0.000001 * (i + 1))
        assert store.held.wait(5)
    assert store.settles == 0  # nothing was written on the callers' path
    store.gate.set()
    assert writer.drain(5)
    assert store.writer_calls == 2  # the first settlement alone, then the 29 pending in one transaction
    for pk in (tenant_pk("t"), key_pk("t", "k")):
        day = store.read(pk, f"D#{DAY}")
        assert day["req"] == 30
        assert day["in"] == sum(10 + i for i in range(30))
        assert day["out"] == 150
        assert day["tok"] == day["in"] + day["out"]
        assert day["nusd"] == sum(1_000 * (i + 1) for i in range(30))
    per_model = store.read(tenant_pk("t"), f"D#{DAY}#A#m")
    assert per_model["req"] == 30 and per_model["nusd"] == sum(1_000 * (i + 1) for i in range(30))


def test_more_items_than_one_transaction_holds_are_split(store):
    store.gate.set()
    writer = UsageWriter(store)
    writer.write([Counter(f"T#{i}#Q", f"D#{DAY}", {"req": 1}) for i in range(250)])
    assert [n for n, _ in store.settle_calls] == [100, 100, 50]
    assert all(store.read(f"T#{i}#Q", f"D#{DAY}")["req"] == 1 for i in range(250))


def test_over_the_bound_the_caller_writes_itself_and_nothing_is_lost(store):
    writer = UsageWriter(store, max_pending=6)  # two unlimited settlements of 3 updates each
    quotas = service(store, writer)
    for _ in range(5):
        quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.0)
        assert store.held.wait(5)
    # the first went to the writer (held at the gate), two queued, the last two written by their callers
    assert store.settles == 2
    assert writer.pending() == 6
    store.gate.set()
    assert writer.drain(5)
    assert store.read(key_pk("t", "k"), f"D#{DAY}")["req"] == 5
    assert store.read(tenant_pk("t"), f"D#{DAY}#A#m")["req"] == 5


def test_a_failed_write_is_retried_with_the_same_token_then_lands(store):
    store.gate.set()
    store.fail_settles = 2
    sleeps: list[float] = []
    writer = UsageWriter(store, attempts=4, sleep=sleeps.append)
    writer.write([Counter("p", f"D#{DAY}", {"req": 1}), Counter("q", f"D#{DAY}", {"req": 2})])
    assert len(store.settle_calls) == 3 and len({token for _, token in store.settle_calls}) == 1
    assert len(sleeps) == 2 and all(s > 0 for s in sleeps)
    assert store.read("q", f"D#{DAY}")["req"] == 2 and writer.given_up == 0


def test_a_write_that_keeps_failing_is_given_up_and_reported_never_raised(store):
    store.gate.set()
    store.fail_settles = 10
    given_up: list[tuple[int, str]] = []
    writer = UsageWriter(
        store, attempts=3, sleep=lambda _: None, on_give_up=lambda n, exc: given_up.append((n, type(exc).__name__))
    )
    quotas = service(store, writer)
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.0)  # never raises
    assert writer.drain(5)
    assert len(store.settle_calls) == 3  # the attempts, then given up
    assert given_up == [(3, "ConnectionError")] and writer.given_up == 3
    store.fail_settles = 0
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.0)  # the writer still works afterwards
    assert writer.drain(5)
    assert store.read(key_pk("t", "k"), f"D#{DAY}")["req"] == 1


def test_drain_times_out_while_a_write_is_held_then_returns_once_it_lands(store):
    writer = UsageWriter(store)
    service(store, writer).admit("t", None, ALIAS, 10, 5, 30).settle(10, 5, 0.0)
    assert writer.drain(0.05) is False
    store.gate.set()
    assert writer.drain(5) is True and writer.pending() == 0
    assert store.read(tenant_pk("t"), f"D#{DAY}")["req"] == 1


def test_a_hold_with_a_cap_or_a_slot_settles_before_settle_returns(store):
    quotas = service(store, UsageWriter(store))  # the writer's gate stays shut: only callers write
    quotas.limits.put_key("t", "k", Limits(max_concurrent=1))
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.0)
    assert not store.read(key_pk("t", "k"), "SLOTS")["holders"]  # the slot is free at once
    assert store.read(key_pk("t", "k"), f"D#{DAY}")["in"] == 10
    quotas.limits.put_key("t", "k", Limits())
    quotas.limits.put_tenant("t", Limits(tokens_per_day=1_000))
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.0)
    assert store.read(tenant_pk("t"), f"D#{DAY}")["tok"] == 30  # both requests' real use, now
    assert store.writer_calls == 0 and store.settles == 2


def test_a_usage_report_waits_for_this_process_pending_writes(store):
    writer = UsageWriter(store)
    quotas = service(store, writer)
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.0)

    def drain() -> bool:  # the gate opens only if the report drains first
        store.gate.set()
        return quotas.drain(5)

    admin = AdminService(None, quotas.limits, store, today=_today, drain=drain)
    report = admin.usage(None, "t", None, None, "day")
    assert report["total"]["requests"] == 1 and report["total"]["input_tokens"] == 10


def _today() -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(NOW, dt.UTC).date()


def test_a_coalescing_window_holds_later_writes_until_it_ends_or_a_drain(store):
    store.gate.set()
    writer = UsageWriter(store, min_interval=60.0)
    quotas = service(store, writer)
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.000001)
    assert writer.drain(5) and store.writer_calls == 1  # the first cycle starts at once
    for _ in range(5):
        quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.000001)
    time.sleep(0.05)
    assert store.writer_calls == 1 and writer.pending() == 15  # inside the window: coalescing, not writing
    started = time.monotonic()
    assert writer.drain(5)  # a drain writes at once, whatever the window
    assert time.monotonic() - started < 5
    assert store.writer_calls == 2  # the five settlements in one transaction
    assert store.read(tenant_pk("t"), f"D#{DAY}")["req"] == 6


class CountingCondition(threading.Condition):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify_all(self) -> None:
        self.notified += 1
        super().notify_all()


def test_submits_inside_the_window_do_not_wake_the_writer_and_still_land_when_it_ends(store):
    """Only a submit to an idle writer wakes it: one that finds updates pending (the writer waiting
    out its window, or writing) leaves it alone, and the window's end writes them all the same."""
    store.gate.set()
    writer = UsageWriter(store, min_interval=0.3)
    writer._cond = condition = CountingCondition()
    quotas = service(store, writer)
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.000001)
    assert writer.drain(5) and store.writer_calls == 1  # the first cycle, done: the writer waits for work
    woken = condition.notified
    quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.000001)  # pending was empty: wakes it
    for _ in range(20):
        quotas.admit("t", "k", ALIAS, 10, 5, 30).settle(10, 5, 0.000001)
    assert condition.notified == woken + 1
    deadline = time.monotonic() + 5
    while store.writer_calls < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert store.writer_calls == 2 and writer.pending() == 0  # the window ended: all 21 in one write
    assert store.read(tenant_pk("t"), f"D#{DAY}")["req"] == 22
