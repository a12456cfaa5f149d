"""The persisted events of a background response: written in batches, replayed and followed.

A background response's typed stream events (``sequence_number`` 0, 1, 2, …) are kept in the
one table so that *any* gateway instance can replay and follow them
(``GET /v1/responses/{id}?stream=true&starting_after=N``), not only the one that produced them.

Layout: one item per batch of consecutive events, in the response's own partition —
``PK = T#<tenant>#R#<response id>``, ``SK = EV#<first sequence number, zero-padded>`` — holding
``first``, ``count``, ``terminal`` (the batch ends the stream) and the events (zlib-compressed
JSON), with a TTL. Batches are written only if absent, so a producer can never overwrite an
event a reader may have sent.

* :class:`EventWriter` buffers the producer's events and writes a batch whenever the sequence
  reaches a multiple of ``batch_size`` — or sooner when the oldest buffered event has waited
  ``flush_seconds``, and at the end — so a fast stream of N events costs ⌈N / batch_size⌉ writes
  (a slow one at most one more per ``flush_seconds``).
* :class:`EventFollower` reads the events after a sequence number (one Query from the batch that
  holds it, plus one backward Query to find that batch when the number falls inside it), then
  polls for newer batches until it has sent the terminal batch. A response that ended without one
  (cancelled, or failed outside the worker) is noticed through its stored status.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import CONDITIONAL_CHECK_FAILED, error_code
from llm_gateway.responses.replay import stored_events
from llm_gateway.responses.store import response_pk

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient

Event = dict[str, Any]
EVENTS_PREFIX = "EV#"
_SEQ_DIGITS = 10
MAX_BATCH_BYTES = 350_000  # packed events per item; DynamoDB holds 400 KB
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
FINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


@dataclass
class EventBatch:
    first: int  # sequence number of the first event
    events: list[Event]
    terminal: bool = False

    @property
    def end(self) -> int:
        """The sequence number after the batch's last event."""
        return self.first + len(self.events)


class EventLogConflict(Exception):
    """A batch at this position exists already: another producer wrote this response's events."""


class EventLog(Protocol):
    def append(self, tenant: str, response_id: str, batch: EventBatch) -> None: ...
    def read(self, tenant: str, response_id: str, first: int, *, aligned: bool) -> list[EventBatch]: ...


def events_sk(first: int) -> str:
    return f"{EVENTS_PREFIX}{first:0{_SEQ_DIGITS}d}"


def _pack(events: list[Event]) -> bytes:
    return zlib.compress(json.dumps(events, separators=(",", ":"), ensure_ascii=False).encode(), 6)


