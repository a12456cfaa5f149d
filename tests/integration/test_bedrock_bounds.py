"""Bedrock held to the HTTP providers' rules: a real boto3 client against a loopback server speaking
the Bedrock wire format (JSON for Converse, the binary event stream for ConverseStream).

The body caps of providers/body.py and providers/sse.py (a reply 8 MiB, an error body 64 KiB, a
stream 32 MiB, an event 8 MiB); a stream's ``abort()`` (a cancelled background response, a client
gone) closing the connection under a blocked read; a job's CallScope ending a call still waiting
for its headers, and the request's deadline ending that wait.
"""

from __future__ import annotations

import json
import select
import threading
from http.server import BaseHTTPRequestHandler

import boto3
import pytest
from botocore.config import Config

from llm_gateway.deadline import Deadline, bounded
from llm_gateway.providers.base import (
    UpstreamConnectionError,
    UpstreamReplyTooLarge,
    UpstreamStreamError,
    UpstreamTimeout,
)
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.providers.body import MAX_ERROR_BYTES, MAX_REPLY_BYTES
from llm_gateway.providers.sse import MAX_STREAM_BYTES
from llm_gateway.providers.watchdog import CallScope, abortable
from llm_gateway.upstream.aliases import Deployment
from tests.integration.test_bedrock_stream import event
from tests.loopback import LoopbackServer, read_body, reply, serving

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
BODY = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


def converse(text: str) -> bytes:
    return json.dumps(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
        }
    ).encode()


def delta(text: str) -> bytes:
    return event({"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": text}}})


START = event({"messageStart": {"role": "assistant"}})
STOP = event({"messageStop": {"stopReason": "end_turn"}})


class Server(LoopbackServer):
    status = 200
    body = b""
    hang = False  # send the body, then keep the connection open until the client closes it
    hold_headers = False  # send nothing until the client closes the connection (at most 10 s)
    received: threading.Event
    saw_close: threading.Event


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _client_closed(self, within: float) -> bool:
        readable, _, _ = select.select([self.connection], [], [], within)
        return bool(readable) and self.connection.recv(1) == b""

    def do_POST(self):
        read_body(self)
        self.server.received.set()
        if self.server.hold_headers and self._client_closed(10):
            self.server.saw_close.set()
            return
        if not self.server.hang:
            kind = "application/json" if self.path.endswith("/converse") else "application/vnd.amazon.eventstream"
            return reply(self, self.server.status, self.server.body, kind)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(self.server.body), self.server.body))
        self.wfile.flush()
        if self._client_closed(10):
            self.server.saw_close.set()


@pytest.fixture
def bedrock():
    server = Server(Handler)
    server.received, server.saw_close = threading.Event(), threading.Event()
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=server.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=30),
    )
    provider = BedrockProvider(Deployment(name="br", provider="bedrock", model=MODEL), client)
    with serving(server):
        yield server, provider


def test_a_reply_within_the_cap_is_read_as_before(bedrock):
    server, provider = bedrock
    server.body = converse("hello")
    assert provider.complete(dict(BODY), (1, 5)).body["choices"][0]["message"]["content"] == "hello"


def test_a_reply_over_8_mib_is_refused_as_too_large(bedrock):
    server, provider = bedrock
    server.body = converse("x" * (MAX_REPLY_BYTES + 1))
    with pytest.raises(UpstreamReplyTooLarge):
        provider.complete(dict(BODY), (1, 5))


def test_an_error_body_over_64_kib_is_refused_as_too_large(bedrock):
    server, provider = bedrock
    server.status = 400
    server.body = json.dumps({"message": "x" * MAX_ERROR_BYTES}).encode()
    with pytest.raises(UpstreamReplyTooLarge):
        provider.complete(dict(BODY), (1, 5))


def test_one_event_over_8_mib_is_refused_before_any_chunk(bedrock):
    server, provider = bedrock
    server.body = START + delta("x" * (MAX_REPLY_BYTES + 1)) + STOP
    with pytest.raises(UpstreamReplyTooLarge):
        list(provider.stream(dict(BODY), (1, 5)))


def test_a_stream_over_32_mib_fails_after_its_first_chunks(bedrock):
    server, provider = bedrock
    piece = "y" * (MAX_REPLY_BYTES // 4)
    server.body = START + b"".join(delta(piece) for _ in range(MAX_STREAM_BYTES // len(piece) + 1)) + STOP
    seen = 0
    with pytest.raises(UpstreamStreamError) as err:
        for _chunk in provider.stream(dict(BODY), (1, 5)):
            seen += 1
    assert err.value.reason == "malformed" and seen > 1


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/1.0"])  # kept alive, or closed after the reply
def test_abort_closes_a_stream_blocked_on_a_silent_bedrock(bedrock, monkeypatch, protocol):
    server, provider = bedrock
    monkeypatch.setattr(Handler, "protocol_version", protocol)
    server.body, server.hang = START + delta("first"), True
    stream = provider.stream(dict(BODY), (1, 30))
    assert next(stream)["choices"][0]["delta"]["content"] == "first"
    threading.Timer(0.2, stream.abort).start()  # from another thread, as the cancel watch does
    with pytest.raises(UpstreamStreamError) as err:
        next(stream)  # blocked on the silent upstream until the abort
    assert err.value.reason == "cut"
    assert server.saw_close.wait(5)  # Bedrock sees the connection close, long before its 10 s
    stream.close()


def test_a_job_cancel_ends_a_call_still_waiting_for_its_headers(bedrock):
    server, provider = bedrock
    server.body, server.hold_headers = converse("never sent"), True
    scope = CallScope()
    outcome: list[BaseException] = []

    def call() -> None:
        with abortable(scope):
            try:
                provider.complete(dict(BODY), (1, 30))
            except BaseException as exc:
                outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    assert server.received.wait(5)
    scope.abort()  # the job's cancel watch
    worker.join(15)
    assert server.saw_close.is_set()  # the connection was closed before any byte of the reply
    assert len(outcome) == 1 and isinstance(outcome[0], UpstreamConnectionError), outcome


def test_the_wait_for_the_headers_ends_at_the_requests_deadline(bedrock):
    """The watchdog's pools: a Bedrock that holds its headers is cut at the deadline, not at botocore's
    30 s read timeout: the call fails then, and Bedrock sees the connection close."""
    server, provider = bedrock
    server.body, server.hold_headers = converse("never sent"), True
    deadline = Deadline.after(0.5)
    with bounded(deadline), pytest.raises((UpstreamConnectionError, UpstreamTimeout)):
        provider.complete(dict(BODY), (1, 30))
    assert deadline.expired() and server.saw_close.wait(5)
