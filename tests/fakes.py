"""In-memory fakes of the package's small protocols, for unit tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llm_gateway.errors import ProviderKeyUnavailable
from llm_gateway.providers.base import Timeout, UpstreamReply, UpstreamStreamError, Usage


class FakeKeys:
    """KeyProvider holding plaintext keys in memory; counts what it was asked. ``rotated`` holds the
    keys a refresh finds (a key rotated since first use); without one, a refresh finds the same key."""

    def __init__(self, keys: dict[str, str], rotated: dict[str, str] | None = None) -> None:
        self.keys = dict(keys)
        self.rotated = dict(rotated or {})
        self.gets = 0
        self.refreshes = 0

    def get(self, key_ref: str) -> str:
        self.gets += 1
        try:
            return self.keys[key_ref]
        except KeyError:
            raise ProviderKeyUnavailable(f"No provider key is configured for '{key_ref}'.") from None

    def refresh(self, key_ref: str) -> str:
        self.refreshes += 1
        if key_ref in self.rotated:
            self.keys[key_ref] = self.rotated.pop(key_ref)
        return self.get(key_ref)


CREATED = 1_700_000_000  # the scripted replies' `created`
USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


class ScriptedProvider:
    """Provider answering from a script: exceptions are raised, dicts are replies."""

    def __init__(self, name: str = "default", script: list[Any] | None = None) -> None:
        self.name = name
        self.script = list(script or [])
        self.bodies: list[dict[str, Any]] = []
        self.service_tier: str | None = None  # when set, every reply and chunk reports it (as OpenAI does)

    def _step(self, body: dict[str, Any]) -> tuple[dict[str, Any], str, int | None]:
        """The next scripted reply: (assistant message, finish_reason, chunks before a cut or None)."""
        self.bodies.append(body)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, dict):  # {"message": {...}, "finish_reason": ..., "cut": n}
            message = {"role": "assistant", **step.get("message", {"content": step.get("text", "")})}
            return message, step.get("finish_reason", "stop"), step.get("cut")
        text = step if isinstance(step, str) else f"reply {len(self.bodies)}"
        return {"role": "assistant", "content": text}, "stop", None

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        message, finish_reason, _ = self._step(body)
        data = {
            "id": f"chatcmpl-{len(self.bodies)}",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": dict(USAGE),
        }
        if self.service_tier is not None:
            data["service_tier"] = self.service_tier
        return UpstreamReply(data, Usage(10, 2))

    def stream(self, body: dict[str, Any], timeout: Timeout) -> Iterator[dict[str, Any]]:
        """The scripted reply as chunks: its text word by word, then each tool call (name, then
        its arguments in two pieces); a scripted ``cut`` raises UpstreamStreamError after that many."""
        message, finish_reason, cut = self._step(body)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out = {
                "id": f"chatcmpl-{len(self.bodies)}",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": body.get("model", "m"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return out if self.service_tier is None else {**out, "service_tier": self.service_tier}

        chunks = [chunk({"role": "assistant", "content": ""})]
        text = message.get("content") or ""
        chunks += [chunk({"content": piece}) for piece in re.findall(r"\S+\s*|\s+", text)]
        for index, call in enumerate(message.get("tool_calls") or ()):
            function = call["function"]
            half = len(function["arguments"]) // 2
            head = {"index": index, "id": call["id"], "type": "function", "function": {"name": function["name"]}}
            chunks.append(chunk({"tool_calls": [head]}))
            for piece in (function["arguments"][:half], function["arguments"][half:]):
                chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        chunks.append(chunk({}, finish_reason))
        if (body.get("stream_options") or {}).get("include_usage"):  # the usage complete() reports
            chunks.append({**chunk({}), "choices": [], "usage": dict(USAGE)})
        for number, item in enumerate(chunks):
            if cut is not None and number == cut:
                raise UpstreamStreamError("cut")
            yield item


class InMemoryResponseStore:
    """ResponseStore in a dict, counting the items each chain read touched."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Any] = {}
        self.writes = 0
        self.chain_reads: list[int] = []

    def put(self, record: Any, *, replacing: tuple[str, ...] = ()) -> bool:
        from llm_gateway.responses.store import StoredResponse

        assert isinstance(record, StoredResponse)
        key = (record.tenant, record.id)
        if replacing:
            if key not in self.items or self.items[key].response.get("status") not in replacing:
                return False
        else:
            assert key not in self.items
        self.items[key] = record
        self.writes += 1
        return True

    def status(self, tenant: str, response_id: str) -> str | None:
        record = self.items.get((tenant, response_id))
        return None if record is None else record.response.get("status")

    def get(self, tenant: str, response_id: str) -> Any:
        from llm_gateway.responses.store import not_found

        try:
            return self.items[(tenant, response_id)]
        except KeyError:
            raise not_found(response_id) from None

    def delete(self, tenant: str, response_id: str) -> None:
        self.get(tenant, response_id)
        del self.items[(tenant, response_id)]

    def chain(self, tenant: str, response_id: str) -> Any:
        from llm_gateway.responses.store import Chain, ChainLink, not_found

        parent = self.items.get((tenant, response_id))
        if parent is None:
            raise not_found(response_id, "previous_response_id")
        found = [self.items[(tenant, a)] for a in parent.ancestors if (tenant, a) in self.items]
        links = [ChainLink(parent.id, parent.messages)] + [ChainLink(r.id, r.messages) for r in found]
        self.chain_reads.append(1 + len(found))
        return Chain(links, parent.ancestors, 1 + len(found))


