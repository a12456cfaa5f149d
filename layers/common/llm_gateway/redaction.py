"""What an error text may carry to a client: no key material, no quotes of the prompt.

Neutral: providers scrub their keys from upstream error texts (:func:`scrub`); the router takes
the request's own message texts out of what it passes on (:func:`without_echoes`).
"""

from __future__ import annotations

import re
from typing import Any

from llm_gateway.wire import message_text

_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-*]{3,}|Bearer\s+\S+)")


def scrub(message: str, secret: str | None) -> str:
    """An upstream's error text, without our key or anything shaped like one."""
    if secret:
        message = message.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", message)[:500]


def without_echoes(message: str, body: dict[str, Any]) -> str:
    """An upstream's error text without exact quotes of the request's own message texts: the
    upstream's reason is passed on to the client, the prompt is not (error bodies carry none)."""
    for item in body.get("messages") or ():
        text = message_text(item) if isinstance(item, dict) else ""
        if len(text) >= 8 and text in message:
            message = message.replace(text, "[redacted]")
    return message
