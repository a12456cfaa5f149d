"""One thread per stream that runs its blocking steps and hands their bytes to the event loop.

A streamed reply's chunks come from a blocking read (``requests``); sending them is the event
loop's. One thread-pool hop per chunk (``anyio.to_thread.run_sync`` / Starlette's
``iterate_in_threadpool``) costs two thread switches and the pool's bookkeeping for every chunk
of every stream. :class:`Pump` instead runs the steps in one thread for the stream's life and
wakes the loop (``call_soon_threadsafe``) only when the loop waits for bytes: chunks that arrive
while the loop is busy are sent together. What a slow client has not taken is bounded
(:data:`MAX_AHEAD` bytes); the thread then waits for it.

Written by hand: anyio's thread-crossing calls (``from_thread.run``) are a blocking round trip
per item, and no queue that is both thread- and asyncio-safe is among the dependencies. A thread
of its own, not one of the thread pool's: a stream may last minutes, and a pool worker held for
that long would count against the limit of the requests' own blocking work.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable

Step = tuple[bytes, bool]  # bytes to send, and whether they are the last

MAX_AHEAD = 1 << 20  # bytes read ahead of a client that does not keep up


class Pump:
    """Runs ``step`` in a thread of its own until it returns its last bytes (or :meth:`finish`
    stops it), then ``close``. Started at once, from the event loop, in a copy of the caller's context.

    ``step`` must not raise: a failure is bytes too (an error event), returned as the last.
    """

    def __init__(self, step: Callable[[], Step], close: Callable[[], None]) -> None:
        self._step = step
        self._close = close
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Condition()
        self._ready: list[bytes] = []  # produced, not yet taken by the loop
        self._size = 0
        self._last = False  # the last bytes are among _ready (or the thread has ended)
        self._stopped = False  # the loop wants no more
        self._waiter: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()
        context = contextvars.copy_context()  # the request's log keys, for the step's own lines
        threading.Thread(target=context.run, args=(self._run,), name="sse-pump", daemon=True).start()

    # ---- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            last = False
            while not last:
                data, last = self._step()
                with self._lock:
                    while self._size >= MAX_AHEAD and not self._stopped:
                        self._lock.wait()
                    if self._stopped:
                        return
                    self._ready.append(data)
                    self._size += len(data)
                    self._last = last
                    self._wake_locked()
        finally:
            try:
                self._close()
            finally:
                with self._lock:
                    self._last = True  # whatever happened, the loop waits no more
                    self._wake_locked()
                self._call(self._set_done)

    def _wake_locked(self) -> None:
        if self._waiter is not None:
            waiter, self._waiter = self._waiter, None
            self._call(_resolve, waiter)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(fn, *args)

    def _set_done(self) -> None:
        _resolve(self._done)

    # ---- the event loop --------------------------------------------------------------------
    async def get(self) -> Step:
        """Everything produced since the last call (at least one step's bytes), and whether it ends the stream."""
        while True:
            with self._lock:
                if self._ready or self._last:
                    data = b"".join(self._ready)
                    self._ready.clear()
                    self._size = 0
                    self._lock.notify()
                    return data, self._last
                waiter = self._waiter = self._loop.create_future()
            await waiter

    async def finish(self) -> None:
        """Stop taking steps (a running one ends first: abort the stream to make it quick) and
        wait until ``close`` has run."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
        await self._done


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