class InMemoryEventLog:
    """responses.event_log.EventLog in a dict: batches written only if absent, read from a position."""

    def __init__(self) -> None:
        self.batches: dict[tuple[str, str], dict[int, Any]] = {}
        self.writes = 0
        self.reads = 0

    def append(self, tenant: str, response_id: str, batch: Any) -> None:
        from llm_gateway.responses.event_log import EventLogConflict

        log = self.batches.setdefault((tenant, response_id), {})
        if batch.first in log:
            raise EventLogConflict(f"events from {batch.first} exist already")
        log[batch.first] = batch
        self.writes += 1

    def read(self, tenant: str, response_id: str, first: int, *, aligned: bool) -> list[Any]:
        self.reads += 1
        log = self.batches.get((tenant, response_id), {})
        out = [log[k] for k in sorted(log) if k >= first]
        if not aligned and (not out or out[0].first != first):
            before = [log[k] for k in sorted(log) if k < first]
            if before and before[-1].end > first:
                out.insert(0, before[-1])
        return out


class InMemoryBackgroundQueue:
    """responses.background.BackgroundQueue in memory: Idempotency-Key claims and the sent messages."""

    def __init__(self, fail_sends: int = 0) -> None:
        self.claims: dict[tuple[str, str], tuple[str, Any, bool]] = {}
        self.messages: list[dict[str, Any]] = []
        self.fail_sends = fail_sends

    def claim(self, tenant: str, key: str, body: dict[str, Any], response_id: str) -> Any:
        from llm_gateway.errors import IdempotencyConflict

        found = self.claims.get((tenant, key))
        if found is None:
            self.claims[(tenant, key)] = (response_id, body, False)
            return None
        if found[1] != body:
            raise IdempotencyConflict("This Idempotency-Key was used with a different request body.")
        return found[0], found[2], 60_000

    def send(
        self, tenant: str, response_id: str, body: dict[str, Any], group_id: str, key_id: str | None = None
    ) -> None:
        from llm_gateway.errors import QueueUnavailable

        if self.fail_sends:
            self.fail_sends -= 1
            raise QueueUnavailable("The jobs queue is unavailable.")
        message = {"tenant": tenant, "id": response_id, "body": body, "group": group_id}
        self.messages.append({**message, "key_id": key_id} if key_id is not None else message)

    def sent(self, tenant: str, key: str) -> None:
        response_id, body, _ = self.claims[(tenant, key)]
        self.claims[(tenant, key)] = (response_id, body, True)


