"""ConverseStream end to end: a real boto3 client parses a real AWS event stream served from loopback.

botocore's Stubber cannot stub ConverseStream (see tests/unit/test_provider_bedrock.py), so
a tiny HTTP server answers ``POST /model/{id}/converse-stream`` with the documented events
encoded in the ``application/vnd.amazon.eventstream`` framing (prelude, headers, payload,
CRC32s), and the provider's stream is read through botocore's own parser.
Framing: https://docs.aws.amazon.com/AmazonS3/latest/API/RESTSelectObjectAppendix.html
(the same binary event-stream encoding Bedrock uses).
"""

from __future__ import annotations

import binascii
import json
import struct
from http.server import BaseHTTPRequestHandler

import boto3
import pytest
from botocore.config import Config

from llm_gateway.providers.base import UpstreamHTTPError, UpstreamStreamError
from llm_gateway.providers.bedrock import BedrockProvider, from_converse
from llm_gateway.upstream.aliases import Deployment
from llm_gateway.upstream.retry import should_retry
from tests.loopback import LoopbackServer, read_body, reply, serving
from tests.unit.providers_common import fixture

STREAM = fixture("bedrock_converse_stream.json")
DOC = fixture("bedrock_converse.json")
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack(">B", len(n)) + n + struct.pack(">BH", 7, len(v)) + v


def frame(headers: dict[str, str], payload: dict) -> bytes:
    head = b"".join(_header(k, v) for k, v in headers.items())
    body = json.dumps(payload).encode()
    total = 12 + len(head) + len(body) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + head + body
    return message + struct.pack(">I", binascii.crc32(message))


def event(member: dict) -> bytes:
    ((name, payload),) = member.items()
    return frame({":event-type": name, ":content-type": "application/json", ":message-type": "event"}, payload)


def exception(member: dict) -> bytes:
    ((name, payload),) = member.items()
    return frame({":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}, payload)


class Server(LoopbackServer):
    body = b""
    requests: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.server.requests.append({"path": self.path, "body": json.loads(read_body(self) or b"{}")})
        reply(self, 200, self.server.body, "application/vnd.amazon.eventstream")


@pytest.fixture
def bedrock():
    server = Server(Handler)
    server.requests = []
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=server.url,
        config=Config(retries={"total_max_attempts": 1}),
    )
    provider = BedrockProvider(Deployment(name="br", provider="bedrock", model=MODEL), client)
    with serving(server):
        yield server, provider


BODY = {
    "model": "x",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Weather in Seattle?"}],
}


def test_converse_stream_through_botocore_yields_the_non_streaming_text(bedrock):
    server, provider = bedrock
    server.body = b"".join(event(e) for e in STREAM["events"])
    chunks = list(provider.stream(dict(BODY), (1, 5)))
    assert server.requests[0]["path"].endswith("/converse-stream")
    assert server.requests[0]["body"]["messages"] == [{"role": "user", "content": [{"text": "Weather in Seattle?"}]}]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == from_converse(DOC["converse_response"], MODEL).body["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 140, "completion_tokens": 60, "total_tokens": 200}


def test_a_throttling_exception_before_any_chunk_is_a_retryable_429(bedrock):
    server, provider = bedrock
    server.body = event({"messageStart": {"role": "assistant"}}) + exception(STREAM["exception_event"])
    with pytest.raises(UpstreamHTTPError) as err:
        list(provider.stream(dict(BODY), (1, 5)))
    assert err.value.status == 429 and should_retry(err.value)


def test_an_exception_after_the_first_chunk_is_a_stream_error(bedrock):
    server, provider = bedrock
    server.body = b"".join(event(e) for e in STREAM["events"][:2]) + exception(STREAM["exception_event"])
    seen = []
    with pytest.raises(UpstreamStreamError) as err:
        for chunk in provider.stream(dict(BODY), (1, 5)):
            seen.append(chunk)
    assert err.value.reason == "error" and seen[0]["choices"][0]["delta"]["content"] == "Rainy and"


def test_a_stream_that_ends_before_message_stop_is_cut(bedrock):
    server, provider = bedrock
    server.body = b"".join(event(e) for e in STREAM["events"][:3])
    with pytest.raises(UpstreamStreamError) as err:
        list(provider.stream(dict(BODY), (1, 5)))
    assert err.value.reason == "cut"