class DynamoEventLog:
    """:class:`EventLog` on the one table (low-level client)."""

    def __init__(self, table_name: str, client: DynamoDBClient, *, ttl_days: int = 7) -> None:
        self.table = table_name
        self.client = client
        self.ttl_days = ttl_days
        self.writes = 0  # batches written by this instance (bench/, tests)

    def append(self, tenant: str, response_id: str, batch: EventBatch) -> None:
        packed = _pack(batch.events)
        if len(packed) > MAX_BATCH_BYTES and len(batch.events) > 1:  # rare: huge events; split in two
            half = len(batch.events) // 2
            self.append(tenant, response_id, EventBatch(batch.first, batch.events[:half]))
            self.append(tenant, response_id, EventBatch(batch.first + half, batch.events[half:], batch.terminal))
            return
        item: dict[str, Any] = {
            "PK": {"S": response_pk(tenant, response_id)},
            "SK": {"S": events_sk(batch.first)},
            "first": {"N": str(batch.first)},
            "count": {"N": str(len(batch.events))},
            "terminal": {"BOOL": batch.terminal},
            "events": {"B": packed},
        }
        if self.ttl_days:
            item["ttl"] = {"N": str(int(time.time()) + self.ttl_days * 86400)}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(PK)")
        except ClientError as err:
            if error_code(err) == CONDITIONAL_CHECK_FAILED:
                raise EventLogConflict(f"events from {batch.first} exist already") from err
            raise
        self.writes += 1

    def read(self, tenant: str, response_id: str, first: int, *, aligned: bool) -> list[EventBatch]:
        """The batches holding events ``first`` and after (one page), oldest first. ``aligned``: a
        batch starts at ``first`` if one holds it (the reader has read the batch before it)."""
        pk = {"S": response_pk(tenant, response_id)}
        resp = self.client.query(
            TableName=self.table,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :from AND :to",
            ExpressionAttributeValues={":pk": pk, ":from": {"S": events_sk(first)}, ":to": {"S": EVENTS_PREFIX + "~"}},
            ConsistentRead=True,
        )
        batches = [self._batch(item) for item in resp.get("Items", [])]
        if not aligned and first > 0 and (not batches or batches[0].first != first):
            back = self.client.query(
                TableName=self.table,
                KeyConditionExpression="PK = :pk AND SK BETWEEN :from AND :to",
                ExpressionAttributeValues={
                    ":pk": pk,
                    ":from": {"S": events_sk(0)},
                    ":to": {"S": events_sk(first - 1)},
                },
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
            holder = [self._batch(item) for item in back.get("Items", [])]
            if holder and holder[0].end > first:
                batches.insert(0, holder[0])
        return batches

    @staticmethod
    def _batch(item: dict[str, Any]) -> EventBatch:
        events = json.loads(zlib.decompress(bytes(item["events"]["B"])))
        return EventBatch(int(item["first"]["N"]), events, bool(item.get("terminal", {}).get("BOOL")))


class EventWriter:
    """Buffer a producer's events and persist them in batches (see the module docstring)."""

    def __init__(
        self,
        log: EventLog,
        tenant: str,
        response_id: str,
        *,
        batch_size: int = 10,
        flush_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.tenant = tenant
        self.response_id = response_id
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.clock = clock
        self._buffer: list[Event] = []
        self._since = 0.0
        self.next = 0  # the sequence number the next event must carry
        self.events = 0
        self.writes = 0
        self.closed = False

    def add(self, events: list[Event]) -> None:
        for event in events:
            if event["sequence_number"] != self.next:
                raise ValueError(f"event {event['sequence_number']} out of order (expected {self.next})")
            if not self._buffer:
                self._since = self.clock()
            self._buffer.append(event)
            self.next += 1
            self.events += 1
            if event["type"] in TERMINAL_EVENTS:
                self.close()
                return
            if self.next % self.batch_size == 0:  # batches end at multiples of batch_size
                self._write(terminal=False)
        if self._buffer and self.clock() - self._since >= self.flush_seconds:
            self._write(terminal=False)

    def close(self) -> None:
        """Write what is buffered as the stream's terminal batch (readers stop after it)."""
        if not self.closed:
            self.closed = True
            self._write(terminal=True)

    def _write(self, *, terminal: bool) -> None:
        if not self._buffer and not terminal:
            return
        first = self.next - len(self._buffer)
        self.log.append(self.tenant, self.response_id, EventBatch(first, self._buffer, terminal))
        self._buffer = []
        self.writes += 1


@dataclass
class EventFollower:
    """The events after ``after``, as they are persisted, until the stream ends.

    :meth:`poll` returns the new events (possibly none); ``done`` says the stream has ended.
    ``final`` reads the stored response when the log has been idle for ``status_every`` seconds:
    it returns the Response object once it has reached a final status, else None.
    """

    log: EventLog
    tenant: str
    response_id: str
    after: int
    final: Callable[[], dict[str, Any] | None]
    opening: list[Event] = field(default_factory=list)  # events 0.. not in the log (replay.opening_events)
    poll_seconds: float = 0.2
    status_every: float = 1.0
    clock: Callable[[], float] = time.monotonic
    done: bool = False
    next: int = field(init=False)
    _aligned: bool = field(init=False)
    _checked: float = field(init=False)
    _seen: bool = False

    def __post_init__(self) -> None:
        self.next = max(0, self.after + 1)
        self._aligned = self.next == 0
        self._checked = self.clock()

    def poll(self) -> list[Event]:
        if self.done:
            return []
        out: list[Event] = []
        if self.next < len(self.opening):
            out = [e for e in self.opening if e["sequence_number"] >= self.next]
            self.next, self._aligned = len(self.opening), True
        out += self._read()
        if out or self.done:
            self._checked = self.clock()
            return out
        if self.clock() - self._checked < self.status_every:
            return []
        self._checked = self.clock()
        response = self.final()
        if response is not None:  # ended without a terminal batch: send what was written last
            out += self._read()
            if not self._seen and not out and response.get("object") == "response":  # none kept (expired)
                out = [e for e in stored_events(response) if e["sequence_number"] >= self.next]
            self.done = True
        return out

    def _read(self) -> list[Event]:
        out: list[Event] = []
        for batch in self.log.read(self.tenant, self.response_id, self.next, aligned=self._aligned):
            if batch.end <= self.next:
                continue  # read before (a batch holding only earlier events)
            if batch.first > self.next:
                break  # never a gap: batches are contiguous and written in order
            out += [e for e in batch.events if e["sequence_number"] >= self.next]
            self.next = batch.end
            self._aligned = self._seen = True
            if batch.terminal:
                self.done = True
                break
        return out


@dataclass
class StoredEvents:
    """The events of a response that has no persisted ones (see :mod:`replay`), all at once."""

    events: list[Event]
    poll_seconds: float = 0.0
    done: bool = False

    def poll(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        return self.events
