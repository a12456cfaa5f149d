"""The retry policy alone: what is retried, how long it waits, when it stops (no sockets)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from llm_gateway.deadline import Deadline
from llm_gateway.providers.base import (
    DeadlineExceeded,
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamTimeout,
    parse_retry_after,
)
from llm_gateway.providers.http import post
from llm_gateway.upstream.retry import MIN_ATTEMPT_SECONDS, CallStats, RetryBudget, RetryPolicy, should_retry


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (529, True),
        (599, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (413, False),
        (422, False),
    ],
)
def test_should_retry_by_status(status, retried):
    assert should_retry(UpstreamHTTPError(status, "x")) is retried


@pytest.mark.parametrize("code", ["insufficient_quota", "billing_hard_limit_reached"])
def test_a_spend_limit_429_is_not_retried(code):
    assert should_retry(UpstreamHTTPError(429, "quota", code=code)) is False
    assert should_retry(UpstreamHTTPError(429, "slow down", code="rate_limit_exceeded")) is True


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (UpstreamConnectionError("refused"), True),
        (UpstreamTimeout("slow"), True),
        (ValueError("bug"), False),
        (KeyError("x"), False),
        (requests.ConnectionError("a transport exception the provider did not map"), False),
    ],
)
def test_should_retry_transport_errors_only(exc, retried):
    assert should_retry(exc) is retried


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (requests.ConnectionError("refused"), UpstreamConnectionError),
        (requests.ConnectTimeout("slow"), UpstreamTimeout),  # both a ConnectionError and a Timeout
        (requests.ReadTimeout("slow"), UpstreamTimeout),
    ],
)
def test_http_providers_map_requests_errors_to_the_provider_protocols(raised, expected):
    class Session:
        def post(self, url, **kwargs):
            raise raised

    with pytest.raises(expected) as info:
        post(Session(), "https://upstream.example/v1/chat/completions?key=sk-secret")  # type: ignore[arg-type]
    assert type(info.value) is expected and "sk-secret" not in str(info.value)
    assert should_retry(info.value)


def headers(**values: str) -> CaseInsensitiveDict:
    return CaseInsensitiveDict({k.replace("_", "-"): v for k, v in values.items()})


def test_parse_retry_after_seconds_ms_and_http_date():
    assert parse_retry_after(headers(Retry_After="1")) == 1.0
    assert parse_retry_after(headers(Retry_After="2.5")) == 2.5
    assert parse_retry_after(headers(retry_after_ms="250")) == 0.25
    assert parse_retry_after(headers(retry_after_ms="250", Retry_After="9")) == 0.25  # ms preferred
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 27 <= parse_retry_after(headers(Retry_After=future)) <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(headers(Retry_After=past)) == 0.0
    assert parse_retry_after(headers(Retry_After="-5")) == 0.0
    assert parse_retry_after(headers(Retry_After="soon")) is None
    assert parse_retry_after(headers(retry_after_ms="x", Retry_After="3")) == 3.0  # bad ms: fall back
    assert parse_retry_after(headers()) is None


def test_full_jitter_backoff_is_uniform_within_the_capped_exponential_bound():
    policy = RetryPolicy(backoff_base=0.5, backoff_max=8.0, rng=random.Random(7))
    for n in range(1, 9):
        bound = min(8.0, 0.5 * 2 ** (n - 1))
        samples = [policy.backoff(n) for _ in range(2000)]
        assert all(0.0 <= s <= bound for s in samples)
        # full jitter, not "equal jitter" or a fixed delay: the whole range is used
        assert min(samples) < 0.05 * bound and max(samples) > 0.95 * bound
        assert 0.4 * bound < sum(samples) / len(samples) < 0.6 * bound


class Script:
    """An attempt function failing with the given exceptions, then returning 'ok'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def policy(**kw) -> tuple[RetryPolicy, list[float]]:
    sleeps: list[float] = []
    kw.setdefault("budget", RetryBudget(1.0, 100.0))
    return RetryPolicy(sleep=sleeps.append, rng=random.Random(1), **kw), sleeps


