"""A boto3 client's HTTP exchanges held to the rules the HTTP providers keep (Bedrock's client).

botocore reads a reply whole before its parser sees it, bounded only per socket read, and offers
no way to end an exchange from another thread. :func:`bounded` fits a client (once, before its
first call) with:

* **the body caps of** :mod:`.body` **and** :mod:`.sse` — a reply ``MAX_REPLY_BYTES`` (an error
  body ``MAX_ERROR_BYTES``), an event stream ``MAX_STREAM_BYTES`` in all and ``MAX_REPLY_BYTES``
  an event (the length its prelude announces, checked before the event is buffered): the body
  is read here, counted as it arrives, and the read stops with ``UpstreamReplyTooLarge`` once
  it passes the cap (botocore reads without decoding: the bytes counted are those on the wire).
  A non-streamed body is also read in no longer than the request's time left
  (:func:`.body.read_timeout`, as the HTTP providers' bodies are);
* **the watchdog's pools** (:mod:`.watchdog`): the wait for the reply's headers ends at the
  request's deadline, and a :class:`~.watchdog.CallScope` (a cancelled job) aborts it;
* **a handle on the exchange** (:func:`last_exchange`) whose :meth:`Exchange.abort` shuts the
  connection's socket down from another thread — what cancelling a stream (a cancelled background
  response, a client gone) needs, as ``SSEChunkStream.abort`` does for the HTTP providers.

Written by hand on botocore's URLLib3Session (its ``send`` and its pool classes, private but stable
for years): botocore has no public hook between the headers and the body. The client keeps its
signing, parsing and error handling; only the transport's reading changes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from urllib3.exceptions import ProtocolError, ReadTimeoutError

from llm_gateway.deadline import current
from llm_gateway.providers.base import UpstreamConnectionError, UpstreamReplyTooLarge, UpstreamTimeout
from llm_gateway.providers.body import MAX_ERROR_BYTES, MAX_REPLY_BYTES, READ_SIZE, read_timeout
from llm_gateway.providers.sse import MAX_STREAM_BYTES
from llm_gateway.providers.watchdog import _Watched

_last = threading.local()  # .exchange: this thread's latest exchange


class Exchange:
    """One reply's body as botocore reads it (``raw``): counted, capped, and abortable."""

    def __init__(self, raw: Any, *, status: int, streamed: bool) -> None:
        self.raw = raw
        self.streamed = streamed
        self.limit = MAX_ERROR_BYTES if status >= 400 else (MAX_STREAM_BYTES if streamed else MAX_REPLY_BYTES)
        self.total = 0
        self.sock = _socket(raw)
        self._left = 0  # bytes of the current event-stream message still to come
        self._prelude = b""  # the start of the next message's prelude (its total length first)

    def stream(self, amt: int = READ_SIZE, decode_content: bool | None = None) -> Iterator[bytes]:
        scope = None if self.streamed else current()
        deadline = scope.deadline if scope is not None else None
        base = self.sock.gettimeout() if self.sock is not None else None
        chunks = self.raw.stream(amt, decode_content=decode_content)
        while True:
            read_timeout(self.sock, base, deadline)
            try:
                data = next(chunks)
            except StopIteration:
                return
            except (ReadTimeoutError, TimeoutError) as exc:  # as body.read_body reports them
                self.raw.close()
                if deadline is not None and deadline.expired():
                    raise UpstreamTimeout("The upstream's reply did not arrive within the request's deadline.") from exc
                raise UpstreamTimeout("The upstream stopped sending its reply (read timeout).") from exc
            except (ProtocolError, OSError) as exc:
                self.raw.close()
                raise UpstreamConnectionError("The upstream connection broke before the reply was complete.") from exc
            self.total += len(data)
            if self.total > self.limit:
                self.raw.close()
                raise UpstreamReplyTooLarge(self.limit)
            if self.streamed:
                self._check_events(data)
            yield data

    def _check_events(self, data: bytes) -> None:
        """Each event-stream message announces its total length in the first 4 bytes of its prelude
        (big-endian): one over MAX_REPLY_BYTES is refused before it is buffered."""
        at = 0
        while at < len(data):
            if self._left:
                step = min(self._left, len(data) - at)
                self._left -= step
                at += step
                continue
            take = 4 - len(self._prelude)
            self._prelude += data[at : at + take]
            at += take
            if len(self._prelude) == 4:
                total = int.from_bytes(self._prelude, "big")
                self._prelude = b""
                if total > MAX_REPLY_BYTES:
                    self.raw.close()
                    raise UpstreamReplyTooLarge(MAX_REPLY_BYTES)
                self._left = max(0, total - 4)

    def abort(self) -> None:
        """Thread-safe: a read blocked on the upstream returns at once; the upstream sees the close."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.raw.close()

    def __getattr__(self, name: str) -> Any:  # the rest of urllib3's response, as botocore may use it
        return getattr(self.raw, name)


def _socket(raw: Any) -> socket.socket | None:
    """The socket under a urllib3 response: its connection's, or — when http.client let go of the
    connection, as for an HTTP/1.0 or ``Connection: close`` reply — the one its body is read from."""
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def last_exchange() -> Exchange | None:
    """The exchange of this thread's latest call on a :func:`bounded` client."""
    return getattr(_last, "exchange", None)


def forget_exchange() -> None:
    """Before a call: :func:`last_exchange` then names that call's exchange, or none."""
    _last.exchange = None


class _BoundedSession:
    """botocore's HTTP session, reading each body through an :class:`Exchange`."""

    def __init__(self, session: Any) -> None:
        self._session = session

    def send(self, request: Any) -> Any:
        streamed = bool(request.stream_output)
        request.stream_output = True  # the status and headers only: the body is read below
        _last.exchange = None
        response = self._session.send(request)
        exchange = Exchange(response.raw, status=response.status_code, streamed=streamed)
        response.raw = exchange
        _last.exchange = exchange
        if not streamed:
            response.content  # noqa: B018 - reads the body now, capped, as botocore would have
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def bounded(client: Any) -> Any:
    """Fit a boto3 client with the caps, the watchdog and :func:`last_exchange` (see the module)."""
    from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool

    endpoint = client._endpoint
    session = endpoint.http_session
    if isinstance(session, _BoundedSession):
        return client
    pools = {
        "http": type("WatchedAWSHTTPConnectionPool", (_Watched, AWSHTTPConnectionPool), {}),
        "https": type("WatchedAWSHTTPSConnectionPool", (_Watched, AWSHTTPSConnectionPool), {}),
    }
    session._pool_classes_by_scheme = pools  # the proxy managers it makes later take them too
    session._manager.pool_classes_by_scheme = pools
    endpoint.http_session = _BoundedSession(session)
    return client