class InMemoryCounterStore:
    """quotas.counters.CounterStore in a dict: the same all-or-nothing conditions, under one lock."""

    def __init__(self) -> None:
        import threading

        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.reserves = 0
        self.settles = 0
        self.settle_calls: list[tuple[int, str]] = []  # (updates, token) of every settle call, failed or not
        self.fail_settles = 0  # the next this many settle calls raise, writing nothing

    def _fails(self, counter: Any) -> bool:
        item = self.items.get((counter.pk, counter.sk), {})
        return any(item.get(c.attr, 0) + counter.add.get(c.attr, 0) > c.limit_value for c in counter.caps)

    def reserve(self, counters: list[Any], claims: list[Any]) -> None:
        from llm_gateway.quotas.counters import Denied

        with self.lock:
            self.reserves += 1
            for index, counter in enumerate(counters):
                if self._fails(counter):
                    raise Denied(index, dict(self.items.get((counter.pk, counter.sk), {})))
            for index, claim in enumerate(claims):
                holders = self.items.get((claim.pk, claim.sk), {}).get("holders", set())
                if len(holders) >= claim.max:
                    raise Denied(len(counters) + index, {"holders": set(holders)})
            for counter in counters:
                self._add(counter)
            for claim in claims:
                self.items.setdefault((claim.pk, claim.sk), {}).setdefault("holders", set()).add(claim.holder)

    def _add(self, counter: Any) -> None:
        item = self.items.setdefault((counter.pk, counter.sk), {})
        for attr, value in counter.add.items():
            item[attr] = item.get(attr, 0) + value
        if counter.ttl is not None:
            item.setdefault("ttl", counter.ttl)

    def settle(self, counters: list[Any], releases: list[tuple[str, str, str]], token: str) -> None:
        with self.lock:
            self.settle_calls.append((len(counters), token))
            if self.fail_settles:
                self.fail_settles -= 1
                raise ConnectionError("counter store unavailable")
            self.settles += 1
            for counter in counters:
                self._add(counter)
            for pk, sk, holder in releases:
                self.items.get((pk, sk), {}).get("holders", set()).discard(holder)

    def settlement_items(self, counters: list[Any], releases: list[tuple[str, str, str]]) -> None:
        return None  # not DynamoDB: a settlement never rides on a conversation commit, it settles alone

    def read(self, pk: str, sk: str) -> dict[str, Any]:
        with self.lock:
            return {k: (set(v) if isinstance(v, set) else v) for k, v in self.items.get((pk, sk), {}).items()}

    def query(self, pk: str, sk_from: str, sk_to: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {**item, "SK": sk} for (p, sk), item in sorted(self.items.items()) if p == pk and sk_from <= sk <= sk_to
            ]

    def purge(self, pk: str, sk: str, holders: list[str]) -> None:
        with self.lock:
            self.items.get((pk, sk), {}).get("holders", set()).difference_update(holders)


class InMemoryLimitsStore:
    """quotas.limits.LimitsStore in a dict."""

    def __init__(self) -> None:
        self.tenants: dict[str, Any] = {}
        self.keys: dict[tuple[str, str], Any] = {}

    def get(self, tenant: str, key_id: str | None) -> tuple[Any, Any]:
        from llm_gateway.quotas.limits import UNLIMITED

        return self.tenants.get(tenant, UNLIMITED), self.keys.get((tenant, key_id or ""), UNLIMITED)

    def put_tenant(self, tenant: str, limits: Any) -> None:
        self.tenants[tenant] = limits

    def put_key(self, tenant: str, key_id: str, limits: Any) -> None:
        self.keys[(tenant, key_id)] = limits

    def tenant(self, tenant: str) -> Any:
        return self.get(tenant, None)[0]


