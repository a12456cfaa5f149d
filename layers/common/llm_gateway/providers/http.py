"""The HTTP providers' transport: ``requests`` errors mapped to the provider protocol's, and
per-deployment proxies (their event-stream reader is :mod:`.sse`).

Proxies: ``requests`` honours ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` from the
environment by itself (``Session.trust_env``, on by default) — reading the environment again on
every request, which :class:`UpstreamSession` does once per URL instead. A deployment's own
``proxy`` is passed as ``proxies=`` on every request of its session: per-request
proxies win over the environment's (a ``Session.proxies`` attribute would not — the
environment overrides it), and the deployment's proxy is used even for hosts listed in
``NO_PROXY`` (explicit configuration wins).
"""

from __future__ import annotations

from typing import Any

import requests

from llm_gateway.deadline import current
from llm_gateway.providers.base import UpstreamConnectionError, UpstreamTimeout
from llm_gateway.providers.body import read_body
from llm_gateway.providers.watchdog import watched


def post(session: requests.Session, url: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
    """``session.post`` with ``requests``' connection errors and timeouts as the provider protocol's
    (the message names only the exception class: ``requests``' own texts may quote the URL).

    Not ``stream`` (or an error status): the body is read here, in no longer than the active
    deadline and no larger than the cap (:mod:`.body`). A session with :func:`.watchdog.watched`
    adapters also ends the wait for the headers at it."""
    try:
        resp = session.post(url, stream=True, **kwargs)
    except requests.Timeout as exc:  # ConnectTimeout is both: a timeout first
        raise UpstreamTimeout(f"The upstream did not answer in time ({type(exc).__name__}).") from exc
    except requests.ConnectionError as exc:
        scope = current()
        if scope is not None and scope.deadline.expired():  # the watchdog cut it at the deadline
            raise UpstreamTimeout("The upstream did not answer within the request's deadline.") from exc
        raise UpstreamConnectionError(f"Could not reach the upstream ({type(exc).__name__}).") from exc
    if not stream or resp.status_code >= 400:  # an error body is read (capped) for its message
        read_body(resp)
    return resp


class UpstreamSession(requests.Session):
    """A ``requests.Session`` that reads the environment's proxy and CA-bundle settings once per URL.

    ``Session.request`` calls ``merge_environment_settings`` for every request, and with
    ``trust_env`` that scans ``os.environ`` twice (``getproxies`` and the ``NO_PROXY`` check):
    0.3–0.6 ms of CPU before each upstream call on this machine, on the path to a stream's first
    byte. A container's environment does not change, and a provider calls one URL: the result is
    memoised on the session, per URL and per-request settings, exactly as ``requests`` computed it.
    """

    MAX_REMEMBERED = 256  # distinct (URL, settings): one or two per deployment

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], Any] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        try:
            key = (url, tuple(sorted((proxies or {}).items())), stream, verify, cert)
            hash(key)
        except TypeError:  # an unhashable setting: nothing to remember
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged = self._environment.get(key)
        if merged is None:
            if len(self._environment) >= self.MAX_REMEMBERED:
                self._environment.clear()
            merged = self._environment[key] = super().merge_environment_settings(url, proxies, stream, verify, cert)
        return {**merged, "proxies": dict(merged["proxies"])}  # the caller's own copy


class ProxiedSession(UpstreamSession):
    """A session that sends every request through one proxy."""

    def __init__(self, proxy: str) -> None:
        super().__init__()
        watched(self)
        self.proxy = proxy

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["proxies"] = {"http": self.proxy, "https": self.proxy, **(kwargs.get("proxies") or {})}
        return super().request(method, url, *args, **kwargs)


def session_for(proxy: str | None, shared: requests.Session) -> requests.Session:
    return ProxiedSession(proxy) if proxy else shared
