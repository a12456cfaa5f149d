"""Helpers over wire-format (OpenAI Chat Completions) messages as plain dicts, for every layer.

Neutral: imports nothing of the gateway, so providers, upstream and chat can all use it.
"""

from __future__ import annotations

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
