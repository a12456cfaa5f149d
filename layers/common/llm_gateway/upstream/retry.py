"""The one retry layer for upstream calls: named, bounded, testable.

* What is retried (:func:`should_retry`): connection errors, timeouts, 408, 409, 429,
  5xx and Anthropic's 529 — never 400/401/403/404/422, nor a 429 that means a spend
  limit or quota (OpenAI ``insufficient_quota`` and its spend-limit codes, Anthropic
  ``enforced_spend_limit_reached``, Bedrock ``ServiceQuotaExceededException``).
* How long to wait when the next attempt goes to *another* deployment (fallback): not
  at all — the wait protects the deployment that failed, not the next one.
* How long to wait (:meth:`RetryPolicy.wait`): the upstream's ``retry-after-ms`` /
  ``Retry-After`` when given, else full-jitter exponential backoff.
* When to stop (:meth:`RetryPolicy.stop`): after ``max_attempts``; when the next sleep
  plus a minimal attempt would pass the request's deadline (then we fail fast, with no
  sleep); or when the container's retry budget is spent, so an outage cannot multiply
  traffic.

tenacity runs the loop. The retry budget is written here because tenacity has none:
a token bucket credited a fraction of a token per request plus a small floor per
second, debited one token per retry (the scheme of gRPC's retry throttling and
Finagle's RetryBudget).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception

from llm_gateway.constants import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER_SECONDS,
    MIN_ATTEMPT_SECONDS,
    RETRY_BUDGET_MIN_PER_SECOND,
    RETRY_BUDGET_RATIO,
)
from llm_gateway.deadline import Deadline
from llm_gateway.errors import Cancelled

# The transport vocabulary lives with the provider protocol (providers/base.py); re-exported here.
from llm_gateway.providers.base import DeadlineExceeded as DeadlineExceeded
from llm_gateway.providers.base import UpstreamConnectionError as UpstreamConnectionError
from llm_gateway.providers.base import UpstreamHTTPError as UpstreamHTTPError
from llm_gateway.providers.base import UpstreamStreamError as UpstreamStreamError
from llm_gateway.providers.base import UpstreamTimeout as UpstreamTimeout
from llm_gateway.providers.base import parse_retry_after as parse_retry_after
from llm_gateway.reports import CallStats as CallStats

T = TypeVar("T")
_log = logging.getLogger("llm-gateway")  # the Powertools logger's name: the composition root passes that logger

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
SPEND_LIMIT_CODES = frozenset(
    {
        # OpenAI (https://help.openai.com/en/articles/5955604-troubleshooting-api-rate-limits-and-429-errors)
        "insufficient_quota",
        "billing_hard_limit_reached",
        "credit_balance_exhausted",
        "organization_usage_limit_exceeded",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        # Anthropic: 429 rate_limit_error with error.details.error_code (https://docs.anthropic.com/en/api/errors)
        "enforced_spend_limit_reached",
        # Bedrock ServiceQuotaExceededException (mapped to 429 by providers/bedrock.py)
        "ServiceQuotaExceededException",
        "spend_limit_reached",
    }
)


def should_retry(exc: BaseException) -> bool:
    if isinstance(exc, UpstreamHTTPError):
        if exc.status == 429 and exc.code in SPEND_LIMIT_CODES:
            return False
        return exc.status in RETRYABLE_STATUSES or exc.status >= 500
    return isinstance(exc, UpstreamConnectionError)  # UpstreamTimeout included


class RetryBudget:
    """Container-wide token bucket bounding retries to a fraction of requests."""

    def __init__(
        self,
        ratio: float = RETRY_BUDGET_RATIO,
        min_per_second: float = RETRY_BUDGET_MIN_PER_SECOND,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.capacity = max(10.0, min_per_second * 10)
        self._clock = clock
        self._balance = self.capacity
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._balance = min(self.capacity, self._balance + (now - self._last) * self.min_per_second)
        self._last = now

    def on_request(self) -> None:
        with self._lock:
            self._refill()
            self._balance = min(self.capacity, self._balance + self.ratio)

    def try_spend(self) -> bool:
        with self._lock:
            self._refill()
            if self._balance >= 1.0:
                self._balance -= 1.0
                return True
            return False


def error_class(exc: BaseException) -> str:
    """A bounded label for metrics."""
    if isinstance(exc, UpstreamHTTPError):
        if exc.status == 429:
            return "rate_limited"
        if exc.status in (401, 403):
            return "auth"
        if exc.status >= 500:
            return "server_error"
        return "client_error"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamConnectionError):
        return "connection"
    return "other"


class RetryPolicy:
    def __init__(
        self,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        budget: RetryBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        log: logging.Logger | logging.LoggerAdapter | Any = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.max_retry_after = max_retry_after
        self.log = log if log is not None else _log
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.budget = budget or RetryBudget()
        self.sleep = sleep
        self.rng = rng or random.Random()

    def with_attempts(self, max_attempts: int) -> RetryPolicy:
        """This policy (backoff, Retry-After cap, the same budget, sleep, log) with another attempt limit."""
        other = copy.copy(self)
        other.max_attempts = max_attempts
        return other

    def backoff(self, retry_number: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(n-1))]."""
        return self.rng.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (retry_number - 1)))

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return retry_after
        return self.backoff(state.attempt_number)

    def run(
        self,
        attempt: Callable[[], T],
        deadline: Deadline,
        stats: CallStats,
        *,
        switching: Callable[[], bool] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> T:
        """Call ``attempt`` until it succeeds, may not be retried, or a bound is reached.

        ``switching()`` says whether the next attempt goes to another deployment (a
        fallback): then it starts at once, with no backoff. The last failure is
        re-raised as it was; ``stats.stopped_by`` says which bound stopped a retryable one.
        ``cancelled()`` is a checkpoint before every attempt (``Cancelled`` is raised, no attempt
        made) and stops the retries of a failure (no sleep).
        """
        self.budget.on_request()

        def wait(state: RetryCallState) -> float:
            if switching is not None and switching():
                return 0.0
            return self.wait(state)

        def stop(state: RetryCallState) -> bool:
            if cancelled is not None and cancelled():
                stats.stopped_by = "cancelled"
                return True
            if state.attempt_number >= self.max_attempts:
                stats.stopped_by = "attempts"
                return True
            if state.upcoming_sleep > self.max_retry_after:
                # The upstream asks for a longer wait than we sit out: fail now, its Retry-After passed on.
                stats.stopped_by = "retry_after"
                return True
            if state.upcoming_sleep + MIN_ATTEMPT_SECONDS > deadline.remaining():
                stats.stopped_by = "deadline"
                return True
            if not self.budget.try_spend():
                stats.stopped_by = "budget"
                return True
            return False

        def counted() -> T:
            if cancelled is not None and cancelled():
                raise Cancelled("The request was cancelled.")
            if deadline.remaining() < MIN_ATTEMPT_SECONDS:
                raise DeadlineExceeded()
            stats.attempts += 1
            try:
                return attempt()
            except Exception as exc:
                stats.error(error_class(exc))
                raise

        def before_sleep(state: RetryCallState) -> None:
            stats.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            # One line per retry: which attempt failed, how long we wait, the error's class. Never a body.
            self.log.info(
                "upstream retry",
                extra={
                    "attempt": state.attempt_number,
                    "wait_seconds": round(state.upcoming_sleep, 3),
                    "error_class": error_class(exc) if exc else "other",
                },
            )

        retrying = Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(should_retry),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(counted)
