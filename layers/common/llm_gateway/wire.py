"""Helpers over wire-format (OpenAI Chat Completions) messages as plain dicts, for every layer.

Neutral: imports nothing of the gateway, so providers, upstream and chat can all use it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any


def message_text(message: dict[str, Any]) -> str:
    """Concatenate every piece of text a wire-format message carries."""
    content = message.get("content")
    parts: list[str] = []
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        parts.append(str(function.get("name", "")))
        parts.append(str(function.get("arguments", "")))
    return "\n".join(parts)


def chat_completion(
    message: dict[str, Any],
    finish_reason: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    model: str | None,
    id_: str | None = None,
    created: int | None = None,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The one OpenAI ``chat.completion`` body: choice 0 is ``message``, usage the two counts.

    ``base`` is an upstream's own body: what it holds beyond these (other choices, ``logprobs``, usage
    details, ``system_fingerprint``, …) passes through. A missing id or ``created`` is made up here.
    """
    body = dict(base or {})
    choices = list(body.get("choices") or [{}])
    first = {**choices[0], "index": 0, "message": message, "finish_reason": finish_reason}
    first.setdefault("logprobs", None)
    usage = {
        **(body.get("usage") or {}),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    body.update(
        {
            "id": id_ or body.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": created or body.get("created") or int(time.time()),
            "model": model if model is not None else body.get("model"),
            "choices": [first, *choices[1:]],
            "usage": usage,
        }
    )
    return body
