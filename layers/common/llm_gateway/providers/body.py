"""A non-streamed upstream reply's body, read in no more than the request's time left.

``requests`` bounds each socket read (the read timeout), not the whole body: an upstream that
drips one byte a second never trips a 6 s read timeout and holds a request for as long as it
likes. Here the body is read as it arrives, each read bounded by the time left (the socket
timeout is lowered to it), and the read stops at the deadline with :class:`UpstreamTimeout`
(the router answers 504). The deadline is the active scope's (``deadline.current()``: the
router enters the request's); with none, only the read timeout applies, as before.

The status line and headers come before this: :mod:`.watchdog` ends that wait at the deadline.

Nor is the body trusted for its size (issue 13): ``requests`` would read it whole — decompressed
— so a small gzip bomb cost hundreds of MiB. Here urllib3 decodes gzip/deflate/br/zstd in pieces,
bounded per read, and the read stops with :class:`UpstreamReplyTooLarge` (a 502 that says so)
once the bytes on the wire or the bytes decoded pass the cap (``MAX_REPLY_BYTES``; an error body
``MAX_ERROR_BYTES``). JSON from an upstream is parsed by :func:`loads`: non-finite numbers
(``1e400``, ``NaN``, which could never be sent on as JSON) read as null, lone surrogates (which
could never be stored) repaired.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
from typing import Any

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

from llm_gateway.deadline import Deadline, current
from llm_gateway.providers.base import (
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamReplyTooLarge,
    UpstreamTimeout,
)
from llm_gateway.text import may_hold_surrogates, repaired

READ_SIZE = 65_536
MAX_REPLY_BYTES = 8 * 1024 * 1024  # a completion (or one event of a stream), on the wire or decoded
MAX_ERROR_BYTES = 64 * 1024  # an error body: its message is all the gateway reads of it


def connection_socket(resp: requests.Response) -> socket.socket | None:
    """The socket under a streamed response, when there is one (not under test doubles)."""
    sock = getattr(getattr(getattr(resp, "raw", None), "connection", None), "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def read_timeout(sock: socket.socket | None, base: float | None, deadline: Deadline | None) -> None:
    """Lower the socket's timeout to the time left (never raise it above ``base``, the read timeout).
    Raises UpstreamTimeout when no time is left."""
    if deadline is None:
        return
    left = deadline.remaining()
    if left <= 0:
        raise UpstreamTimeout("The upstream's reply did not arrive within the request's deadline.")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(left if base is None else min(base, left))


def read_body(resp: requests.Response, deadline: Deadline | None = None, limit: int | None = None) -> None:
    """Read ``resp``'s whole body (sent with ``stream=True``) into it, so ``resp.content`` and
    ``resp.json()`` work as usual — in no longer than ``deadline`` (default: the active scope's)
    and no more than ``limit`` bytes on the wire or decoded (default: MAX_REPLY_BYTES for a 2xx,
    MAX_ERROR_BYTES for an error)."""
    if limit is None:
        limit = MAX_REPLY_BYTES if resp.status_code < 400 else MAX_ERROR_BYTES
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        resp.close()
        raise UpstreamReplyTooLarge(limit)
    if deadline is None:
        scope = current()
        deadline = scope.deadline if scope is not None else None
    sock = connection_socket(resp)
    base = sock.gettimeout() if sock is not None else None
    chunks: list[bytes] = []
    size = 0
    raw: Any = resp.raw
    try:
        while True:
            read_timeout(sock, base, deadline)
            data = raw.read1(READ_SIZE, decode_content=True)
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > limit or raw.tell() > limit:
                resp.close()
                raise UpstreamReplyTooLarge(limit)
    except (ReadTimeoutError, TimeoutError) as exc:
        resp.close()
        if deadline is not None and deadline.expired():
            raise UpstreamTimeout("The upstream's reply did not arrive within the request's deadline.") from exc
        raise UpstreamTimeout("The upstream stopped sending its reply (read timeout).") from exc
    except DecodeError as exc:
        resp.close()
        raise UpstreamHTTPError(502, "The upstream's reply could not be decoded.") from exc
    except (ProtocolError, OSError) as exc:
        resp.close()
        raise UpstreamConnectionError("The upstream connection broke before the reply was complete.") from exc
    except UpstreamTimeout:
        resp.close()
        raise
    resp._content = b"".join(chunks)  # requests' own cache of the body: .content / .json() read it
    resp._content_consumed = True  # type: ignore[attr-defined]  # requests' flag, absent from its stubs


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def loads(data: bytes | str) -> Any:
    """JSON from an upstream: non-finite numbers as None, lone surrogates as U+FFFD."""
    value = json.loads(data, parse_float=_finite, parse_constant=lambda _: None)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return repaired(value) if may_hold_surrogates(raw) else value
