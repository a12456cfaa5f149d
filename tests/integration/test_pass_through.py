"""Each alias's pass-through policy for service_tier, store, metadata and user, seen at the upstream.

Chat Completions (plain, streamed, on a conversation), Responses and jobs all send what the policy
says, checked in the bodies the fake upstream received: by default nothing that keeps a prompt at
the provider or picks its tier arrives, and ``user`` is the tenant; an alias can forward a field,
drop it, or refuse it with a 400 naming it before any upstream call.
"""

from __future__ import annotations

import json

import pytest

from local.fake_upstream import FakeUpstream
from tests.integration.conftest import chat, make_gateway
from tests.integration.test_jobs import _jobs

PROVIDER_FIELDS = {"service_tier": "priority", "store": True, "metadata": {"team": "x"}, "user": "end-user-7"}


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake):
    fake.reset()


def routing(url: str) -> str:
    def alias(name: str, **rules: str) -> dict:
        deployment = {"name": f"fake-{name}", "provider": "openai_compatible", "model": "fake-model", "base_url": url}
        return {"deployments": [deployment], "pass_through": rules}

    return json.dumps(
        {
            "version": 1,
            "aliases": {
                "open": alias("open", service_tier="forward", store="forward", metadata="forward", user="forward"),
                "strict": alias("strict", store="reject", service_tier="reject"),
                "anonymous": alias("anonymous", user="drop"),
            },
        }
    )


@pytest.fixture
def gw(aws, fake):
    return make_gateway(aws, upstream_url=fake.url, routing_config=routing(fake.url))


def received(fake: FakeUpstream) -> dict:
    *_, last = fake.requests
    return last["body"]


def provider_fields(body: dict) -> dict:
    return {k: body[k] for k in PROVIDER_FIELDS if k in body}


def test_defaults_keep_nothing_at_the_provider_and_name_the_tenant(gw, fake):
    r = gw.post("/v1/chat/completions", chat("hi", **PROVIDER_FIELDS))
    assert r.status_code == 200, r.text
    assert provider_fields(received(fake)) == {"user": "tenant-a"}
    r = gw.post("/v1/chat/completions", chat("hi", stream=True, **PROVIDER_FIELDS))
    assert r.status_code == 200 and "data: [DONE]" in r.text
    assert provider_fields(received(fake)) == {"user": "tenant-a"}
    conv = gw.post("/v1/conversations", {}).json()["id"]
    r = gw.post("/v1/chat/completions", chat("on a conversation", conv, **PROVIDER_FIELDS))
    assert r.status_code == 200, r.text
    assert provider_fields(received(fake)) == {"user": "tenant-a"}


def test_an_alias_can_forward_every_field_or_drop_user(gw, fake):
    r = gw.post("/v1/chat/completions", chat("hi", model="open", **PROVIDER_FIELDS))
    assert r.status_code == 200, r.text
    assert provider_fields(received(fake)) == PROVIDER_FIELDS
    r = gw.post("/v1/chat/completions", chat("hi", model="anonymous", **PROVIDER_FIELDS))
    assert r.status_code == 200, r.text
    assert provider_fields(received(fake)) == {}


def test_rejected_fields_are_a_400_naming_the_field_before_any_upstream_call(gw, fake):
    for field in ("store", "service_tier"):
        r = gw.post("/v1/chat/completions", chat("hi", model="strict", **{field: PROVIDER_FIELDS[field]}))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == field and error["code"] == "unsupported_parameter"
        assert error["type"] == "invalid_request_error"
    r = gw.post("/v1/responses", {"model": "strict", "input": "hi", "service_tier": "flex"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "service_tier"
    assert fake.chat_calls == 0
    ok = gw.post("/v1/chat/completions", chat("hi", model="strict", metadata={"a": "b"}, user="u"))
    assert ok.status_code == 200, ok.text
    assert provider_fields(received(fake)) == {"user": "tenant-a"}


def test_responses_follow_the_same_policy_and_keep_store_and_metadata_at_the_gateway(gw, fake):
    body = {"input": "hi", "store": True, "metadata": {"team": "x"}, "service_tier": "priority", "user": "u-1"}
    r = gw.post("/v1/responses", {"model": "default", **body})
    assert r.status_code == 200, r.text
    assert provider_fields(received(fake)) == {"user": "tenant-a"}
    assert r.json()["metadata"] == {"team": "x"}  # the gateway's own: stored with the response
    assert gw.get(f"/v1/responses/{r.json()['id']}").status_code == 200
    r = gw.post("/v1/responses", {"model": "open", **body, "safety_identifier": "sid-9"})
    assert r.status_code == 200, r.text
    assert provider_fields(received(fake)) == {"service_tier": "priority", "user": "sid-9"}


@pytest.fixture
def jobs(aws):
    yield from _jobs(aws)


def test_jobs_follow_the_same_policy(jobs):
    job = jobs.submit(chat("a job", **PROVIDER_FIELDS)).json()
    jobs.drain(lambda: jobs.job(job["id"])["status"] == "succeeded")
    (sent,) = jobs.gw.upstream_calls()
    assert provider_fields(sent) == {"user": "tenant-a"}


def test_a_response_shows_the_tier_the_upstream_reported_when_the_alias_forwards_it(aws):
    """Through the real OpenAI-compatible provider: the body's and the chunks' ``service_tier``."""
    from tests.integration.conftest import UPSTREAM, echo_reply, mocked_upstream, set_upstream
    from tests.integration.test_responses_api import stream_reply

    def flex(request):
        status, headers, text = (stream_reply if json.loads(request.body).get("stream") else echo_reply)(request)
        if headers.get("Content-Type") == "text/event-stream":
            frames = [f[len("data: ") :] for f in text.split("\n\n") if f.startswith("data: {")]
            text = "".join(f"data: {json.dumps({**json.loads(f), 'service_tier': 'flex'})}\n\n" for f in frames)
            return status, headers, text + "data: [DONE]\n\n"
        return status, headers, json.dumps({**json.loads(text), "service_tier": "flex"})

    with mocked_upstream() as mock:
        gw = make_gateway(aws, routing_config=routing(UPSTREAM))
        gw.upstream = mock
        set_upstream(gw, flex)
        body = {"model": "open", "input": "hi", "service_tier": "auto"}
        plain = gw.post("/v1/responses", body).json()
        assert plain["service_tier"] == "flex", plain
        assert gw.get(f"/v1/responses/{plain['id']}").json()["service_tier"] == "flex"
        streamed = gw.post("/v1/responses", {**body, "stream": True})
        assert streamed.status_code == 200, streamed.text
        final = json.loads(streamed.text.strip().split("\n\n")[-1].split("\n")[1].removeprefix("data: "))
        assert final["type"] == "response.completed" and final["response"]["service_tier"] == "flex"
        sent = [json.loads(c.request.body) for c in mock.calls if c.request.url.startswith(UPSTREAM)]
        assert [s.get("service_tier") for s in sent] == ["auto", "auto"]
        # an alias that drops the field: still what the upstream says it served the request with
        assert gw.post("/v1/responses", {**body, "model": "anonymous"}).json()["service_tier"] == "flex"
        *_, last = (json.loads(c.request.body) for c in mock.calls if c.request.url.startswith(UPSTREAM))
        assert last["messages"][-1]["content"] == "hi" and "service_tier" not in last