class InMemoryConversationStore:
    """conversations.records.ConversationStore in dicts: the same lease, version and turn-marker rules as the
    DynamoDB adapter (a held lease is a 409, a commit checks lease and version, a turn id commits once).

    Counts what tests assert on: ``writes`` (commits and creates), ``leases_taken`` / ``leases_released``,
    and the budgets each history read was given. ``fail_commit`` (an exception) makes the next commit raise
    it with nothing written, as a failed TransactWriteItems would."""

    def __init__(self) -> None:
        self.heads: dict[tuple[str, str], Any] = {}
        self.messages_of: dict[tuple[str, str], dict[int, Any]] = {}
        self.turns: dict[tuple[str, str, str], list[int]] = {}
        self.lease: dict[tuple[str, str], tuple[str, int]] = {}  # (tenant, id) -> (lease id, expires ms)
        self.writes = 0
        self.leases_taken = 0
        self.leases_released = 0
        self.history_reads: list[tuple[int, int]] = []  # (max_messages, max_tokens) per read
        self.fail_commit: BaseException | None = None

    # ---- helpers -------------------------------------------------------------------
    def _head(self, tenant: str, conversation_id: str) -> Any:
        from llm_gateway.errors import NotFound

        head = self.heads.get((tenant, conversation_id))
        if head is None:
            raise NotFound(f"No conversation found with id '{conversation_id[:64]}'.", param="conversation_id")
        return head

    def _copy(self, head: Any) -> Any:
        import copy

        return copy.deepcopy(head)

    def held(self, tenant: str, conversation_id: str) -> bool:
        """Whether an unexpired lease is on the conversation (what a test checks after a failure)."""
        from llm_gateway.deadline import now_ms

        lease = self.lease.get((tenant, conversation_id))
        return lease is not None and lease[1] >= now_ms()

    # ---- conversations -------------------------------------------------------------
    def create(
        self,
        tenant: str,
        *,
        model: str | None = None,
        system: str | None = None,
        system_tokens: int = 0,
        metadata: dict[str, str] | None = None,
        messages: Any = (),
    ) -> Any:
        from llm_gateway.conversations.records import Conversation, StoredMessage, new_conversation_id
        from llm_gateway.deadline import now_ms

        now = now_ms()
        conv = Conversation(
            id=new_conversation_id(),
            tenant=tenant,
            created_at=now,
            updated_at=now,
            model=model,
            system=system,
            system_tokens=system_tokens if system else 0,
            metadata=dict(metadata or {}),
            message_count=len(messages),
        )
        self.heads[(tenant, conv.id)] = conv
        self.messages_of[(tenant, conv.id)] = {
            seq: StoredMessage(seq, m.body, m.tokens, now, m.meta) for seq, m in enumerate(messages)
        }
        self.writes += 1
        return self._copy(conv)

    def get(self, tenant: str, conversation_id: str) -> Any:
        return self._copy(self._head(tenant, conversation_id))

    def update_metadata(self, tenant: str, conversation_id: str, metadata: dict[str, str]) -> Any:
        head = self._head(tenant, conversation_id)
        head.metadata = dict(metadata)
        self.writes += 1
        return self._copy(head)

    def list_conversations(
        self, tenant: str, *, limit: int, after: str | None, descending: bool = True
    ) -> tuple[list[Any], bool]:
        from llm_gateway.errors import InvalidRequest

        mine = sorted((c for (t, _), c in self.heads.items() if t == tenant), key=lambda c: (c.created_at, c.id))
        if descending:
            mine.reverse()
        if after is not None:
            ids = [c.id for c in mine]
            if after not in ids:
                raise InvalidRequest("'after' must be the id of one of your conversations.", param="after")
            mine = mine[ids.index(after) + 1 :]
        return [self._copy(c) for c in mine[:limit]], len(mine) > limit

    def delete(self, tenant: str, conversation_id: str) -> None:
        from llm_gateway.errors import ConversationBusy

        self._head(tenant, conversation_id)
        if self.held(tenant, conversation_id):
            raise ConversationBusy("A turn is in progress on this conversation; retry later.")
        del self.heads[(tenant, conversation_id)]
        self.messages_of.pop((tenant, conversation_id), None)
        self.writes += 1

    # ---- messages ------------------------------------------------------------------
    def _stored(self, tenant: str, conversation_id: str) -> dict[int, Any]:
        self._head(tenant, conversation_id)
        return self.messages_of[(tenant, conversation_id)]

    def messages(self, tenant: str, conversation_id: str, *, limit: int, after: int | None) -> tuple[list[Any], bool]:
        start = 0 if after is None else after + 1
        return self.messages_page(tenant, conversation_id, start=start, descending=False, limit=limit)

    def messages_page(
        self, tenant: str, conversation_id: str, *, start: int | None, descending: bool, limit: int
    ) -> tuple[list[Any], bool]:
        stored = self._stored(tenant, conversation_id)
        seqs = sorted(stored, reverse=descending)
        if start is not None:
            seqs = [s for s in seqs if (s <= start if descending else s >= start)]
        return [stored[s] for s in seqs[:limit]], len(seqs) > limit

    def message(self, tenant: str, conversation_id: str, seq: int) -> Any:
        return self._stored(tenant, conversation_id).get(seq)

    def read_history(self, tenant: str, conversation_id: str, *, max_messages: int, max_tokens: int) -> Any:
        from llm_gateway.conversations.records import History, HistoryBudget

        self.history_reads.append((max_messages, max_tokens))
        stored = self._stored(tenant, conversation_id)
        budget, read = HistoryBudget(max_messages, max_tokens), 0
        for seq in sorted(stored, reverse=True)[:max_messages]:
            read += 1
            if not budget.take(stored[seq]):
                break
        return History(budget.window(), read)

    def turn_history(self, conversation: Any, *, max_messages: int, max_tokens: int) -> Any:
        from llm_gateway.conversations.records import History

        if not conversation.message_count:
            return History([], 0)
        return self.read_history(conversation.tenant, conversation.id, max_messages=max_messages, max_tokens=max_tokens)

    def turn_messages(self, tenant: str, conversation_id: str, turn_id: str) -> list[Any] | None:
        seqs = self.turns.get((tenant, conversation_id, turn_id))
        if seqs is None:
            return None
        stored = self._stored(tenant, conversation_id)
        return [stored[s] for s in seqs]

    # ---- leases and commits --------------------------------------------------------
    def acquire_lease(self, tenant: str, conversation_id: str, ttl_seconds: float) -> Any:
        import uuid

        from llm_gateway.conversations.records import Lease
        from llm_gateway.deadline import now_ms
        from llm_gateway.errors import ConversationBusy

        head = self._head(tenant, conversation_id)
        if self.held(tenant, conversation_id):
            raise ConversationBusy("Another turn is in progress on this conversation; retry when it completes.")
        lease = Lease(self._copy(head), uuid.uuid4().hex, now_ms() + int(ttl_seconds * 1000))
        self.lease[(tenant, conversation_id)] = (lease.lease_id, lease.expires_at)
        self.leases_taken += 1
        return lease

    def _holds(self, lease: Any) -> bool:
        conv = lease.conversation
        held = self.lease.get((conv.tenant, conv.id))
        return held is not None and held[0] == lease.lease_id

    def extend_lease(self, lease: Any, ttl_seconds: float) -> None:
        from llm_gateway.deadline import now_ms
        from llm_gateway.errors import ConversationBusy

        if not self._holds(lease):
            raise ConversationBusy("The turn lost its lease on the conversation.")
        lease.expires_at = now_ms() + int(ttl_seconds * 1000)
        self.lease[(lease.conversation.tenant, lease.conversation.id)] = (lease.lease_id, lease.expires_at)

    def release_lease(self, lease: Any) -> None:
        if self._holds(lease):
            del self.lease[(lease.conversation.tenant, lease.conversation.id)]
            self.leases_released += 1

    def _check_commit(self, lease: Any) -> Any:
        from llm_gateway.errors import ConversationBusy

        if self.fail_commit is not None:
            exc, self.fail_commit = self.fail_commit, None
            raise exc
        conv = lease.conversation
        head = self._head(conv.tenant, conv.id)
        if not self._holds(lease) or head.version != conv.version:
            raise ConversationBusy("The conversation changed while this turn ran; nothing was stored.")
        return head

    def commit_turn(
        self,
        lease: Any,
        messages: list[Any],
        *,
        usage: Any,
        system: tuple[str, int] | None = None,
        turn_id: str | None = None,
        also: Any = (),
    ) -> list[Any]:
        from llm_gateway.conversations.records import StoredMessage, TurnAlreadyCommitted

        if also:  # DynamoDB writes (a quota settlement) cannot ride on an in-memory commit
            raise ValueError("the in-memory conversation store cannot carry other writes")
        from llm_gateway.deadline import now_ms

        head = self._check_commit(lease)
        conv = lease.conversation
        if turn_id is not None and (conv.tenant, conv.id, turn_id) in self.turns:
            raise TurnAlreadyCommitted(turn_id)
        now = now_ms()
        first = head.message_count
        stored = [StoredMessage(first + i, m.body, m.tokens, now, m.meta) for i, m in enumerate(messages)]
        self.messages_of[(conv.tenant, conv.id)].update({m.seq: m for m in stored})
        if turn_id is not None:
            self.turns[(conv.tenant, conv.id, turn_id)] = [m.seq for m in stored]
        head.version += 1
        head.message_count = first + len(messages)
        head.updated_at = now
        head.prompt_tokens += usage.prompt_tokens
        head.completion_tokens += usage.completion_tokens
        head.cost_usd += usage.cost_usd
        if system is not None:
            head.system, head.system_tokens = system
        del self.lease[(conv.tenant, conv.id)]
        conv.version, conv.message_count = head.version, head.message_count
        self.writes += 1
        return stored

    def commit_edit(self, lease: Any, seq: int, replacement: Any) -> None:
        from llm_gateway.errors import ConversationBusy

        head = self._check_commit(lease)
        conv = lease.conversation
        stored = self.messages_of[(conv.tenant, conv.id)]
        if seq not in stored:
            raise ConversationBusy("The conversation changed while the item was removed; retry.")
        if replacement is None:
            del stored[seq]
            head.deleted_messages += 1
        else:
            stored[seq].body, stored[seq].tokens = replacement.body, replacement.tokens
        head.version += 1
        del self.lease[(conv.tenant, conv.id)]
        conv.version = head.version
        self.writes += 1


