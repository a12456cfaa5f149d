"""Per-deployment proxies for the HTTP providers (their event-stream reader is :mod:`.sse`).

Proxies: ``requests`` honours ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` from the
environment by itself (``Session.trust_env``, on by default). A deployment's own
``proxy`` is passed as ``proxies=`` on every request of its session: per-request
proxies win over the environment's (a ``Session.proxies`` attribute would not — the
environment overrides it), and the deployment's proxy is used even for hosts listed in
``NO_PROXY`` (explicit configuration wins).
"""

from __future__ import annotations

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
