"""OpenAIProvider.stream and Router.stream against the fake upstream over real sockets."""

from __future__ import annotations

import threading

import pytest
import requests

from llm_gateway.deadline import Deadline
from llm_gateway.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from llm_gateway.providers import OpenAIProvider
from llm_gateway.providers.base import UpstreamHTTPError, UpstreamStreamError
from llm_gateway.upstream.aliases import Deployment, ModelAlias
from llm_gateway.upstream.retry import CallStats, RetryBudget, RetryPolicy
from llm_gateway.upstream.router import Router
from local.fake_upstream import FakeUpstream
from tests.fakes import FakeKeys

pytestmark = pytest.mark.integration

KEY = "sk-upstream-stream-test-9f2e"
BODY = {"model": "default", "messages": [{"role": "user", "content": "one two three four five"}]}
REPLY = "Echo: one two three four five (messages seen: 1)"


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream(api_key=KEY) as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()
    yield
    fake.reset()
    fake.wait_for_streams_closed(2)


def provider(fake, **kw) -> OpenAIProvider:
    deployment = Deployment(name="d1", model="fake-model", base_url=fake.url, key_ref="k", **kw)
    return OpenAIProvider(deployment, FakeKeys({"k": KEY}), requests.Session())


def router_for(fake, read_timeout: float = 5.0) -> tuple[Router, ModelAlias, list[float]]:
    p = provider(fake)
    sleeps: list[float] = []
    policy = RetryPolicy(
        max_attempts=3, backoff_base=0.01, backoff_max=0.02, budget=RetryBudget(1.0, 100.0), sleep=sleeps.append
    )
    router = Router({"d1": p}, policy, connect_timeout=2.0, read_timeout=read_timeout)
    return router, ModelAlias(name="default", deployments=[p.deployment]), sleeps


def text(chunks) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_stream_yields_chunks_and_ends_after_done(fake):
    p = provider(fake)
    stream = p.stream(BODY, (2.0, 5.0))
    assert fake.chat_calls == 0  # nothing is sent before the first next()
    chunks = list(stream)
    assert text(chunks) == REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    sent = fake.requests[0]
    assert sent["body"]["stream"] is True and sent["body"]["model"] == "fake-model"
    assert sent["headers"]["accept"] == "text/event-stream" and sent["auth_ok"] is True


def open_pooled_sockets(p: OpenAIProvider) -> list:
    manager = p.session.get_adapter(p.url).poolmanager
    pools = [manager.pools[key] for key in manager.pools.keys()]  # noqa: SIM118 - no __iter__ on this container
    return [c.sock for pool in pools for c in pool.pool.queue if c is not None and c.sock is not None]


def test_connection_is_reused_after_a_complete_stream(fake):
    p = provider(fake)
    assert text(p.stream(BODY, (2.0, 5.0))) == REPLY
    first = open_pooled_sockets(p)
    assert len(first) == 1  # drained after [DONE]: back in the pool, still open
    for _ in range(2):
        assert text(p.stream(BODY, (2.0, 5.0))) == REPLY
    assert open_pooled_sockets(p) == first  # the same socket served every stream


def test_http_error_is_raised_at_the_first_next(fake):
    fake.script({"status": 429, "retry_after": 2})
    stream = provider(fake).stream(BODY, (2.0, 5.0))
    with pytest.raises(UpstreamHTTPError) as err:
        next(stream)
    assert err.value.status == 429 and err.value.retry_after == 2.0


@pytest.mark.parametrize(
    ("fault", "reason", "seen"),
    [
        ({"cut_after": 2}, "cut", "Echo: one "),
        ({"malformed_at": 3}, "malformed", "Echo: one "),
    ],
)
def test_failure_after_first_chunk_raises_stream_error(fake, fault, reason, seen):
    fake.script(fault)
    chunks = []
    with pytest.raises(UpstreamStreamError) as err:
        for chunk in provider(fake).stream(BODY, (2.0, 5.0)):
            chunks.append(chunk)
    assert err.value.reason == reason
    assert text(chunks) == seen


def test_stall_between_chunks_hits_the_read_timeout(fake):
    fake.script({"block_after": 2})  # role chunk + 2 content chunks, then silence until released
    chunks = []
    with pytest.raises(UpstreamStreamError) as err:
        for chunk in provider(fake).stream(BODY, (2.0, 0.3)):
            chunks.append(chunk)
    assert err.value.reason == "stall"
    assert len(chunks) == 3


def test_close_mid_stream_closes_the_upstream_connection(fake):
    fake.script({"block_after": 2})
    stream = provider(fake).stream(BODY, (2.0, 5.0))
    for _ in range(3):
        next(stream)
    stream.close()
    fake.release()
    assert fake.wait_until(lambda f: f.disconnects == 1 and f.open_streams == 0)


def test_abort_from_another_thread_wakes_a_blocked_read(fake):
    fake.script({"block_after": 1})
    stream = provider(fake).stream(BODY, (2.0, 30.0))
    next(stream), next(stream)
    assert fake.wait_for_blocked(1)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(UpstreamStreamError, next, stream).value))
    reader.start()
    stream.abort()
    reader.join(5)  # far below the 30 s read timeout
    assert not reader.is_alive() and outcome[0].reason == "cut"
    stream.close()
    fake.release()
    assert fake.wait_until(lambda f: f.disconnects == 1 and f.open_streams == 0)


# ---- router: retries and fallback only before the first chunk ------------------------------------


def test_router_retries_before_the_first_chunk(fake):
    router, alias, sleeps = router_for(fake)
    fake.script({"status": 503}, {"status": 500}, {})
    stats = CallStats()
    routed = router.stream(alias, BODY, Deadline.after(30), stats)
    assert text(routed) == REPLY
    assert (stats.attempts, stats.retries, fake.chat_calls) == (3, 2, 3)
    assert len(sleeps) == 2


def test_router_retries_a_first_byte_timeout(fake):
    router, alias, _ = router_for(fake, read_timeout=0.3)
    fake.script({"delay_first_byte": 1.0}, {})
    stats = CallStats()
    assert text(router.stream(alias, BODY, Deadline.after(30), stats)) == REPLY
    assert stats.errors == {"timeout": 1} and stats.attempts == 2


def test_router_does_not_retry_a_client_error(fake):
    router, alias, _ = router_for(fake)
    fake.script({"status": 400})
    with pytest.raises(UpstreamRejected):
        router.stream(alias, BODY, Deadline.after(30), CallStats())
    assert fake.chat_calls == 1


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ({"cut_after": 2}, UpstreamError, "upstream_stream_cut"),
        ({"malformed_at": 2}, UpstreamError, "upstream_stream_malformed"),
    ],
)
def test_router_never_retries_after_the_first_chunk(fake, fault, error, code):
    router, alias, _ = router_for(fake)
    fake.script(fault, {})
    stats = CallStats()
    routed = router.stream(alias, BODY, Deadline.after(30), stats)
    with pytest.raises(error) as err:
        list(routed)
    assert err.value.code == code
    assert fake.chat_calls == 1 and stats.retries == 0
    assert stats.errors == {f"stream_{code.removeprefix('upstream_stream_')}": 1}


def test_router_stall_after_first_chunk_is_a_timeout_error(fake):
    router, alias, _ = router_for(fake, read_timeout=0.3)
    fake.script({"block_after": 1})
    routed = router.stream(alias, BODY, Deadline.after(30), CallStats())
    with pytest.raises(UpstreamTimeout) as err:
        list(routed)
    assert err.value.code == "upstream_stream_stalled" and fake.chat_calls == 1
