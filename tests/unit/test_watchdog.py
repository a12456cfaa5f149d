"""The upstream watchdog (providers/watchdog.py): a watched connection still waiting at its deadline
has its socket shut down; one unwatched in time is never touched."""

from __future__ import annotations

import threading
import time

from llm_gateway.providers.watchdog import DeadlineAdapter, Watchdog, WatchedHTTPSConnectionPool, watched


class Sock:
    def __init__(self) -> None:
        self.shut = threading.Event()

    def shutdown(self, how: int) -> None:
        self.shut.set()


class Conn:
    def __init__(self) -> None:
        self.sock = Sock()


def test_a_connection_still_watched_at_its_deadline_is_shut_down():
    dog, conn = Watchdog(), Conn()
    dog.watch(conn, time.monotonic() + 0.05)
    assert conn.sock.shut.wait(5)
    assert dog.fired == 1


def test_a_connection_unwatched_in_time_is_left_alone():
    dog, early, late = Watchdog(), Conn(), Conn()
    token = dog.watch(early, time.monotonic() + 0.2)
    dog.watch(late, time.monotonic() + 0.05)  # an earlier deadline behind a later one: heap order
    dog.unwatch(token)
    assert late.sock.shut.wait(5)
    time.sleep(0.3)
    assert not early.sock.shut.is_set() and dog.fired == 1


def test_sessions_get_watched_pools():
    import requests

    session = watched(requests.Session())
    adapter = session.get_adapter("https://api.example")
    assert isinstance(adapter, DeadlineAdapter)
    assert adapter.poolmanager.pool_classes_by_scheme["https"] is WatchedHTTPSConnectionPool
    assert adapter.proxy_manager_for("http://proxy.example:3128").pool_classes_by_scheme["https"] is (
        WatchedHTTPSConnectionPool
    )