class InMemoryJobStore:
    """jobs.store.JobStore in dicts: transitions only from queued/running (a finished job stays
    finished), job items created only if absent, an Idempotency-Key claimed once per TTL."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], Any] = {}
        self.keys: dict[tuple[str, str], Any] = {}
        self.dead_lettered: set[tuple[str, str]] = set()  # failed jobs a redriven message may run again
        self.writes = 0

    def get(self, tenant: str, job_id: str) -> Any:
        import copy

        job = self.jobs.get((tenant, job_id))
        return copy.deepcopy(job) if job is not None else None

    def get_many(self, tenant: str, job_ids: list[str]) -> dict[str, Any]:
        return {j: job for j in job_ids if (job := self.get(tenant, j)) is not None}

    def create_all(self, jobs: list[Any]) -> None:
        import copy

        for job in jobs:
            if (job.tenant, job.id) not in self.jobs:
                self.jobs[(job.tenant, job.id)] = copy.deepcopy(job)
                self.writes += 1

    def begin(self, message: Any, request: Any) -> tuple[Any, bool]:
        from llm_gateway.deadline import now_ms
        from llm_gateway.jobs.store import QUEUED, RUNNING, Job

        now = now_ms()
        key = (message.tenant_id, message.job_id)
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = Job(
                id=message.job_id,
                tenant=message.tenant_id,
                status=QUEUED,
                created_at=message.submitted_at or now,
                updated_at=now,
                model=request.model,
                conversation_id=request.conversation_id,
                source=message.source or "sqs",
            )
        if job.status not in (QUEUED, RUNNING) and key not in self.dead_lettered:
            return self.get(*key), False
        self.dead_lettered.discard(key)
        job.error = job.completed_at = None
        job.status, job.attempts, job.updated_at = RUNNING, job.attempts + 1, now
        job.started_at = job.started_at or now
        self.writes += 1
        return self.get(*key), True

    def _transition(self, job: Any, **fields: Any) -> Any:
        from llm_gateway.deadline import now_ms
        from llm_gateway.jobs.store import QUEUED, RUNNING

        stored = self.jobs.get((job.tenant, job.id))
        if stored is None or stored.status not in (QUEUED, RUNNING):
            return None
        for name, value in fields.items():
            setattr(stored, name, value)
        stored.updated_at = now_ms()
        self.writes += 1
        return self.get(job.tenant, job.id)

    def requeue(self, job: Any, error: dict[str, Any]) -> Any:
        from llm_gateway.jobs.store import QUEUED

        return self._transition(job, status=QUEUED, last_error=error)

    def succeed(self, job: Any, result: dict[str, Any]) -> Any:
        from llm_gateway.deadline import now_ms
        from llm_gateway.jobs.store import SUCCEEDED

        return self._transition(job, status=SUCCEEDED, result=result, completed_at=now_ms(), last_error=None)

    def fail(self, job: Any, error: dict[str, Any], *, dead_lettered: bool = False) -> Any:
        from llm_gateway.deadline import now_ms
        from llm_gateway.jobs.store import FAILED

        done = self._transition(job, status=FAILED, error=error, completed_at=now_ms(), last_error=None)
        if done is not None and dead_lettered:
            self.dead_lettered.add((job.tenant, job.id))
        return done

    def dead_letter(self, tenant: str, job_id: str, error: dict[str, Any]) -> str:
        from llm_gateway.jobs.store import FAILED, Job

        if self.fail(Job(job_id, tenant, "", 0, 0), error, dead_lettered=True) is not None:
            return "failed"
        job = self.jobs.get((tenant, job_id))
        if job is not None and job.status == FAILED:
            self.dead_lettered.add((tenant, job_id))
            return "already_failed"
        return job.status if job is not None else "unknown"

    def status(self, tenant: str, job_id: str) -> str | None:
        job = self.jobs.get((tenant, job_id))
        return job.status if job is not None else None

    def cancel(self, tenant: str, job_id: str) -> tuple[Any, bool]:
        from llm_gateway.deadline import now_ms
        from llm_gateway.jobs.store import CANCELLED, Job

        job = self.jobs.get((tenant, job_id))
        if job is None:
            return None, False
        done = self._transition(Job(job_id, tenant, "", 0, 0), status=CANCELLED, completed_at=now_ms(), last_error=None)
        return (done, True) if done is not None else (self.get(tenant, job_id), False)

    def claim_key(self, tenant: str, key: str, body_hash: str, job_ids: list[str], ttl_seconds: int) -> Any:
        from llm_gateway.deadline import now_ms
        from llm_gateway.jobs.store import IdempotencyRecord

        now = now_ms()
        old = self.keys.get((tenant, key))
        if old is not None and old[1] >= now:
            return old[0]
        self.keys[(tenant, key)] = (IdempotencyRecord(body_hash, list(job_ids), now, False), now + ttl_seconds * 1000)
        self.writes += 1
        return None

    def mark_enqueued(self, tenant: str, key: str) -> None:
        import dataclasses

        record, expires = self.keys[(tenant, key)]
        self.keys[(tenant, key)] = (dataclasses.replace(record, enqueued=True), expires)
        self.writes += 1


class FakeQueue:
    """The slice of an SQS client JobService uses (``send_message_batch``); keeps what was sent.
    ``refuse`` (an exception) makes the next send raise it."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refuse: BaseException | None = None

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        if self.refuse is not None:
            exc, self.refuse = self.refuse, None
            raise exc
        self.sent += Entries
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def in_memory_idempotency() -> Any:
    """A Powertools idempotency persistence layer in a dict (the same put conditions as its DynamoDB one)."""
    import datetime as dt

    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyItemAlreadyExistsError,
        IdempotencyItemNotFoundError,
    )
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer, DataRecord

    class InMemoryIdempotency(BasePersistenceLayer):
        def __init__(self) -> None:
            super().__init__()
            self.records: dict[str, DataRecord] = {}

        def _get_record(self, idempotency_key: str) -> DataRecord:
            try:
                return self.records[idempotency_key]
            except KeyError:
                raise IdempotencyItemNotFoundError(idempotency_key) from None

        def _put_record(self, data_record: DataRecord) -> None:
            old = self.records.get(data_record.idempotency_key)
            now = dt.datetime.now().timestamp()
            if old is not None and not (
                (old.expiry_timestamp or 0) < now
                or (
                    old.status == "INPROGRESS"
                    and old.in_progress_expiry_timestamp is not None
                    and old.in_progress_expiry_timestamp < now * 1000
                )
            ):
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            self.records[data_record.idempotency_key] = data_record

        def _update_record(self, data_record: DataRecord) -> None:
            self.records[data_record.idempotency_key] = data_record

        def _delete_record(self, data_record: DataRecord) -> None:
            self.records.pop(data_record.idempotency_key, None)

    return InMemoryIdempotency()


