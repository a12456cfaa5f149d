"""The upstream exchange up to the reply's headers, ended at the request's deadline.

``requests``/``urllib3`` time each socket read, so an upstream that sends its status line and
headers a byte at a time never trips a read timeout. :class:`DeadlineAdapter` (mounted on the
providers' sessions) watches each request until its headers have arrived: when the active
scope's deadline (``deadline.current()``, entered by the router) passes first, one watchdog
thread shuts the connection's socket down, the blocked read returns, and the provider reports
UpstreamTimeout (504). After the headers, :mod:`.body` and :mod:`.sse` bound every read by the
time left themselves. Outside a deadline scope nothing is watched.

The same hook lets a cancelled job end its exchange at once (:class:`CallScope`, used by
``llm_gateway.jobs.cancel``): the job's cancel watch shuts the socket down from its own thread.

Written by hand: neither library offers a total timeout. Cheap: one daemon thread for the
process, a heap of deadlines, no thread per request.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from llm_gateway.deadline import current


class Watchdog:
    """Shuts down the socket of a watched connection whose deadline passes before it is unwatched."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, Any] = {}  # token -> connection
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.fired = 0  # connections cut at their deadline (for tests and metrics)

    def watch(self, conn: Any, expires_at: float) -> int:
        with self._cond:
            token = next(self._ids)
            self._watched[token] = conn
            heapq.heappush(self._heap, (expires_at, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="upstream-watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][1] == token:  # the earliest now: wake the thread to wait for it (else it wakes in time)
                self._cond.notify()
            return token

    def unwatch(self, token: int) -> None:
        with self._cond:  # after this returns, the watchdog can no longer touch the connection
            self._watched.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._watched:
                    heapq.heappop(self._heap)  # unwatched in time
                if not self._heap:
                    self._cond.wait()
                    continue
                expires_at, token = self._heap[0]
                wait = expires_at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                conn = self._watched.pop(token, None)
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    self.fired += 1
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = Watchdog()


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class CallScope:
    """The upstream exchanges one thread makes inside ``with abortable(scope)``, abortable from
    another thread (a cancelled job): :meth:`abort` shuts down the sockets of the exchanges waiting
    for their reply's headers right now, so the call fails at once and the upstream sees the
    connection close — and any exchange the thread starts afterwards is cut as it starts. Only those
    connections are touched, never one another thread is using."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conns: list[Any] = []
        self.aborted = False

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            conns, self._conns = self._conns, []
        for conn in conns:
            _shutdown(conn)

    def using(self, conn: Any) -> None:
        with self._lock:
            if not self.aborted:
                self._conns.append(conn)
                return
        _shutdown(conn)

    def done(self, conn: Any) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)


_calls = threading.local()  # .scope: the CallScope of this thread's exchanges, if any


@contextlib.contextmanager
def abortable(scope: CallScope) -> Iterator[CallScope]:
    """The upstream exchanges of this thread, while inside, belong to ``scope``."""
    _calls.scope = scope
    try:
        yield scope
    finally:
        _calls.scope = None


class _Watched:
    """``_make_request`` (send the request, read the status line and headers) under the watchdog,
    and abortable by the thread's :class:`CallScope`."""

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        calls: CallScope | None = getattr(_calls, "scope", None)
        if calls is not None:
            calls.using(conn)
        try:
            scope = current()
            if scope is None:
                return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]
            token = WATCHDOG.watch(conn, scope.deadline.expires_at)
            try:
                return super()._make_request(conn, *args, **kwargs)  # type: ignore[misc]
            finally:
                WATCHDOG.unwatch(token)
        finally:
            if calls is not None:
                calls.done(conn)


class WatchedHTTPConnectionPool(_Watched, HTTPConnectionPool):
    pass


class WatchedHTTPSConnectionPool(_Watched, HTTPSConnectionPool):
    pass


POOLS = {"http": WatchedHTTPConnectionPool, "https": WatchedHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose pools (direct and through an HTTP proxy) are watched to the deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = POOLS
        return manager


def watched(session: Any) -> Any:
    """Mount :class:`DeadlineAdapter` on ``session`` for http and https; returns it."""
    session.mount("https://", DeadlineAdapter())
    session.mount("http://", DeadlineAdapter())
    return session
