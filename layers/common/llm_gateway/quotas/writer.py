"""Usage that enforces nothing, written behind the reply.

A request of an unlimited tenant and key (no cap, no concurrency slot: the default) reserves
nothing; its settlement only records usage (the day counters and the per-model row). Writing it
before the reply cost every such request a DynamoDB round trip. :class:`UsageWriter` takes those
writes off the reply's path instead: one daemon thread per process, started on first use, writes
right away whatever is pending, coalesced — the ADDs summed per counter item — so a busy tenant
costs one ``TransactWriteItems`` per write cycle, not one per request.

* Bounded: past ``max_pending`` queued counter updates, :meth:`UsageWriter.submit` refuses and the
  caller writes synchronously (back-pressure; nothing is dropped, memory stays bounded).
* A failed write is retried with exponential backoff and jitter (tenacity), with the same
  ``ClientRequestToken``, so a transaction that did land before its answer was lost is not
  counted twice; then logged (counts and the error type only) and counted in the
  ``UsageWriteFailures`` metric. A reply never fails over it.
* :meth:`UsageWriter.drain` waits until everything submitted so far is written (or given up):
  ``/v1/usage`` and admin usage reads call it first, so a client reading its own usage after a
  request sees it on the same instance; the API drains at shutdown and the worker before it
  returns a batch (Lambda freezes the container then). A container frozen with writes pending
  resumes them at its next invocation; one reclaimed meanwhile loses them — unlimited usage only,
  never a limit: holds with a cap or a slot settle synchronously (:meth:`QuotaService.settle`).

Written by hand: a queue with coalescing, back-pressure and a drain barrier is a few lines over
``threading.Condition``; ``concurrent.futures`` and ``queue.Queue`` have no coalescing or drain.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable

from tenacity import Retrying, stop_after_attempt, wait_exponential_jitter

from llm_gateway.aws.dynamo import TRANSACT_MAX_ITEMS
from llm_gateway.quotas.counters import Counter, CounterStore

MAX_PENDING = 10_000  # queued counter updates (3 per unlimited request) before callers write themselves
# The deployed writer's coalescing window: a write cycle starts at most this long after the previous
# one began (a drain flushes at once). Writing whenever anything was pending cost a TransactWriteItems
# every ~3 requests under load — botocore CPU competing for the GIL with the request threads.
COALESCE_SECONDS = 0.5
WRITE_ATTEMPTS = 4


def coalesce(updates: Iterable[Counter]) -> list[Counter]:
    """One update per (PK, SK): the ADDs summed exactly (integers), the first TTL kept (every update
    of one window's item carries the same one), updates that add nothing left out."""
    merged: dict[tuple[str, str], tuple[dict[str, int], int | None]] = {}
    for update in updates:
        add, ttl = merged.setdefault((update.pk, update.sk), ({}, update.ttl))
        for attr, value in update.add.items():
            add[attr] = add.get(attr, 0) + value
    out = []
    for (pk, sk), (add, ttl) in merged.items():
        add = {attr: value for attr, value in add.items() if value}
        if add:
            out.append(Counter(pk, sk, add, ttl=ttl))
    return out


def chunks(updates: list[Counter], size: int = TRANSACT_MAX_ITEMS) -> list[list[Counter]]:
    return [updates[i : i + size] for i in range(0, len(updates), size)]


class UsageWriter:
    """Write-behind of unconditional counter ADDs: coalesced, bounded, retried, drainable."""

    def __init__(
        self,
        counters: CounterStore,
        *,
        max_pending: int = MAX_PENDING,
        attempts: int = WRITE_ATTEMPTS,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        on_give_up: Callable[[int, BaseException], None] | None = None,
        min_interval: float = 0.0,
    ) -> None:
        self.counters = counters
        self.max_pending = max_pending
        self.on_give_up = on_give_up or _report_give_up
        self.min_interval = min_interval  # seconds between the starts of two write cycles
        self._flush = 0  # drains waiting: write at once, whatever the interval
        self._retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial),
            sleep=sleep,
            reraise=True,
        )
        self._pending: list[Counter] = []
        self._writing = False  # a taken batch is being written
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.writes = 0  # TransactWriteItems/UpdateItem calls that succeeded (for tests and benches)
        self.given_up = 0  # counter updates given up after the last attempt

    def submit(self, updates: list[Counter]) -> bool:
        """Queue ``updates`` for the writer thread; False (nothing queued) when over the bound: the
        caller then writes them itself."""
        with self._cond:
            if len(self._pending) + len(updates) > self.max_pending:
                return False
            idle = not self._pending  # else the writer is waiting out its interval, or writing: it will look
            self._pending.extend(updates)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
                self._thread.start()
            if idle:
                # Woken only when it waits for work: waking it on every submit cost each request a
                # thread switch (and a GIL hand-off) for a writer that would go back to its wait.
                self._cond.notify_all()
        return True

    def pending(self) -> int:
        """Counter updates queued and not yet taken by the writer thread."""
        with self._cond:
            return len(self._pending)

    def drain(self, timeout: float) -> bool:
        """Wait until everything submitted before this call is written or given up; False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            self._flush += 1
            self._cond.notify_all()
            try:
                while self._pending or self._writing:
                    left = end - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._flush -= 1
        return True

    def _run(self) -> None:
        last = -self.min_interval
        while True:
            with self._cond:
                while True:
                    wait = last + self.min_interval - time.monotonic()
                    if self._pending and (wait <= 0 or self._flush):
                        break
                    self._cond.wait(wait if self._pending else None)
                last = time.monotonic()
                batch, self._pending = self._pending, []
                self._writing = True
            try:
                self.write(batch)
            except BaseException:  # pragma: no cover - write() reports its own failures; never die
                pass
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def write(self, batch: list[Counter]) -> None:
        """Write ``batch`` coalesced, at most a transaction's worth of items per call."""
        for chunk in chunks(coalesce(batch)):
            token = uuid.uuid4().hex  # the same for every attempt: a landed transaction is not repeated
            try:
                self._retrying(self.counters.settle, chunk, [], token)
                self.writes += 1
            except Exception as exc:
                self.given_up += len(chunk)
                self.on_give_up(len(chunk), exc)


def _report_give_up(updates: int, exc: BaseException) -> None:
    from llm_gateway.observability import RequestMetrics, logger  # observability imports chat, which imports us

    logger.warning(
        "usage write failed after retries", extra={"counter_updates": updates, "error_type": type(exc).__name__}
    )
    metrics = RequestMetrics("usage_writer")
    metrics.add("UsageWriteFailures", updates)
    metrics.flush()
