"""A non-streamed upstream reply's body, read in no more than the request's time left.

``requests`` bounds each socket read (the read timeout), not the whole body: an upstream that
drips one byte a second never trips a 6 s read timeout and holds a request for as long as it
likes. Here the body is read as it arrives, each read bounded by the time left (the socket
timeout is lowered to it), and the read stops at the deadline with :class:`UpstreamTimeout`
(the router answers 504). The deadline is the active scope's (``deadline.current()``: the
router enters the request's); with none, only the read timeout applies, as before.

The status line and headers come before this: :mod:`.watchdog` ends that wait at the deadline.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

from llm_gateway.deadline import Deadline, current
from llm_gateway.providers.base import UpstreamConnectionError, UpstreamHTTPError, UpstreamTimeout

READ_SIZE = 65_536


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


def read_body(resp: requests.Response, deadline: Deadline | None = None) -> None:
    """Read ``resp``'s whole body (sent with ``stream=True``) into it, so ``resp.content`` and
    ``resp.json()`` work as usual — in no longer than ``deadline`` (default: the active scope's)."""
    if deadline is None:
        scope = current()
        deadline = scope.deadline if scope is not None else None
    sock = connection_socket(resp)
    base = sock.gettimeout() if sock is not None else None
    chunks: list[bytes] = []
    raw: Any = resp.raw
    try:
        while True:
            read_timeout(sock, base, deadline)
            data = raw.read1(READ_SIZE, decode_content=True)
            if not data:
                break
            chunks.append(data)
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
