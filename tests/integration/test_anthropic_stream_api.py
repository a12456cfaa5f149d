"""Streaming through the API from an Anthropic deployment.

Real parts: the app under uvicorn in this process (tests/integration/live.py), DynamoDB/KMS in
moto server mode, and a loopback HTTP server that answers ``POST /v1/messages`` as Anthropic
documents it — the JSON message of ``anthropic_messages.json`` or the event stream of
``anthropic_stream.sse`` (tests/fixtures/providers/), sent one event per HTTP chunk — and that
can cut the stream or keep it open with ``ping`` events until the gateway hangs up.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from llm_gateway.security.provider_keys import encrypt_key
from tests.integration.live import live_gateway
from tests.loopback import LoopbackServer, read_body, reply, serving
from tests.unit.providers_common import fixture

pytestmark = pytest.mark.integration

ANTHROPIC_KEY = "sk-ant-loopback-KEY-51e0"
DEPLOYMENT = "claude-direct"
MESSAGE = fixture("anthropic_messages.json")["anthropic_response"]
REPLY = "Hello! How can I help you today?"  # the text of MESSAGE and of the fixture's stream
# The fixture's events, each with the blank line that ends it (the first also carries the source comments).
EVENTS = [block + b"\n\n" for block in fixture("anthropic_stream.sse").split(b"\n\n") if block.strip()]
FIRST_TEXT = 4  # message_start, content_block_start, ping, then the first text delta ("Hello")


class AnthropicLoopback(LoopbackServer):
    """``POST /v1/messages`` as Anthropic answers it. ``mode``: "full", "cut" (the connection
    drops after the first text delta, without the chunked body's end) or "hold" (after the first
    text delta, a ``ping`` every 50 ms until a write fails: ``hung_up`` is then set)."""

    def __init__(self) -> None:
        self.mode = "full"
        self.requests: list[dict] = []
        self.hung_up = threading.Event()
        super().__init__(_Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AnthropicLoopback

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):
        body = json.loads(read_body(self))
        self.server.requests.append(
            {
                "path": self.path,
                "body": body,
                "api_key": self.headers.get("x-api-key"),
                "version": self.headers.get("anthropic-version"),
            }
        )
        if self.headers.get("x-api-key") != ANTHROPIC_KEY:
            return reply(
                self,
                401,
                json.dumps(
                    {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
                ).encode(),
            )
        if not body.get("stream"):
            return reply(self, 200, json.dumps(MESSAGE).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        mode = self.server.mode
        for event in EVENTS[:FIRST_TEXT] if mode != "full" else EVENTS:
            self._chunk(event)
        if mode == "cut":
            self.close_connection = True  # no terminating chunk: the body ends mid-stream
            return
        if mode == "hold":
            try:
                for _ in range(300):  # 15 s at most
                    time.sleep(0.05)
                    self._chunk(b'event: ping\ndata: {"type": "ping"}\n\n')
            except OSError:
                self.server.hung_up.set()
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


@pytest.fixture
def anthropic():
    with serving(AnthropicLoopback()) as (server,):
        yield server


def anthropic_gateway(aws, upstream: AnthropicLoopback):
    routing = {
        "version": 1,
        "aliases": {
            "default": {
                "deployments": [
                    {
                        "name": DEPLOYMENT,
                        "provider": "anthropic",
                        "model": "claude-sonnet-4-20250514",
                        "base_url": upstream.url,
                        "key_ref": "anthropic-key",
                        "default_max_tokens": 256,
                    }
                ]
            }
        },
    }
    ciphertext = encrypt_key(ANTHROPIC_KEY, DEPLOYMENT, aws.res.kms_key_id, aws.client("kms"))
    return live_gateway(
        aws, routing_config=json.dumps(routing), provider_keys=json.dumps({"anthropic-key": ciphertext})
    )


def create_conversation(live) -> str:
    r = requests.post(f"{live.base_url}/conversations", json={}, headers=live.headers(), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def stored(live, conversation_id: str) -> list[dict]:
    r = requests.get(
        f"{live.base_url}/conversations/{conversation_id}/items",
        params={"order": "asc", "limit": 100},
        headers=live.headers(),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return [{"role": m["role"], "content": m["content"][0]["text"]} for m in r.json()["data"]]


def lease_of(live, conversation_id: str) -> dict:
    store = live.services.conversations
    item = store.client.get_item(
        TableName=store.table, Key=store._key("tenant-live", conversation_id), ConsistentRead=True
    )["Item"]
    return {k: v for k, v in item.items() if k.startswith("lease")}


def stream_events(live, body: dict) -> tuple[requests.Response, list[str]]:
    """POST a streamed chat request; the ``data`` of every SSE event the gateway sent."""
    r = requests.post(
        f"{live.base_url}/chat/completions",
        json={**body, "stream": True},
        headers=live.headers(),
        timeout=20,
        stream=True,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line[len(b"data: ") :].decode() for line in r.iter_lines() if line.startswith(b"data: ")]
    return r, events


def text_of(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_anthropic_stream_reaches_the_client_as_openai_chunks_and_the_turn_is_stored(aws, anthropic):
    with anthropic_gateway(aws, anthropic) as live:
        question = [{"role": "user", "content": "Hi"}]
        r = requests.post(
            f"{live.base_url}/chat/completions",
            json={"model": "default", "messages": question},
            headers=live.headers(),
            timeout=20,
        )
        assert r.status_code == 200, r.text
        non_streamed = r.json()["choices"][0]["message"]["content"]

        conv = create_conversation(live)
        r, events = stream_events(live, {"model": "default", "messages": question, "conversation_id": conv})
        assert r.headers["x-llm-gateway-deployment"] == DEPLOYMENT
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks and all(c["object"] == "chat.completion.chunk" and "error" not in c for c in chunks)
        assert all(c["conversation_id"] == conv for c in chunks)
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["stop"]
        assert text_of(chunks) == non_streamed == REPLY

        assert stored(live, conv) == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": REPLY}]
        assert not lease_of(live, conv)
        sent = anthropic.requests
        assert [(s["path"], s["api_key"], s["version"], s["body"].get("stream")) for s in sent] == [
            ("/v1/messages", ANTHROPIC_KEY, "2023-06-01", None),
            ("/v1/messages", ANTHROPIC_KEY, "2023-06-01", True),
        ]
        assert sent[1]["body"]["messages"] == [{"role": "user", "content": "Hi"}]


def test_anthropic_stream_cut_midway_ends_with_an_error_event_and_stores_nothing(aws, anthropic):
    with anthropic_gateway(aws, anthropic) as live:
        conv = create_conversation(live)
        anthropic.mode = "cut"
        _, events = stream_events(
            live, {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "conversation_id": conv}
        )
        assert "[DONE]" not in events
        *chunks, last = [json.loads(e) for e in events]
        assert text_of(chunks) == "Hello"  # the client saw the partial text, then the error event
        assert last["error"]["code"] == "upstream_stream_cut"
        assert len(anthropic.requests) == 1  # no retry once the stream had begun
        assert stored(live, conv) == []
        assert not lease_of(live, conv)  # released: the next turn may start

        anthropic.mode = "full"
        _, events = stream_events(
            live, {"model": "default", "messages": [{"role": "user", "content": "again"}], "conversation_id": conv}
        )
        assert events[-1] == "[DONE]"
        assert stored(live, conv) == [{"role": "user", "content": "again"}, {"role": "assistant", "content": REPLY}]


def test_client_disconnect_closes_the_anthropic_connection_and_releases_the_turn(aws, anthropic):
    with anthropic_gateway(aws, anthropic) as live:
        conv = create_conversation(live)
        anthropic.mode = "hold"  # after "Hello", only pings: the gateway's reader waits for more
        r = requests.post(
            f"{live.base_url}/chat/completions",
            headers=live.headers(),
            timeout=20,
            stream=True,
            json={
                "model": "default",
                "stream": True,
                "conversation_id": conv,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        # keep the line iterator referenced: a dropped generator closes urllib3's stream, and with
        # it the connection, so the gateway would see the client leave before the lease check
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["content"] == "Hello"
        assert lease_of(live, conv)  # held while streaming
        r.close()

        assert anthropic.hung_up.wait(10), "the gateway kept reading from Anthropic after the client left"
        deadline = time.monotonic() + 10
        while lease_of(live, conv) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not lease_of(live, conv)
        assert stored(live, conv) == []
