"""Nothing trusted from upstream (issue 13 item 3), against the fake upstream over loopback: usage
that lies (negative, huge, non-integer, ``1e400``), a gzip bomb, and an error body that quotes the
prompt and the provider key in four encodings. The answers: the history budget holds, counters
stay sane, memory stays bounded, a clear 502, and nothing of the key or the prompt reaches the
client's body or a stored job error."""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc

import pytest

from llm_gateway.chat.tokens import count_message
from local.fake_upstream import FakeUpstream, _gzip_bomb
from tests.integration.conftest import CANARY_KEY, make_gateway, mocked_upstream

BUDGET = 400  # history_max_tokens for the budget test
LIES = {
    "negative": '{"prompt_tokens":-5,"completion_tokens":-100000,"total_tokens":-100005}',
    "1e400": '{"prompt_tokens":1e400,"completion_tokens":1e400,"total_tokens":1e400}',
    "huge": '{"prompt_tokens":1000000000000000000000000000000,"completion_tokens":1e30,"total_tokens":1}',
    "non-integer": '{"prompt_tokens":7.5,"completion_tokens":"12","total_tokens":null}',
    "not an object": '"plenty"',
    "details": '{"prompt_tokens":-1,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":1e400}}',
}
SANE = 100_000  # no count in these tests comes near this


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream(api_key=CANARY_KEY) as f:
        yield f


@pytest.fixture
def gw(aws, fake):
    fake.reset()
    with mocked_upstream() as mock:  # loopback passes through to the fake
        gateway = make_gateway(aws, upstream_url=fake.url, history_max_tokens=BUDGET)
        gateway.upstream = mock
        yield gateway


def chat_body(content: str, conv: str | None = None, **extra) -> dict:
    body = {"model": "default", "messages": [{"role": "user", "content": content}], **extra}
    if conv:
        body["conversation_id"] = conv
    return body


def assert_sane_usage(usage: dict) -> None:
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert type(usage[name]) is int and 0 <= usage[name] < SANE, usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0


@pytest.mark.parametrize("lie", list(LIES), ids=list(LIES))
def test_lying_usage_is_replaced_by_our_count_in_every_view(gw, fake, lie):
    conv = gw.post("/v1/conversations", {}).json()["id"]
    fake.script({"usage_json": LIES[lie]}, {"usage_json": LIES[lie]})  # one per upstream call
    headers = gw.headers()
    r = gw.client.post("/v1/chat/completions", json=chat_body("count me", conv), headers=headers)
    assert r.status_code == 200, r.text
    assert_sane_usage(r.json()["usage"])
    json.dumps(r.json(), allow_nan=False)
    r = gw.client.post("/v1/responses", json={"model": "default", "input": "count me too"}, headers=headers)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert 0 < usage["input_tokens"] < SANE and 0 <= usage["output_tokens"] < SANE
    head = gw.get(f"/v1/conversations/{conv}").json()["usage"]
    assert 0 < head["prompt_tokens"] < SANE and 0 <= head["completion_tokens"] < SANE
    total = gw.get("/v1/usage").json()["total"]
    assert all(0 <= v < SANE for k, v in total.items() if isinstance(v, int)), total
    assert fake.chat_calls == 2 and not fake.stats()["queued"]  # both lies were told


@pytest.mark.parametrize("lie", ["negative", "1e400", "huge"])
def test_lying_usage_in_a_stream_is_replaced_in_the_usage_chunk(gw, fake, lie):
    body = chat_body("stream me", stream=True, stream_options={"include_usage": True})
    fake.script({"usage_json": LIES[lie]})
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=gw.headers()) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks)
    (usage,) = [c["usage"] for c in chunks if c.get("usage")]
    assert_sane_usage(usage)
    assert fake.chat_calls == 1 and not fake.stats()["queued"]


