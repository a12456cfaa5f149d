"""What an error text may carry to a client: no key material, no quotes of the prompt.

Neutral: providers scrub their keys from upstream error texts (:func:`scrub`); the router takes
the request's own message texts out of what it passes on (:func:`without_echoes`).
"""

from __future__ import annotations

import re
from typing import Any

from llm_gateway.wire import message_text

_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-*]{3,}|Bearer\s+\S+)")


def redact_secrets(text: str) -> str:
    """``text`` with anything shaped like an API key or a bearer token replaced (whole length)."""
    return _SECRETISH.sub("[redacted]", text)


def scrub(message: str, secret: str | None) -> str:
    """An upstream's error text, without our key or anything shaped like one."""
    if secret:
        message = message.replace(secret, "[redacted]")
    return redact_secrets(message)[:500]


def prompt_lines(body: dict[str, Any]) -> list[dict[str, str]]:
    """What ``LOG_PROMPTS`` logs of an upstream request: each message's role and text, secrets redacted."""
    lines: list[dict[str, str]] = []
    for item in body.get("messages") or ():
        if isinstance(item, dict):
            lines.append({"role": str(item.get("role", "")), "text": redact_secrets(message_text(item))})
    return lines


def without_echoes(message: str, body: dict[str, Any]) -> str:
    """An upstream's error text without exact quotes of the request's own message texts: the
    upstream's reason is passed on to the client, the prompt is not (error bodies carry none)."""
    for item in body.get("messages") or ():
        text = message_text(item) if isinstance(item, dict) else ""
        if len(text) >= 8 and text in message:
            message = message.replace(text, "[redacted]")
    return message