def test_retries_until_success_counting_attempts_and_retries():
    p, sleeps = policy(max_attempts=3, backoff_base=0.1)
    stats = CallStats()
    attempt = Script(UpstreamHTTPError(503, "x"), UpstreamConnectionError("y"))
    assert p.run(attempt, Deadline.after(10), stats) == "ok"
    assert (attempt.calls, stats.attempts, stats.retries, len(sleeps)) == (3, 3, 2, 2)
    assert stats.errors == {"server_error": 1, "connection": 1}


def test_retry_after_is_the_wait():
    p, sleeps = policy()
    p.run(Script(UpstreamHTTPError(429, "x", retry_after=1.5)), Deadline.after(10), CallStats())
    assert sleeps == [1.5]


def test_attempts_stop_at_max_attempts_and_the_last_error_is_reraised():
    p, sleeps = policy(max_attempts=4)
    stats = CallStats()
    last = UpstreamHTTPError(500, "last")
    attempt = Script(*[UpstreamHTTPError(500, "x")] * 3, last, UpstreamHTTPError(500, "never"))
    with pytest.raises(UpstreamHTTPError) as info:
        p.run(attempt, Deadline.after(60), stats)
    assert info.value is last
    assert attempt.calls == 4 and len(sleeps) == 3 and stats.stopped_by == "attempts"


def test_non_retryable_errors_are_raised_at_once():
    p, sleeps = policy()
    attempt = Script(UpstreamHTTPError(400, "bad"))
    with pytest.raises(UpstreamHTTPError):
        p.run(attempt, Deadline.after(60), CallStats())
    assert attempt.calls == 1 and sleeps == []


def test_a_wait_past_the_deadline_stops_at_once_without_sleeping():
    p, sleeps = policy(max_attempts=5)
    stats = CallStats()
    attempt = Script(UpstreamHTTPError(503, "x", retry_after=30))
    with pytest.raises(UpstreamHTTPError):
        p.run(attempt, Deadline.after(5), stats)
    assert attempt.calls == 1 and sleeps == [] and stats.stopped_by == "deadline"


def test_the_next_attempt_needs_a_minimum_of_time_left():
    p, sleeps = policy(max_attempts=5)
    wait = 1.0
    deadline = Deadline.after(wait + MIN_ATTEMPT_SECONDS / 2)  # the wait fits, an attempt after it does not
    attempt = Script(UpstreamHTTPError(503, "x", retry_after=wait))
    with pytest.raises(UpstreamHTTPError):
        p.run(attempt, deadline, CallStats())
    assert sleeps == []
    with pytest.raises(DeadlineExceeded):  # an expired deadline makes no attempt at all
        p.run(Script(), Deadline(time.monotonic() - 1), CallStats())


def test_an_empty_budget_stops_retries():
    p, sleeps = policy(max_attempts=5, budget=RetryBudget(ratio=0.0, min_per_second=0.0))
    for _ in range(10):  # the initial balance: 10 retries
        assert p.budget.try_spend()
    stats = CallStats()
    attempt = Script(*[UpstreamHTTPError(503, "x")] * 5)
    with pytest.raises(UpstreamHTTPError):
        p.run(attempt, Deadline.after(60), stats)
    assert attempt.calls == 1 and sleeps == [] and stats.stopped_by == "budget"


def test_the_budget_refills_with_requests_and_time_up_to_its_capacity():
    now = [0.0]
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, clock=lambda: now[0])
    assert budget.capacity == 10.0
    spent = 0
    while budget.try_spend():
        spent += 1
    assert spent == 10
    budget.on_request()
    budget.on_request()  # 2 requests x 0.5 = one retry's worth
    assert budget.try_spend() and not budget.try_spend()
    now[0] += 3.0  # 3 s x 1 per second
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    now[0] += 1_000.0
    assert sum(budget.try_spend() for _ in range(50)) == 10  # never more than the capacity


