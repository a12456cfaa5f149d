"""Streaming through the app served by uvicorn in this process (so its threads, sockets and store can be inspected)."""

from __future__ import annotations

import json
import sys
import threading
import time

import openai
import pytest
import requests

from tests.integration.live import live_gateway

pytestmark = pytest.mark.integration

LONG = " ".join(f"w{i}" for i in range(60))
STREAM_CODE = ("llm_gateway/providers/sse.py", "llm_gateway/chat/streaming.py", "llm_gateway/upstream/router.py")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def established_to(port: int) -> int:
    """Client-side TCP connections to ``port`` that the kernel still holds open (any process here)."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, remote, state = fields[1], fields[2], fields[3]
                    if (
                        state == "01"
                        and int(remote.rsplit(":", 1)[1], 16) == port
                        and int(local.rsplit(":", 1)[1], 16) != port
                    ):
                        count += 1
        except FileNotFoundError:
            continue
    return count


def threads_in_stream_code() -> list[str]:
    busy = []
    for ident, frame in sys._current_frames().items():
        while frame is not None:
            if frame.f_code.co_filename.replace("\\", "/").endswith(STREAM_CODE):
                busy.append(str(ident))
                break
            frame = frame.f_back
    return busy


def wait_until(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            return value
        time.sleep(0.01)
    return value


def emf_records(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith('{"_aws"'):
            out.append(json.loads(line))
    return out


def lease_of(live, conversation_id: str) -> dict:
    store = live.services.conversations
    item = store.client.get_item(
        TableName=store.table, Key=store._key("tenant-live", conversation_id), ConsistentRead=True
    )["Item"]
    return {k: v for k, v in item.items() if k.startswith("lease")}


def create_conversation(live) -> str:
    r = requests.post(f"{live.base_url}/conversations", json={}, headers=live.headers(), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def test_client_disconnect_leaves_no_thread_socket_lease_or_message(aws, capsys):
    with live_gateway(aws) as live:
        conv = create_conversation(live)
        live.upstream.script({"delay_between_chunks": 0.05})
        stream = live.openai().chat.completions.create(
            model="default", messages=user(LONG), stream=True, extra_body={"conversation_id": conv}
        )
        it = iter(stream)
        for _ in range(3):
            next(it)
        assert lease_of(live, conv)  # held while streaming
        stream.close()

        assert live.upstream.wait_until(lambda f: f.disconnects == 1 and f.open_streams == 0, 10)
        assert wait_until(lambda: not threads_in_stream_code()), threads_in_stream_code()
        assert wait_until(lambda: established_to(live.upstream.port) == 0)
        assert wait_until(lambda: not lease_of(live, conv))
        assert live.services.conversations.messages("tenant-live", conv, limit=10, after=None) == ([], False)
        # the request is over and its metrics were flushed with the outcome
        out: list[str] = []

        def flushed() -> bool:
            out.append(capsys.readouterr().out)
            return any("StreamOutcome_client_disconnect" in r for r in emf_records("".join(out)))

        assert wait_until(flushed)


def test_stall_mid_stream_ends_with_an_error_event_and_is_counted(aws, capsys):
    with live_gateway(aws, read_timeout_seconds=0.5) as live:
        conv = create_conversation(live)
        live.upstream.script({"block_after": 2})
        got = []
        with pytest.raises(openai.APIError) as err:
            for chunk in live.openai().chat.completions.create(
                model="default", messages=user("a b c d"), stream=True, extra_body={"conversation_id": conv}
            ):
                got.append(chunk)
        assert err.value.body["code"] == "upstream_stream_stalled"
        assert err.value.body["type"] == "timeout_error"
        assert len(got) == 3 and live.upstream.chat_calls == 1  # no retry once the stream had begun
        live.upstream.release()
        assert not lease_of(live, conv)
        assert live.services.conversations.messages("tenant-live", conv, limit=10, after=None) == ([], False)
        out: list[str] = []

        def streamed() -> list[dict]:  # flushed once the response has ended, which may trail the client
            out.append(capsys.readouterr().out)
            return [r for r in emf_records("".join(out)) if "StreamChunks" in r]

        streamed = wait_until(streamed)
        assert streamed and streamed[-1]["StreamOutcome_upstream_error"] == [1.0]
        assert streamed[-1]["StreamChunks"] == [3.0] and streamed[-1]["UpstreamErrors_stream_stall"] == [1.0]
        assert streamed[-1]["TimeToFirstToken"][0] > 0


def test_errors_before_the_first_byte_are_plain_json(aws):
    with live_gateway(aws, max_attempts=2) as live:
        conv = create_conversation(live)
        body = {"model": "default", "stream": True, "messages": user("x")}
        url = f"{live.base_url}/chat/completions"
        r = requests.post(url, json={**body, "model": "nope"}, headers=live.headers(), timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "model_not_found")
        r = requests.post(url, json={**body, "conversation_id": "conv_missing"}, headers=live.headers(), timeout=10)
        assert r.status_code == 404
        live.upstream.script({"status": 503}, {"status": 503})
        r = requests.post(url, json={**body, "conversation_id": conv}, headers=live.headers(), timeout=10)
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["code"] == "upstream_unavailable"
        assert not lease_of(live, conv)  # released: the next turn is not blocked
        r = requests.post(url, json={**body, "conversation_id": conv}, headers=live.headers(), timeout=10, stream=True)
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-conversation-id"] == conv
        events = [line for line in r.iter_lines() if line]
        assert events[-1] == b"data: [DONE]"


def test_lease_is_renewed_while_a_long_stream_runs(aws):
    # A 1 s lease, renewed every 0.1 s while chunks flow every 0.05 s; the stream runs about 3 s.
    with live_gateway(aws, stream_lease_seconds=1.0, lease_grace_seconds=0.0, stream_lease_renew_seconds=0.1) as live:
        conv = create_conversation(live)
        live.upstream.script({"delay_between_chunks": 0.05})
        client = live.openai()
        stream = client.chat.completions.create(
            model="default", messages=user(LONG), stream=True, extra_body={"conversation_id": conv}
        )
        started = time.monotonic()
        received = []
        busy = threading.Event()
        for chunk in stream:
            received.append(chunk)
            if not busy.is_set() and time.monotonic() - started > 2.0:  # twice the lease: it was renewed
                with pytest.raises(openai.ConflictError):
                    client.chat.completions.create(
                        model="default", messages=user("intruder"), extra_body={"conversation_id": conv}
                    )
                busy.set()
        assert busy.is_set()
        text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
        stored = live.services.conversations.messages("tenant-live", conv, limit=10, after=None)[0]
        assert [m.body["content"] for m in stored] == [LONG, text]
