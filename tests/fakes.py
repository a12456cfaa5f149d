"""In-memory fakes of the package's small protocols, for unit tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llm_gateway.errors import ProviderKeyUnavailable
from llm_gateway.providers.base import Timeout, UpstreamReply, Usage
from llm_gateway.upstream.retry import UpstreamStreamError


class FakeKeys:
    """KeyProvider holding plaintext keys in memory; counts what it was asked."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = dict(keys)
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

    def put(self, record: Any) -> None:
        from llm_gateway.responses.store import StoredResponse

        assert isinstance(record, StoredResponse)
        key = (record.tenant, record.id)
        assert key not in self.items
        self.items[key] = record
        self.writes += 1

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
