"""Fallback along an alias's deployments, per-container cooldowns, one retry policy for the chain."""

from __future__ import annotations

import pytest

from llm_gateway.deadline import Deadline
from llm_gateway.errors import InvalidRequest, UpstreamRejected, UpstreamUnavailable
from llm_gateway.providers.base import UpstreamHTTPError
from llm_gateway.upstream.aliases import Deployment, ModelAlias
from llm_gateway.upstream.retry import CallStats, RetryBudget, RetryPolicy
from llm_gateway.upstream.router import Cooldowns, Router
from tests.fakes import ScriptedProvider


def err(status: int, retry_after: float | None = None) -> UpstreamHTTPError:
    return UpstreamHTTPError(status, f"HTTP {status}", retry_after=retry_after)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(
    scripts: dict[str, list],
    *,
    max_attempts: int = 3,
    failures: int = 2,
    seconds: float = 30.0,
    budget: RetryBudget | None = None,
):
    providers = {name: ScriptedProvider(name, script) for name, script in scripts.items()}
    sleeps: list[float] = []
    policy = RetryPolicy(
        max_attempts=max_attempts,
        backoff_base=0.1,
        backoff_max=1.0,
        budget=budget or RetryBudget(1.0, 100.0),
        sleep=sleeps.append,
    )
    clock = Clock()
    router = Router(
        providers, policy, connect_timeout=1, read_timeout=5, cooldowns=Cooldowns(failures, seconds, clock=clock)
    )
    alias = ModelAlias(
        name="default", deployments=[Deployment(name=name, model="m", base_url="http://x.test/v1") for name in scripts]
    )
    return router, alias, providers, sleeps, clock


def call(router, alias, stats=None, seconds: float = 30.0):
    return router.complete(alias, {"model": "default", "messages": []}, Deadline.after(seconds), stats or CallStats())


def test_a_retryable_failure_moves_to_the_next_deployment_at_once():
    router, alias, providers, sleeps, _ = setup({"primary": [err(503, retry_after=20)], "secondary": ["ok"]})
    stats = CallStats()
    routed = call(router, alias, stats)
    assert routed.deployment.name == "secondary"
    assert routed.reply.body["choices"][0]["message"]["content"] == "ok"
    assert (stats.attempts, stats.fallbacks, sum(sleeps)) == (2, 1, 0)  # no backoff (nor the 20 s Retry-After)


def test_a_non_retryable_failure_does_not_fall_back():
    router, alias, providers, _, _ = setup({"primary": [err(400)], "secondary": ["ok"]})
    with pytest.raises(UpstreamRejected):
        call(router, alias)
    assert providers["secondary"].bodies == []


def test_a_request_the_provider_refuses_is_a_400_without_fallback():
    router, alias, providers, _, _ = setup({"primary": [InvalidRequest("nope", param="n")], "secondary": ["ok"]})
    with pytest.raises(InvalidRequest):
        call(router, alias)
    assert providers["secondary"].bodies == []


def test_after_the_cooldown_trips_the_primary_is_skipped_until_its_window_ends():
    router, alias, providers, _, clock = setup(
        {"primary": [err(503), err(503), "back"], "secondary": ["s1", "s2", "s3", "s4"]}, failures=2, seconds=30
    )
    call(router, alias)
    call(router, alias)
    assert len(providers["primary"].bodies) == 2  # two consecutive failures: cooled down now
    stats = CallStats()
    assert call(router, alias, stats).deployment.name == "secondary"
    clock.now += 29
    assert call(router, alias).deployment.name == "secondary"
    assert len(providers["primary"].bodies) == 2  # not called within its window
    assert stats.cooled_down == 1 and stats.fallbacks == 0
    clock.now += 2
    assert call(router, alias).deployment.name == "primary"  # the window is over: tried again, and it answers
    assert len(providers["primary"].bodies) == 3


def test_a_success_resets_the_failure_streak():
    router, alias, providers, _, _ = setup(
        {"primary": [err(503), "ok", err(503), "ok"], "secondary": ["s", "s"]}, failures=2
    )
    assert [call(router, alias).deployment.name for _ in range(4)] == ["secondary", "primary", "secondary", "primary"]


def test_when_every_deployment_is_cooling_down_they_are_tried_anyway():
    router, alias, providers, _, _ = setup({"only": [err(503), err(503), "ok"]}, failures=2, max_attempts=1)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            call(router, alias)
    assert router.cooldowns.cooling("only")
    assert call(router, alias).deployment.name == "only"


def test_every_deployment_failing_is_one_clean_error_within_the_attempt_limit():
    scripts = {name: [err(503)] * 5 for name in ("a", "b", "c")}
    router, alias, providers, sleeps, _ = setup(scripts, max_attempts=4, failures=10)
    stats = CallStats()
    with pytest.raises(UpstreamUnavailable):
        call(router, alias, stats)
    calls = {name: len(p.bodies) for name, p in providers.items()}
    assert calls == {"a": 2, "b": 1, "c": 1}  # a, b, c, then a again after a backoff
    assert stats.attempts == 4 and stats.stopped_by == "attempts"
    assert sleeps[:2] == [0.0, 0.0] and sleeps[2] > 0  # only the wrap-around back to "a" waited


def test_the_retry_budget_bounds_fallbacks_too():
    budget = RetryBudget(ratio=0.0, min_per_second=0.0)
    while budget.try_spend():
        pass
    router, alias, providers, _, _ = setup({"a": [err(503)], "b": ["ok"]}, budget=budget)
    stats = CallStats()
    with pytest.raises(UpstreamUnavailable):
        call(router, alias, stats)
    assert stats.stopped_by == "budget" and providers["b"].bodies == []


def test_the_deadline_bounds_the_chain():
    router, alias, providers, sleeps, _ = setup(
        {"a": [err(503, retry_after=5)] * 3, "b": [err(503, retry_after=5)] * 3}, max_attempts=10
    )
    stats = CallStats()
    with pytest.raises(UpstreamUnavailable):
        call(router, alias, stats, seconds=2.0)
    assert stats.attempts == 2 and stats.stopped_by == "deadline"  # a, b; a again would sleep past the deadline
    assert sum(sleeps) == 0


def test_an_upstream_error_event_mid_stream_does_not_echo_the_prompt_to_the_client():
    """Like a failed non-stream call, the error that ends a stream passes the upstream's reason
    on but not an exact quote of the request's own message texts."""
    from llm_gateway.errors import UpstreamError
    from llm_gateway.providers.base import UpstreamStreamError

    prompt = "canary prompt text that must not come back"

    class StreamingProvider:
        name = "primary"

        def stream(self, body, timeout):
            yield {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
            raise UpstreamStreamError("error", f"content filter triggered by '{prompt}'")

    router, alias, _, _, _ = setup({"primary": []})
    router.providers["primary"] = StreamingProvider()
    body = {"model": "default", "messages": [{"role": "user", "content": prompt}]}
    stream = router.stream(alias, body, Deadline.after(30), CallStats())
    assert next(stream)["choices"][0]["delta"]["content"] == "Hel"
    with pytest.raises(UpstreamError) as failure:
        next(stream)
    assert failure.value.code == "upstream_stream_error"
    assert "content filter triggered" in failure.value.message
    assert prompt not in failure.value.message
