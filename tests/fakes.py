"""In-memory fakes of the package's small protocols, for unit tests."""

from __future__ import annotations

from typing import Any

from llm_gateway.errors import ProviderKeyUnavailable
from llm_gateway.providers.base import Timeout, UpstreamReply, Usage


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

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        self.bodies.append(body)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        text = step if isinstance(step, str) else f"reply {len(self.bodies)}"
        data = {
            "id": f"chatcmpl-{len(self.bodies)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
        return UpstreamReply(data, Usage(10, 2))
