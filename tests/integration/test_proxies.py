"""HTTPS_PROXY / NO_PROXY from the environment, and a per-deployment proxy, through a real proxy on loopback."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from llm_gateway.providers import build_provider
from llm_gateway.providers.base import UpstreamConnectionError
from llm_gateway.upstream.aliases import Deployment
from tests.fakes import FakeKeys
from tests.loopback import LoopbackServer, read_body, reply, serving

COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "via"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
}


class Recorder(LoopbackServer):
    def __init__(self, label: str) -> None:
        self.seen: list[tuple[str, str]] = []
        self.label = label
        super().__init__(Handler)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_CONNECT(self):  # a proxy asked to tunnel to an https upstream: record it, refuse it
        self.server.seen.append(("CONNECT", self.path))
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):  # a proxy (absolute URI) or an upstream (path): answer as the upstream would
        read_body(self)
        self.server.seen.append(("POST", self.path))
        reply(self, 200, json.dumps({**COMPLETION, "model": self.server.label}).encode())


@pytest.fixture
def servers():
    with serving(Recorder("proxy"), Recorder("upstream")) as started:
        yield list(started)


@pytest.fixture
def env(monkeypatch):
    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def provider(base_url: str, **kw):
    deployment = Deployment(name="d", provider="openai_compatible", model="m", base_url=base_url, **kw)
    return build_provider(
        deployment, FakeKeys({}), requests.Session(), region="us-east-1", connect_timeout=2, read_timeout=5
    )


BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def test_https_proxy_from_the_environment_is_used(servers, env):
    proxy, _ = servers
    env.setenv("HTTPS_PROXY", proxy.url)
    with pytest.raises(UpstreamConnectionError):  # our recording proxy refuses the tunnel
        provider("https://api.upstream.example/v1").complete(BODY, (2, 5))
    assert proxy.seen == [("CONNECT", "api.upstream.example:443")]


def test_http_proxy_from_the_environment_carries_the_request(servers, env):
    proxy, _ = servers
    env.setenv("HTTP_PROXY", proxy.url)
    reply = provider("http://upstream.example/v1").complete(BODY, (2, 5))
    assert reply.body["model"] == "proxy"
    assert proxy.seen == [("POST", "http://upstream.example/v1/chat/completions")]


def test_no_proxy_hosts_bypass_the_environment_proxy(servers, env):
    proxy, upstream = servers
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("NO_PROXY", "127.0.0.1")
    reply = provider(upstream.url + "/v1").complete(BODY, (2, 5))
    assert reply.body["model"] == "upstream"
    assert proxy.seen == [] and upstream.seen == [("POST", "/v1/chat/completions")]


def test_a_deployment_proxy_is_used_without_any_environment_setting(servers, env):
    proxy, _ = servers
    reply = provider("http://upstream.example/v1", proxy=proxy.url).complete(BODY, (2, 5))
    assert reply.body["model"] == "proxy"
    assert proxy.seen == [("POST", "http://upstream.example/v1/chat/completions")]


def test_a_deployment_proxy_wins_over_the_environment(servers, env):
    proxy, other = servers
    env.setenv("HTTP_PROXY", other.url)
    provider("http://upstream.example/v1", proxy=proxy.url).complete(BODY, (2, 5))
    assert proxy.seen == [("POST", "http://upstream.example/v1/chat/completions")] and other.seen == []


def test_deployments_without_a_proxy_keep_the_shared_session(servers, env):
    shared = requests.Session()
    plain = Deployment(name="a", model="m", base_url="http://x.test/v1")
    proxied = Deployment(name="b", model="m", base_url="http://x.test/v1", proxy=servers[0].url)
    assert build_provider(plain, FakeKeys({}), shared, region="r", connect_timeout=1, read_timeout=1).session is shared
    assert (
        build_provider(proxied, FakeKeys({}), shared, region="r", connect_timeout=1, read_timeout=1).session
        is not shared
    )


def test_the_gateway_session_reads_the_environment_once_per_url_and_still_honours_it(servers, env, monkeypatch):
    import requests.sessions

    from llm_gateway.providers.http import UpstreamSession

    proxy, upstream = servers
    env.setenv("HTTP_PROXY", proxy.url)
    env.setenv("NO_PROXY", "127.0.0.1")
    reads: list[str] = []
    real = requests.sessions.get_environ_proxies
    monkeypatch.setattr(
        requests.sessions, "get_environ_proxies", lambda url, **kw: reads.append(url) or real(url, **kw)
    )
    session = UpstreamSession()

    def call(base_url: str) -> str:
        deployment = Deployment(name="d", provider="openai_compatible", model="m", base_url=base_url)
        built = build_provider(deployment, FakeKeys({}), session, region="r", connect_timeout=2, read_timeout=5)
        return built.complete(BODY, (2, 5)).body["model"]

    for _ in range(3):
        assert call("http://upstream.example/v1") == "proxy"  # through HTTP_PROXY
        assert call(upstream.url + "/v1") == "upstream"  # NO_PROXY
    assert proxy.seen == [("POST", "http://upstream.example/v1/chat/completions")] * 3
    assert upstream.seen == [("POST", "/v1/chat/completions")] * 3
    assert sorted(reads) == sorted(
        ["http://upstream.example/v1/chat/completions", upstream.url + "/v1/chat/completions"]
    )