def test_negative_completion_tokens_cannot_void_the_history_budget(gw, fake):
    """Each reply is ~250 tokens and the upstream says it cost -100000: were that believed, the stored
    replies would cost nothing as history and every turn would send the whole conversation."""
    conv = gw.post("/v1/conversations", {}).json()["id"]
    reply = " ".join(f"word{i}" for i in range(100))
    for turn in range(6):
        fake.script({"reply": reply, "usage_json": LIES["negative"]})
        r = gw.client.post("/v1/chat/completions", json=chat_body(f"turn {turn}", conv), headers=gw.headers())
        assert r.status_code == 200, r.text
        sent = fake.requests[-1]["body"]["messages"]
        history = sent[:-1]
        assert sum(count_message(m) for m in history) <= BUDGET, (turn, len(history))
    assert fake.chat_calls == 6
    assert len(history) >= 1  # the budget admits some history: it is trimmed, not dropped


BOMB = 100 * 1024 * 1024  # 100 MiB of zeros, ~100 KiB on the wire


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_a_gzip_bomb_is_a_502_with_bounded_memory(gw, fake, stream):
    assert (
        len(
            _gzip_bomb(
                b"data: " if stream else b'{"choices":[{"index":0,"message":{"role":"assistant","content":"', BOMB
            )
        )
        < 128 * 1024
    )
    _gzip_bomb(b'{"choices":[{"index":0,"message":{"role":"assistant","content":"', BOMB)  # built before measuring
    _gzip_bomb(b"data: ", BOMB)
    fake.script(*[{"gzip_bomb": BOMB}] * 3)  # every attempt (a 502 is retried) gets one
    headers = gw.headers()
    gc.collect()
    tracemalloc.start()
    try:
        r = gw.client.post("/v1/chat/completions", json=chat_body("hi", stream=stream), headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_reply_too_large" and "limit" in error["message"]
    assert fake.chat_calls == 3 and not fake.stats()["queued"]
    print(f"gzip bomb ({'stream' if stream else 'completion'}): traced peak {peak / 2**20:.1f} MiB")
    assert peak < 48 * 2**20, peak  # the 8 MiB cap and read buffers; the bomb is 100 MiB decoded


PROMPT = "Quarterly plan for project NIGHTINGALE: acquire the Lisbon office before the board meets."
BARE = CANARY_KEY.removeprefix("sk-")
ENCODINGS = {
    "as sent": CANARY_KEY,
    "without prefix": BARE,
    "base64": base64.b64encode(CANARY_KEY.encode()).decode(),
    "reversed": CANARY_KEY[::-1],
}
ECHO = f"Invalid request: the content '{PROMPT[:55]}' was flagged; " + "; ".join(
    f"key {name}: {form}" for name, form in ENCODINGS.items()
)


def assert_clean(text: str) -> None:
    for name, form in {**ENCODINGS, "bare reversed": BARE[::-1]}.items():
        assert form not in text, name
        assert form[4:16] not in text, name
    assert "NIGHTINGALE" not in text and PROMPT[:20] not in text and "Lisbon" not in text


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_an_error_quoting_the_prompt_and_the_key_reaches_the_client_clean(gw, fake, stream):
    fake.script({"status": 400, "message": ECHO})
    r = gw.client.post("/v1/chat/completions", json=chat_body(PROMPT, stream=stream), headers=gw.headers())
    assert r.status_code == 400, r.text
    assert "Upstream rejected the request" in r.json()["error"]["message"]
    assert "flagged" in r.text  # the upstream's reason still reaches the client
    assert_clean(r.text)
    assert fake.chat_calls == 1


def test_an_error_quoting_the_prompt_and_the_key_is_stored_clean_in_the_job(aws, fake):
    from tests.integration.test_jobs import _jobs

    fake.reset()
    for jobs in _jobs(aws, upstream_url=fake.url):
        fake.script({"status": 400, "message": ECHO})
        job_id = jobs.submit(chat_body(PROMPT)).json()["id"]
        jobs.drain(lambda j=jobs, i=job_id: j.job(i)["status"] == "failed")
        stored = jobs.job(job_id)
        assert "flagged" in json.dumps(stored["error"])
        assert_clean(json.dumps(stored))
        assert_clean(json.dumps(jobs.job_items()))
        assert fake.chat_calls == 1
