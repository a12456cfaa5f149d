"""What the HTTP providers share: per-deployment proxies and a server-sent-events reader.

Proxies: ``requests`` honours ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` from the
environment by itself (``Session.trust_env``, on by default). A deployment's own
``proxy`` is passed as ``proxies=`` on every request of its session: per-request
proxies win over the environment's (a ``Session.proxies`` attribute would not — the
environment overrides it), and the deployment's proxy is used even for hosts listed in
``NO_PROXY`` (explicit configuration wins).

The SSE reader is written here (a dozen lines, per the WHATWG event-stream format)
rather than taken from a library, to keep the layer's dependencies and import time small.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import requests


class ProxiedSession(requests.Session):
    """A session that sends every request through one proxy."""

    def __init__(self, proxy: str) -> None:
        super().__init__()
        self.proxy = proxy

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["proxies"] = {"http": self.proxy, "https": self.proxy, **(kwargs.get("proxies") or {})}
        return super().request(method, url, *args, **kwargs)


def session_for(proxy: str | None, shared: requests.Session) -> requests.Session:
    return ProxiedSession(proxy) if proxy else shared


def iter_sse(lines: Iterable[bytes | str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs from an event stream's lines; an unterminated last event is dropped."""
    event, data = "", []
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
