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


class ScriptedProvider:
    """Provider answering from a script: exceptions are raised, dicts are replies."""

    def __init__(self, name: str = "default", script: list[Any] | None = None) -> None:
        self.name = name
        self.script = list(script or [])
        self.bodies: list[dict[str, Any]] = []

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
            "created": 0,
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
        return UpstreamReply(data, Usage(10, 2))

    def stream(self, body: dict[str, Any], timeout: Timeout) -> Iterator[dict[str, Any]]:
        """The scripted reply as chunks: its text word by word, then each tool call (name, then
        its arguments in two pieces); a scripted ``cut`` raises UpstreamStreamError after that many."""
        message, finish_reason, cut = self._step(body)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-s",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model", "m"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

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
            self.settles += 1
            for counter in counters:
                self._add(counter)
            for pk, sk, holder in releases:
                self.items.get((pk, sk), {}).get("holders", set()).discard(holder)

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