class InMemoryKeyStore:
    """The gateway's API keys (security.api_keys.ApiKeyStore; quotas.admin.KeyStore) in a dict, by hash."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}  # sha256 -> ApiKey

    def create(self, tenant: str, name: str = "", key: str | None = None, *, admin: bool = False) -> tuple[str, Any]:
        import secrets

        from llm_gateway.deadline import now_ms
        from llm_gateway.security.api_keys import KEY_PREFIX, ApiKey, hash_key

        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        assert digest not in self.keys
        record = ApiKey("key_" + digest[:12], tenant, name, now_ms(), admin=admin, key_hash=digest)
        self.keys[digest] = record
        return key, record

    def lookup(self, key: str) -> Any:
        from llm_gateway.security.api_keys import hash_key

        return self.keys.get(hash_key(key))

    def list(self, tenant: str | None = None) -> list[Any]:
        return sorted(
            (k for k in self.keys.values() if tenant is None or k.tenant == tenant), key=lambda k: (k.tenant, k.key_id)
        )

    def revoke(self, key_id: str) -> Any:
        import dataclasses

        from llm_gateway.errors import NotFound

        for digest, record in self.keys.items():
            if record.key_id == key_id:
                self.keys[digest] = dataclasses.replace(record, revoked=True)
                return self.keys[digest]
        raise NotFound(f"No API key with id '{key_id}'.")
