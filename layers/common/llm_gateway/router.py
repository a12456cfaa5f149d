"""Send a request to an alias's deployments under one retry policy and one deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

from .deadline import Deadline
from .errors import (
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .providers.base import Provider, UpstreamReply
from .retry import CallStats, DeadlineExceeded, RetryPolicy, UpstreamHTTPError, should_retry
from .routing import Deployment, ModelAlias


@dataclass(frozen=True)
class RoutedReply:
    reply: UpstreamReply
    deployment: Deployment


def upstream_failure(exc: BaseException, stats: CallStats) -> GatewayError:
    """The client-facing error for an upstream failure that outlasted the retries."""
    if isinstance(exc, DeadlineExceeded):
        return UpstreamTimeout("The request's deadline passed before the upstream answered.")
    if isinstance(exc, UpstreamHTTPError):
        if exc.status == 429:
            if not should_retry(exc):
                return RateLimited(f"Upstream quota exhausted: {exc.message}", code=exc.code or "insufficient_quota")
            return RateLimited("The upstream provider is rate limiting requests; retry later.",
                               retry_after=exc.retry_after if exc.retry_after is not None else 1.0)
        if exc.status in (401, 403):
            return UpstreamError("The upstream provider rejected the gateway's credentials.",
                                 code="upstream_auth_failed")
        if exc.status in (503, 529) or stats.stopped_by in ("deadline", "budget"):
            return UpstreamUnavailable("The upstream provider is unavailable; retry later.",
                                       retry_after=exc.retry_after)
        if exc.status == 408 or exc.status == 504:
            return UpstreamTimeout("The upstream provider timed out.")
        if exc.status >= 500 or exc.status == 409:
            return UpstreamError(f"The upstream provider failed with HTTP {exc.status}.")
        return UpstreamRejected(f"Upstream rejected the request: {exc.message}", code=exc.code)
    if isinstance(exc, requests.Timeout):
        return UpstreamTimeout("The upstream provider did not answer in time.")
    if isinstance(exc, requests.ConnectionError):
        return UpstreamUnavailable("Could not connect to the upstream provider.")
    raise exc


class Router:
    def __init__(self, providers: dict[str, Provider], policy: RetryPolicy, *,
                 connect_timeout: float, read_timeout: float) -> None:
        self.providers = providers
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    def _timeout(self, deployment: Deployment, deadline: Deadline) -> tuple[float, float]:
        connect = deadline.cap(deployment.connect_timeout or self.connect_timeout)
        read = deadline.cap(deployment.read_timeout or self.read_timeout)
        return connect, read

    def complete(self, alias: ModelAlias, body: dict[str, Any], deadline: Deadline, stats: CallStats) -> RoutedReply:
        order = list(alias.deployments)
        position = {"i": 0}

        def attempt() -> RoutedReply:
            deployment = order[position["i"] % len(order)]
            started = time.perf_counter()
            try:
                reply = self.providers[deployment.name].complete(body, self._timeout(deployment, deadline))
            except Exception as exc:
                if should_retry(exc):
                    position["i"] += 1  # the next attempt goes to the next deployment, if any
                raise
            finally:
                stats.upstream_seconds += time.perf_counter() - started
            return RoutedReply(reply, deployment)

        try:
            return self.policy.run(attempt, deadline, stats)
        except GatewayError:
            raise
        except Exception as exc:
            raise upstream_failure(exc, stats) from exc
