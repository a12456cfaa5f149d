"""Text that cannot be encoded: lone UTF-16 surrogates in decoded JSON.

JSON may spell a lone surrogate (``"\\ud800"``), and Python's ``json.loads`` on bytes decodes
CESU-style surrogate bytes to one (``surrogatepass``). Such a string cannot be encoded as UTF-8,
so it fails later — when it is counted, stored in DynamoDB or sent upstream — as a 500. What a
client sends is refused at the edge (:func:`first_unencodable`, a 400 naming the field); what an
upstream sends is repaired (:func:`repaired`, U+FFFD, as a lenient UTF-8 decoder would).

Neutral: imports nothing of the gateway.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
# A JSON escape of a surrogate, or raw surrogate bytes (UTF-8 rejects them; json.loads passes them).
_RAW_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\xed[\xa0-\xbf]")


def may_hold_surrogates(raw: bytes) -> bool:
    """Whether a JSON text can decode to a string holding a surrogate (a cheap check on the raw
    bytes, so the common body is not walked)."""
    return _RAW_SURROGATE.search(raw) is not None


def first_unencodable(value: Any, path: str = "") -> str | None:
    """The path (``messages[0].content``, OpenAI's ``param`` style) of the first string, or object
    key, in decoded JSON that holds a lone surrogate; None when all of it encodes."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return where or "body"
        elif isinstance(item, dict):
            pending = []
            for key, child in item.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and _SURROGATE.search(key):
                    return where or "body"
                pending.append((name, child))
            stack.extend(reversed(pending))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{where}[{i}]", child) for i, child in enumerate(item)]))
    return None


def repaired(value: Any) -> Any:
    """Decoded JSON with every lone surrogate replaced by U+FFFD (strings and object keys)."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {repaired(k): repaired(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repaired(v) for v in value]
    return value
