"""What an error text may carry to a client: no key material, no quotes of the prompt.

Neutral: providers scrub their keys from upstream error texts (:func:`scrub`); the router takes
the request's own message texts out of what it passes on (:func:`without_echoes`).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from llm_gateway.wire import message_text

MIN_SECRET = 8  # shorter keys (or forms of one) are not looked for: they would match ordinary text
KEY_RUN = 8  # characters of a key form that count as quoting the key
QUOTE_RUN = 16  # characters of a message text that count as quoting the prompt
MIN_QUOTE = 8

_SECRETISH = re.compile(r"(sk-[A-Za-z0-9_\-*]{3,}|Bearer\s+\S+)")


def redact_secrets(text: str) -> str:
    """``text`` with anything shaped like an API key or a bearer token replaced (whole length)."""
    return _SECRETISH.sub("[redacted]", text)


def secret_forms(secret: str) -> list[str]:
    """The ways an upstream may echo a key: as sent, without its ``sk-``-style prefix, reversed,
    base64 (standard and URL-safe, at every byte alignment inside a longer base64 text) and hex."""
    bare = re.sub(r"^(?:[A-Za-z]{1,8}-){1,3}", "", secret)
    forms: set[str] = set()
    for form in {secret, bare}:
        if len(form) < MIN_SECRET:
            continue
        forms |= {form, form[::-1], form.encode().hex()}
        data = form.encode()
        for shift in range(3):  # base64 of the key inside a longer text: the chars only the key decides
            encoded = base64.b64encode(b"\0" * shift + data).decode()
            core = encoded[-(-8 * shift // 6) : (8 * (shift + len(data))) // 6]
            forms |= {core, core.replace("+", "-").replace("/", "_")}
    return sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True)


def scrub(message: str, secret: str | None) -> str:
    """An upstream's error text without our key in any form (see :func:`secret_forms`; a run of
    ``KEY_RUN`` or more characters of any form counts) or anything shaped like a key."""
    if secret and len(secret) >= MIN_SECRET:
        forms = secret_forms(secret)
        message = _redact_quotes(message, forms, KEY_RUN, flags=re.IGNORECASE)
    return redact_secrets(message)[:500]


def prompt_lines(body: dict[str, Any]) -> list[dict[str, str]]:
    """What ``LOG_PROMPTS`` logs of an upstream request: each message's role and text, secrets redacted."""
    lines: list[dict[str, str]] = []
    for item in body.get("messages") or ():
        if isinstance(item, dict):
            lines.append({"role": str(item.get("role", "")), "text": redact_secrets(message_text(item))})
    return lines


def without_echoes(message: str, body: dict[str, Any]) -> str:
    """An upstream's error text without quotes of the request's own message texts — whole or in
    part: any run of ``QUOTE_RUN`` or more characters found in a message is cut out. The upstream's
    reason is passed on to the client (and stored in a job's error); the prompt is not."""
    texts = [message_text(item) for item in body.get("messages") or () if isinstance(item, dict)]
    return _redact_quotes(message, [t for t in texts if len(t) >= MIN_QUOTE], QUOTE_RUN)


def _redact_quotes(message: str, sources: list[str], run: int, *, flags: int = 0) -> str:
    """``message`` with every stretch it shares with one of ``sources`` replaced by ``[redacted]``.

    Each window of ``run`` characters of the message at a step of ``run // 2`` is looked up in the
    sources and a hit is grown to the whole common stretch, so any shared stretch of ``1.5 * run``
    characters or more is found (and most from ``run`` on), in time linear in the message's
    windows times the sources' length — never the prompt's length squared."""
    if not sources or len(message) < run:
        return message
    folded = [src.lower() for src in sources] if flags & re.IGNORECASE else sources
    text = message.lower() if flags & re.IGNORECASE else message
    spans: list[tuple[int, int]] = []
    step = max(1, run // 2)
    for start in range(0, len(text) - run + 1, step):
        if spans and start + run <= spans[-1][1]:
            continue
        window = text[start : start + run]
        for src in folded:
            at = src.find(window)
            if at < 0:
                continue
            lo, hi, src_lo, src_hi = start, start + run, at, at + run
            while lo > 0 and src_lo > 0 and text[lo - 1] == src[src_lo - 1]:
                lo, src_lo = lo - 1, src_lo - 1
            while hi < len(text) and src_hi < len(src) and text[hi] == src[src_hi]:
                hi, src_hi = hi + 1, src_hi + 1
            spans.append((lo, hi))
            break
    if not spans:
        return message
    out, last = [], 0
    for lo, hi in sorted(spans):
        if lo < last:
            lo = last
        if hi <= last:
            continue
        out.append(message[last:lo] + "[redacted]")
        last = hi
    return "".join(out) + message[last:]
