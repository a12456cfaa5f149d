"""Background responses (``background: true``): answered at once, run on the jobs path.

**Submit** (API): the request is prepared exactly as a foreground one (model, sizes, the
``previous_response_id`` chain, the conversation's owner), so a bad request is a 4xx with nothing
written and nothing queued. The Idempotency-Key rules of ``/v1/jobs`` apply (same key and body
within 24 h: the same response; another body: 422). The response is stored ``queued`` and one
FIFO message is sent (group = the conversation, else the response id; deduplication id = the response
id) through a :class:`BackgroundQueue`.

Its first events, ``response.created`` and ``response.queued`` (sequence numbers 0 and 1), are the
response as submitted: readers derive them from the stored record (``replay.opening_events``), so
they cost no write.

**Run** (worker, per delivery): ``queued`` → ``in_progress`` (a conditional write: a cancelled
response never runs), then the turn streams upstream and its events are persisted in batches as
they are produced (:class:`~llm_gateway.responses.event_log.EventWriter`); the final response
replaces the stored one only while it is still ``in_progress``. Cancel checkpoints: before the
upstream call, after every batch written, and every RESPONSE_CANCEL_POLL_SECONDS while the stream
runs (:class:`CancelWatch`, so a silent upstream is cut too) — a cancelled run closes the upstream
connection and stores nothing as completed. A retryable failure before the first event is raised for redelivery
(on the last delivery the response is ``failed``); once events exist a failure is final
(``response.failed``), since the events a client may have read cannot be produced again. A
delivery that finds the turn already in the conversation (an earlier one committed it, then died
before storing the response) completes the response from that stored reply, calling nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import CONDITIONAL_CHECK_FAILED, error_code
from llm_gateway.chat.replies import Completion, stored_reply
from llm_gateway.chat.service import ChatService, TurnReport
from llm_gateway.conversations.records import TurnAlreadyCommitted
from llm_gateway.deadline import Deadline
from llm_gateway.errors import (
    ConfigurationError,
    DeadLettered,
    GatewayError,
    InvalidRequest,
    NotCancellable,
    NotFound,
)
from llm_gateway.responses.event_log import TERMINAL_EVENTS, EventLog, EventLogConflict, EventWriter
from llm_gateway.responses.events import EventBuilder, ResponseEventStream
from llm_gateway.responses.models import CreateResponse
from llm_gateway.responses.service import (
    PreparedResponse,
    ResponseService,
    StreamCommit,
    Superseded,
    conversation_param,
)
from llm_gateway.responses.store import StoredResponse
from llm_gateway.responses.translate import response_error, response_object, response_usage
from llm_gateway.responses.translate import service_tier as translate_tier

QUEUED, IN_PROGRESS, CANCELLED, FAILED = "queued", "in_progress", "cancelled", "failed"
RUNNABLE = (QUEUED, IN_PROGRESS)
FIRST_RUN_EVENT = 2  # events 0 and 1 are derived from the stored response (replay.opening_events)
RESEND_AFTER_MS = 5_000  # a replayed submission that never finished enqueueing is re-sent after this


class BackgroundQueue(Protocol):
    """The jobs path, as background responses use it (implemented by ``jobs.response_queue``).
    ``claim``: None when the key is new; else (its response id, enqueued, age in ms)."""

    def claim(self, tenant: str, key: str, body: dict[str, Any], response_id: str) -> tuple[str, bool, int] | None: ...
    def send(
        self, tenant: str, response_id: str, body: dict[str, Any], group_id: str, key_id: str | None = None
    ) -> None: ...
    def sent(self, tenant: str, key: str) -> None: ...


class BackgroundResponses:
    def __init__(self, service: ResponseService, events: EventLog, queue: BackgroundQueue | None) -> None:
        self.service = service
        self.store = service.store
        self.events = events
        self.queue = queue
        self.settings = service.chat.settings

    def with_chat(self, chat: ChatService) -> BackgroundResponses:
        """The same, running its turns through ``chat`` (the worker's: more patient retries)."""
        service = ResponseService(chat, self.store, self.service.events)
        return BackgroundResponses(service, self.events, self.queue)

    # ---- submit (API) ------------------------------------------------------------------
    def submit(
        self, tenant: str, request: CreateResponse, idempotency_key: str | None = None, key_id: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Store the response ``queued`` and enqueue it: (the Response object, replayed). ``key_id``
        (the submitting API key) rides in the message, so the worker applies that key's limits too."""
        if self.queue is None:
            raise ConfigurationError("Background responses need the jobs queue (JOBS_QUEUE_URL is empty).")
        body = request.model_dump(mode="json", by_alias=True, exclude_unset=True)
        with conversation_param():
            prepared = self.service.prepare(tenant, request, TurnReport())
            if request.conversation_id is not None:
                self.service.chat.store.get(tenant, request.conversation_id)  # another tenant's: 404
        response_id, replayed = prepared.id, False
        if idempotency_key is not None:
            claimed = self.queue.claim(tenant, idempotency_key, body, response_id)
            if claimed is not None:
                replayed, (response_id, enqueued, age_ms) = True, claimed
                stored = self._get(tenant, response_id)
                if stored is not None:
                    if not enqueued and age_ms > RESEND_AFTER_MS:
                        self._send(tenant, response_id, request, body, idempotency_key, key_id)
                    return stored.response, True
        response = prepared.snapshot(status=QUEUED, output=[])
        record = StoredResponse(tenant, response_id, prepared.created_at, response, prepared.input_items, [])
        if not self._create(record):  # a concurrent replay of the same key created it
            stored = self._get(tenant, response_id)
            return (stored.response if stored else response), True
        try:
            self._send(tenant, response_id, request, body, idempotency_key, key_id)
        except GatewayError as exc:
            if idempotency_key is None or exc.permanent:  # it must not sit 'queued' forever
                failed = {**response, "status": FAILED, "error": response_error(exc)}
                self.store.put(dataclasses.replace(record, response=failed), replacing=(QUEUED,))
            raise
        return response, replayed

    def _create(self, record: StoredResponse) -> bool:
        try:
            self.store.put(record)
        except ClientError as err:  # the conditional put lost to a concurrent submission with the same key
            if error_code(err) == CONDITIONAL_CHECK_FAILED:
                return False
            raise
        return True

    def _send(
        self,
        tenant: str,
        response_id: str,
        request: CreateResponse,
        body: dict[str, Any],
        key: str | None,
        key_id: str | None,
    ) -> None:
        assert self.queue is not None
        self.queue.send(tenant, response_id, body, request.conversation_id or response_id, key_id)
        if key is not None:
            self.queue.sent(tenant, key)

    def _get(self, tenant: str, response_id: str) -> StoredResponse | None:
        try:
            return self.store.get(tenant, response_id)
        except NotFound:
            return None

    # ---- cancel (API) ------------------------------------------------------------------
    def cancel(self, tenant: str, response_id: str) -> dict[str, Any]:
        """``POST /v1/responses/{id}/cancel``: a queued response never runs; a running one stops at
        its next checkpoint. Cancelling a cancelled response returns it; a finished one is a 409."""
        for _ in range(3):  # the status moved between the read and the write: answer for the new one
            stored = self.store.get(tenant, response_id)
            response = stored.response
            if not response.get("background"):
                raise InvalidRequest(
                    "Only responses created with background=true can be cancelled.", param="response_id"
                )
            status = response.get("status")
            if status == CANCELLED:
                return response
            if status not in RUNNABLE:
                raise NotCancellable(f"The response is already {status}; it can no longer be cancelled.")
            cancelled = {**response, "status": CANCELLED, "completed_at": None}
            if self.store.put(dataclasses.replace(stored, response=cancelled), replacing=RUNNABLE):
                return cancelled
        raise NotCancellable("The response finished while it was being cancelled.")

    def abandon(self, tenant: str, response_id: str, reason: str) -> bool:
        """The jobs path gave up on it (its message reached the dead-letter queue): ``failed``, unless
        it already ended, so a GET never shows it queued or in progress for ever; its followers end."""
        stored = self._get(tenant, response_id)
        if stored is None or stored.response.get("status") not in RUNNABLE:
            return False
        error = response_error(DeadLettered(reason))
        failed = {**stored.response, "status": FAILED, "error": error, "completed_at": None}
        return self.store.put(dataclasses.replace(stored, response=failed), replacing=RUNNABLE)

    # ---- run (worker) ------------------------------------------------------------------
    def run(
        self,
        tenant: str,
        response_id: str,
        body: dict[str, Any],
        deadline: Deadline,
        report: TurnReport,
        *,
        last_attempt: bool,
    ) -> str:
        """Run a queued response once; its status after. Raises for redelivery (see the module)."""
        stored = self._get(tenant, response_id)
        if stored is None or stored.response.get("status") not in RUNNABLE:
            return "deleted" if stored is None else str(stored.response.get("status"))
        request = CreateResponse.model_validate({**body, "stream": True})  # usage from the upstream itself
        running = {**stored.response, "status": IN_PROGRESS}
        if not self.store.put(dataclasses.replace(stored, response=running), replacing=RUNNABLE):
            return self.store.status(tenant, response_id) or "deleted"
        stored = dataclasses.replace(stored, response=running)

        def snapshot(*, service_tier: str | None = None, **fields: Any) -> dict[str, Any]:
            tier = translate_tier(service_tier, stored.response.get("service_tier"))  # as submitted, if not reported
            return response_object(request, response_id, created_at=stored.created_at, service_tier=tier, **fields)

        builder = EventBuilder(snapshot)
        builder.sequence = FIRST_RUN_EVENT
        settings = self.settings
        writer = EventWriter(
            self.events,
            tenant,
            response_id,
            batch_size=settings.response_events_batch,
            flush_seconds=settings.response_events_flush_seconds,
        )
        writer.next = FIRST_RUN_EVENT
        try:
            with conversation_param():
                prepared = self.service.prepare(
                    tenant, request, report, response_id=response_id, created_at=stored.created_at
                )
                if self.store.status(tenant, response_id) != IN_PROGRESS:  # checkpoint: before the upstream call
                    return CANCELLED
                if request.conversation_id is not None:  # committed by an earlier delivery that then died?
                    committed = self.service.chat.committed_turn(tenant, request.conversation_id, response_id)
                    if committed is not None:
                        return self._complete_committed(stored, prepared, builder, writer, committed)
                commit = StreamCommit(self.service, tenant, prepared, builder, replacing=(IN_PROGRESS,))
                chat = self.service.chat.stream(
                    tenant, prepared.chat, deadline, report, turn=commit, turn_id=response_id
                )
        except Exception as exc:
            if not last_attempt and not (isinstance(exc, GatewayError) and exc.permanent):
                raise  # nothing was sent: redelivered (the response stays in_progress meanwhile)
            return self._fail(stored, builder, writer, exc if isinstance(exc, GatewayError) else None)
        return self._relay(stored, ResponseEventStream(chat, builder, response_id, created=False), writer)

    def _relay(self, stored: StoredResponse, events: ResponseEventStream, writer: EventWriter) -> str:
        """Persist the run's events as they come; stop at a cancel checkpoint."""
        tenant, response_id = stored.tenant, stored.id
        watch = CancelWatch(
            lambda: self.store.status(tenant, response_id), events.abort, self.settings.response_cancel_poll_seconds
        )
        try:
            with watch:
                return self._relay_events(stored, events, writer, watch)
        finally:
            events.close()

    def _relay_events(
        self, stored: StoredResponse, events: ResponseEventStream, writer: EventWriter, watch: CancelWatch
    ) -> str:
        tenant, response_id = stored.tenant, stored.id
        last: dict[str, Any] | None = None
        try:
            while (batch := events.next_events()) is not None:
                if watch.cancelled.is_set():  # the watch aborted the stream: what follows is not the reply
                    writer.close()
                    return CANCELLED
                written = writer.writes
                writer.add(batch)
                last = batch[-1] if batch else last
                checkpoint = writer.writes != written and not writer.closed  # after every batch written
                if checkpoint and self.store.status(tenant, response_id) != IN_PROGRESS:
                    events.abort()  # closes the upstream connection
                    writer.close()
                    return CANCELLED
        except Superseded:  # cancelled just before the final write: nothing was stored as completed
            writer.close()
            return CANCELLED
        except EventLogConflict:  # an earlier delivery wrote these events: its stream cannot be resumed
            return self._fail(stored, events.builder, None, None)
        except TurnAlreadyCommitted:  # an earlier delivery added its turn to the conversation, then died
            error = GatewayError(  # rare: another delivery committed while this one ran (its reply stands)
                "Another run of this background response added its turn to the conversation while this one "
                "ran; nothing more was written."
            )
            return self._fail(stored, events.builder, writer, error)
        except Exception:
            events.abort()
            if watch.cancelled.is_set():
                writer.close()
                return CANCELLED
            return self._fail(stored, events.builder, writer, None)
        if last is not None and last["type"] == "response.failed":
            self.store.put(dataclasses.replace(stored, response=last["response"]), replacing=(IN_PROGRESS,))
            return FAILED
        writer.close()
        final = events.builder.final
        return str(final["status"]) if final else FAILED

    def _complete_committed(
        self,
        stored: StoredResponse,
        prepared: PreparedResponse,
        builder: EventBuilder,
        writer: EventWriter,
        completion: Completion,
    ) -> str:
        """An earlier delivery committed the turn to the conversation and died before it stored the
        response: complete the response from the reply the conversation holds (no upstream call, no
        second turn). Its events continue the log: all of them when the earlier delivery persisted
        none; else only the final event (carrying the whole response) after those it persisted, with
        the output item ids those announced, since a follower may have read them."""
        tenant, response_id = stored.tenant, stored.id
        logged = self._logged(tenant, response_id)
        events = [*builder.start(created=False), *builder.chunk(reply_chunk(completion.message))]
        announced = {e["output_index"]: e["item"] for e in logged if e["type"] == "response.output_item.added"}
        for index, item in enumerate(builder.output):
            if announced.get(index, {}).get("type") == item["type"]:
                item["id"] = announced[index]["id"]
        response = builder.finish(response_usage(completion.usage), completion.finish_reason)
        reply = stored_reply(completion)
        if not self.service._put(tenant, prepared, response, reply, completion.cost_usd, replacing=(IN_PROGRESS,)):
            return self.store.status(tenant, response_id) or "deleted"  # cancelled meanwhile
        events += builder.completed()
        if logged and logged[-1]["type"] in TERMINAL_EVENTS:
            return str(response["status"])
        if logged:
            writer.next = logged[-1]["sequence_number"] + 1
            events = [{**events[-1], "sequence_number": writer.next}]
        with contextlib.suppress(EventLogConflict):  # a reader ends on the stored status anyway
            writer.add(events)
        return str(response["status"])

    def _logged(self, tenant: str, response_id: str) -> list[dict[str, Any]]:
        """The events an earlier delivery persisted for this response (after the opening two)."""
        events: list[dict[str, Any]] = []
        first = FIRST_RUN_EVENT
        while batches := [b for b in self.events.read(tenant, response_id, first, aligned=True) if b.end > first]:
            for batch in batches:
                events += [e for e in batch.events if e["sequence_number"] >= first]
                first = batch.end
        return events

    def _fail(
        self, stored: StoredResponse, builder: EventBuilder, writer: EventWriter | None, exc: GatewayError | None
    ) -> str:
        """End the run ``failed``: the response.failed event (when the log is still ours), then the record."""
        event = builder.failed(exc)[0]
        if writer is not None and not writer.closed:
            with contextlib.suppress(EventLogConflict):
                writer.add([{**event, "sequence_number": writer.next}])
        failed = {**event["response"], "completed_at": None}
        self.store.put(dataclasses.replace(stored, response=failed), replacing=(IN_PROGRESS,))
        return FAILED


def reply_chunk(message: dict[str, Any]) -> dict[str, Any]:
    """A stored assistant message as the one streamed chunk that would have carried all of it."""
    delta: dict[str, Any] = {k: message[k] for k in ("content", "refusal") if isinstance(message.get(k), str)}
    calls = message.get("tool_calls") or []
    if calls:
        delta["tool_calls"] = [{**call, "index": index} for index, call in enumerate(calls)]
    return {"choices": [{"index": 0, "delta": delta}]}


class CancelWatch:
    """While a run streams, its status is read every ``every`` seconds; once it is cancelled (or the
    response deleted) the stream is aborted — which wakes a read blocked on a
    silent upstream and closes the connection — and ``cancelled`` is set."""

    def __init__(self, status: Callable[[], str | None], abort: Callable[[], None], every: float) -> None:
        self.status = status
        self.abort = abort
        self.every = every
        self.cancelled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cancel-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                status = self.status()
            except Exception:  # a failed read is no cancel: try again at the next interval
                continue
            if status in (CANCELLED, None):  # not 'completed': the run's own commit ends it so
                self.cancelled.set()
                self.abort()
                return

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)
