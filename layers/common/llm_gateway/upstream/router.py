"""Send a request to an alias's deployments under one retry policy and one deadline.

* **Fallback.** A retryable failure of one deployment moves the request to the next
  deployment of the alias, at once (no backoff: the backoff protects the deployment
  that failed). Once every deployment was tried, the chain starts over, with backoff.
* **Budget.** One :meth:`RetryPolicy.run` per request covers the whole chain: the
  attempt limit, the retry budget and the deadline bound every attempt to every
  deployment together. Providers make exactly one attempt per call.
* **Cooldown.** A deployment that fails retryably ``cooldown_failures`` times in a row
  is skipped for ``cooldown_seconds`` (per container), so requests do not pay its
  timeout. When every deployment of an alias is cooling down they are tried anyway,
  the soonest back first: a request is never refused without an attempt, and the
  retry budget still bounds the traffic an outage can cause.

:class:`Chain` is the per-request walk along the deployments; ``complete`` and (on the
streaming side) ``stream`` both use it, so both see the same order and cooldowns.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from llm_gateway.deadline import Deadline, bounded
from llm_gateway.errors import (
    Cancelled,
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llm_gateway.providers.base import (
    DeadlineExceeded,
    Provider,
    Timeout,
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamReply,
    UpstreamReplyTooLarge,
    UpstreamStreamError,
)
from llm_gateway.providers.base import UpstreamTimeout as TransportTimeout
from llm_gateway.redaction import prompt_lines, without_echoes
from llm_gateway.upstream.aliases import Deployment, ModelAlias
from llm_gateway.upstream.retry import CallStats, RetryPolicy, should_retry

T = TypeVar("T")


@dataclass(frozen=True)
class RoutedReply:
    reply: UpstreamReply
    deployment: Deployment


def upstream_failure(exc: BaseException, stats: CallStats) -> GatewayError:
    """The client-facing error for an upstream failure that outlasted the retries."""
    if isinstance(exc, DeadlineExceeded):
        return UpstreamTimeout("The request's deadline passed before the upstream answered.")
    if isinstance(exc, UpstreamReplyTooLarge):
        return UpstreamError(exc.message, code=exc.code)
    if isinstance(exc, UpstreamHTTPError):
        if exc.status == 429:
            if not should_retry(exc):
                return RateLimited(
                    f"Upstream quota exhausted: {exc.message}", code=exc.code or "insufficient_quota", permanent=True
                )
            return RateLimited(
                "The upstream provider is rate limiting requests; retry later.",
                retry_after=exc.retry_after if exc.retry_after is not None else 1.0,
            )
        if exc.status in (401, 403):
            return UpstreamError(
                "The upstream provider rejected the gateway's credentials.", code="upstream_auth_failed"
            )
        if exc.status in (503, 529) or stats.stopped_by in ("deadline", "budget", "retry_after"):
            return UpstreamUnavailable(
                "The upstream provider is unavailable; retry later.", retry_after=exc.retry_after
            )
        if exc.status == 408 or exc.status == 504:
            return UpstreamTimeout("The upstream provider timed out.")
        if exc.status >= 500 or exc.status == 409:
            return UpstreamError(f"The upstream provider failed with HTTP {exc.status}.")
        return UpstreamRejected(f"Upstream rejected the request: {exc.message}", code=exc.code)
    if isinstance(exc, TransportTimeout):
        return UpstreamTimeout("The upstream provider did not answer in time.")
    if isinstance(exc, UpstreamConnectionError):
        return UpstreamUnavailable("Could not connect to the upstream provider.")
    raise exc


class Cooldowns:
    """Per-container health of deployments: consecutive retryable failures -> a cooldown."""

    def __init__(self, failures: int = 3, seconds: float = 30.0, *, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.seconds = seconds
        self._clock = clock
        self._streak: dict[str, int] = {}
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def cooling(self, name: str) -> bool:
        until = self._until.get(name)
        return until is not None and self._clock() < until

    def failed(self, name: str) -> bool:
        """Count a retryable failure; True when it starts a cooldown."""
        with self._lock:
            streak = self._streak.get(name, 0) + 1
            self._streak[name] = streak
            if streak >= self.failures and self.seconds > 0:
                self._until[name] = self._clock() + self.seconds
                self._streak[name] = 0
                return True
            return False

    def succeeded(self, name: str) -> None:
        if self._streak.get(name) or name in self._until:
            with self._lock:
                self._streak.pop(name, None)
                self._until.pop(name, None)

    def order(self, deployments: list[Deployment]) -> tuple[list[Deployment], int]:
        """The deployments to try, without those cooling down; and how many were skipped."""
        ready = [d for d in deployments if not self.cooling(d.name)]
        if ready:
            return ready, len(deployments) - len(ready)
        return sorted(deployments, key=lambda d: self._until.get(d.name, 0.0)), 0


class Chain:
    """One request's walk along its alias's deployments."""

    def __init__(self, order: list[Deployment], cooldowns: Cooldowns, stats: CallStats) -> None:
        self.order = order
        self.cooldowns = cooldowns
        self.stats = stats
        self.position = 0

    def current(self) -> Deployment:
        return self.order[self.position % len(self.order)]

    def failed(self, exc: BaseException) -> None:
        """Record a failure of the current deployment; a retryable one moves the chain on."""
        if should_retry(exc):
            self.cooldowns.failed(self.current().name)
            self.position += 1
            if len(self.order) > 1:
                self.stats.fallbacks += 1

    def succeeded(self) -> None:
        self.cooldowns.succeeded(self.current().name)

    def switching(self) -> bool:
        """Whether the next attempt goes to a deployment this request has not tried yet."""
        return 1 <= self.position < len(self.order)


def stream_failure(exc: UpstreamStreamError, body: dict[str, Any] | None = None) -> GatewayError:
    """The error event that ends a stream the upstream broke after its first chunk (an upstream's
    error text without quotes of ``body``'s message texts, as for a failed non-stream call)."""
    if exc.reason == "stall":
        return UpstreamTimeout(
            "The upstream stopped sending mid-stream; the reply is incomplete.", code="upstream_stream_stalled"
        )
    if exc.reason == "deadline":  # as ChatStream says it when the deadline passes between two chunks
        return UpstreamTimeout(
            "The stream reached the request's time limit before the reply was complete.",
            code="stream_deadline_exceeded",
        )
    if exc.reason == "malformed":
        return UpstreamError(
            "The upstream sent a malformed chunk mid-stream; the reply is incomplete.", code="upstream_stream_malformed"
        )
    if exc.reason == "error":
        reason = without_echoes(str(exc), body) if body else str(exc)
        return UpstreamError(f"The upstream failed mid-stream: {reason}", code="upstream_stream_error")
    return UpstreamError("The upstream connection ended before the reply was complete.", code="upstream_stream_cut")


class RoutedStream:
    """A stream whose first chunk has arrived: yields it, then the rest, with no more retries.

    A failure after the first chunk raises the GatewayError of :func:`stream_failure`.
    """

    def __init__(
        self,
        first: dict[str, Any],
        rest: Iterator[dict[str, Any]],
        deployment: Deployment,
        stats: CallStats,
        body: dict[str, Any] | None = None,
    ) -> None:
        self.deployment = deployment
        self._body = body  # the request, so an error event does not quote its messages back
        self._first: dict[str, Any] | None = first
        self._rest = rest
        self._stats = stats

    def __iter__(self) -> RoutedStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        try:
            return next(self._rest)
        except UpstreamStreamError as exc:
            self._stats.error(f"stream_{exc.reason}")
            raise stream_failure(exc, self._body) from exc

    def close(self) -> None:
        close = getattr(self._rest, "close", None)
        if close is not None:
            close()

    def abort(self) -> None:
        """Thread-safe: wake a read blocked on the upstream (if the provider supports it)."""
        abort = getattr(self._rest, "abort", None)
        if abort is not None:
            abort()


class Router:
    def __init__(
        self,
        providers: dict[str, Provider],
        policy: RetryPolicy,
        *,
        connect_timeout: float,
        read_timeout: float,
        cooldowns: Cooldowns | None = None,
        rng: random.Random | None = None,
        prompt_log: Any = None,
    ) -> None:
        """``prompt_log``: a logger when ``LOG_PROMPTS`` is on — each request's prompt (the messages
        sent upstream, secrets redacted) is logged on it at DEBUG, once per request. None: never."""
        self.prompt_log = prompt_log
        self.providers = providers
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.cooldowns = cooldowns or Cooldowns()
        self.rng = rng or random.Random()

    def _timeout(self, deployment: Deployment, deadline: Deadline) -> Timeout:
        connect = deadline.cap(deployment.connect_timeout or self.connect_timeout)
        read = deadline.cap(deployment.read_timeout or self.read_timeout)
        return connect, read

    def chain(self, alias: ModelAlias, stats: CallStats) -> Chain:
        order, skipped = self.cooldowns.order(alias.order(self.rng))
        stats.cooled_down += skipped
        return Chain(order, self.cooldowns, stats)

    def complete(
        self,
        alias: ModelAlias,
        body: dict[str, Any],
        deadline: Deadline,
        stats: CallStats,
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> RoutedReply:
        """``cancelled()``: a checkpoint before every attempt (see :meth:`RetryPolicy.run`)."""

        def call(provider: Provider, deployment: Deployment, timeout: Timeout) -> RoutedReply:
            return RoutedReply(provider.complete(body, timeout), deployment)

        return self._run(alias, body, deadline, stats, call, cancelled=cancelled)

    def stream(self, alias: ModelAlias, body: dict[str, Any], deadline: Deadline, stats: CallStats) -> RoutedStream:
        """Open a stream and wait for its first chunk, under the same retries and fallback as
        :meth:`complete`. Once the first chunk is here nothing is retried: it is the caller's to send."""

        def call(provider: Provider, deployment: Deployment, timeout: Timeout) -> RoutedStream:
            upstream = provider.stream(body, timeout)
            try:
                try:
                    first = next(upstream)
                except StopIteration:
                    raise UpstreamHTTPError(502, "The upstream ended the stream before its first chunk.") from None
            except Exception:
                getattr(upstream, "close", lambda: None)()
                raise
            return RoutedStream(first, upstream, deployment, stats, body)

        return self._run(alias, body, deadline, stats, call)

    def _run(
        self,
        alias: ModelAlias,
        body: dict[str, Any],
        deadline: Deadline,
        stats: CallStats,
        call: Callable[[Provider, Deployment, Timeout], T],
        *,
        cancelled: Callable[[], bool] | None = None,
    ) -> T:
        """``call`` on the alias's deployments under the retry policy: each attempt is timed and
        feeds the chain (fallback, cooldowns); a failure that outlasts the retries becomes a GatewayError."""
        chain = self.chain(alias, stats)
        if self.prompt_log is not None:
            self.prompt_log.debug("prompt", extra={"model": alias.name, "messages": prompt_lines(body)})

        def attempt() -> T:
            deployment = chain.current()
            started = time.perf_counter()
            try:
                result = call(self.providers[deployment.name], deployment, self._timeout(deployment, deadline))
            except Exception as exc:
                chain.failed(exc)
                raise
            finally:
                stats.upstream_seconds += time.perf_counter() - started
            chain.succeeded()
            return result

        try:
            with bounded(deadline):  # providers read bodies and streams within it (providers/body.py, sse.py)
                return self.policy.run(attempt, deadline, stats, switching=chain.switching, cancelled=cancelled)
        except GatewayError:
            raise
        except Exception as exc:
            if cancelled is not None and cancelled():  # e.g. the call aborted by the cancel itself
                raise Cancelled("The request was cancelled.") from exc
            if isinstance(exc, UpstreamHTTPError):
                exc.message = without_echoes(exc.message, body)
            raise upstream_failure(exc, stats) from exc