def test_a_retry_after_beyond_the_cap_fails_fast_and_is_passed_on():
    """A job has ~110 s: without the cap one invocation slept out an upstream's Retry-After: 100."""
    from llm_gateway.errors import RateLimited, UpstreamUnavailable
    from llm_gateway.upstream.router import upstream_failure

    p, sleeps = policy(max_attempts=5, max_retry_after=60.0)
    for status, expected in ((429, RateLimited), (500, UpstreamUnavailable)):
        stats = CallStats()
        attempt = Script(UpstreamHTTPError(status, "x", retry_after=100.0))
        with pytest.raises(UpstreamHTTPError) as info:
            p.run(attempt, Deadline.after(200), stats)
        assert attempt.calls == 1 and sleeps == [] and stats.stopped_by == "retry_after"
        failure = upstream_failure(info.value, stats)
        assert type(failure) is expected and failure.retry_after == 100.0
    # at the cap it is waited out
    p.run(Script(UpstreamHTTPError(429, "x", retry_after=60.0)), Deadline.after(200), CallStats())
    assert sleeps == [60.0]


def test_the_defaults_of_settings_and_policy_are_the_one_constants_block():
    from llm_gateway import constants
    from llm_gateway.settings import Settings

    s, p, b = Settings(), RetryPolicy(), RetryBudget()
    assert (s.max_attempts, p.max_attempts) == (constants.MAX_ATTEMPTS,) * 2
    assert (s.backoff_base_seconds, p.backoff_base) == (constants.BACKOFF_BASE_SECONDS,) * 2
    assert (s.backoff_max_seconds, p.backoff_max) == (constants.BACKOFF_MAX_SECONDS,) * 2
    assert (s.max_retry_after_seconds, p.max_retry_after) == (constants.MAX_RETRY_AFTER_SECONDS,) * 2
    assert (s.retry_budget_ratio, b.ratio) == (constants.RETRY_BUDGET_RATIO,) * 2
    assert (s.retry_budget_min_per_second, b.min_per_second) == (constants.RETRY_BUDGET_MIN_PER_SECOND,) * 2


def test_each_retry_logs_one_line_with_attempt_wait_and_error_class_never_a_body():
    class Log:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict]] = []

        def info(self, message: str, *, extra: dict) -> None:
            self.lines.append((message, extra))

    log = Log()
    p, sleeps = policy(max_attempts=3, log=log)
    secret = "the prompt text quoted back by the upstream"
    attempt = Script(UpstreamHTTPError(503, secret, retry_after=0.5), UpstreamConnectionError(secret))
    assert p.run(attempt, Deadline.after(10), CallStats()) == "ok"
    assert [m for m, _ in log.lines] == ["upstream retry", "upstream retry"]
    assert log.lines[0][1] == {"attempt": 1, "wait_seconds": 0.5, "error_class": "server_error"}
    assert log.lines[1][1]["attempt"] == 2 and log.lines[1][1]["error_class"] == "connection"
    assert log.lines[1][1]["wait_seconds"] == round(sleeps[1], 3)
    assert secret not in repr(log.lines)


def test_cancelled_is_a_checkpoint_before_every_attempt_and_stops_retries_without_sleeping():
    from llm_gateway.errors import Cancelled
    from llm_gateway.providers.base import UpstreamHTTPError

    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=5, sleep=sleeps.append, budget=RetryBudget(1.0, 100.0))
    cancelled = {"now": False}
    calls: list[int] = []

    def attempt():
        calls.append(1)
        cancelled["now"] = True  # the job is cancelled while this attempt runs
        raise UpstreamHTTPError(503, "overloaded")

    stats = CallStats()
    with pytest.raises(UpstreamHTTPError):
        policy.run(attempt, Deadline.after(30), stats, cancelled=lambda: cancelled["now"])
    assert calls == [1] and sleeps == [] and stats.stopped_by == "cancelled"

    never: list[int] = []
    with pytest.raises(Cancelled):
        policy.run(lambda: never.append(1), Deadline.after(30), CallStats(), cancelled=lambda: True)
    assert never == []


def test_with_attempts_keeps_everything_else_of_the_policy():
    budget = RetryBudget(0.5, 3.0)
    policy = RetryPolicy(max_attempts=3, backoff_base=0.1, backoff_max=2.0, max_retry_after=9.0, budget=budget)
    patient = policy.with_attempts(6)
    assert (patient.max_attempts, policy.max_attempts) == (6, 3)
    assert patient.budget is budget  # one container-wide budget for requests and jobs
    assert (patient.backoff_base, patient.backoff_max, patient.max_retry_after) == (0.1, 2.0, 9.0)
