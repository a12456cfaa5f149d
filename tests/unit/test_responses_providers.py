"""Responses over Anthropic and Bedrock: what reaches each provider, in its own documented wire format.

A Responses request runs through ResponseService, the router and the real provider adapter;
the provider side is `responses` (Anthropic's HTTP API) or a client object answering with
Converse's documented response shapes (Bedrock). Fixtures are hand-written from
https://docs.anthropic.com/en/api/messages (and .../build-with-claude/streaming) and
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
(and API_runtime_ConverseStream.html).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import responses
from openai.types.responses import Response

from llm_gateway.chat.service import ChatService, TurnReport
from llm_gateway.chat.streaming import StreamReport
from llm_gateway.deadline import Deadline
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.responses.models import CreateResponse
from llm_gateway.responses.service import ResponseService
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import ModelAlias, Routing
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy
from llm_gateway.upstream.router import Router
from tests.fakes import FakeKeys, InMemoryResponseStore
from tests.unit.providers_common import deployment

ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
JSON_FORMAT = {"format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True}}


def anthropic_message(content: list[dict], stop_reason: str = "end_turn") -> dict:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 6},
    }


def sse(events: list[dict]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


def anthropic_stream(blocks: list[tuple[dict, list[dict]]], stop_reason: str) -> str:
    """The documented event sequence: message_start, per block start/deltas/stop, message_delta, message_stop."""
    events: list[dict] = [{"type": "message_start", "message": {**anthropic_message([]), "stop_reason": None}}]
    for index, (start, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 6}})
    events.append({"type": "message_stop"})
    return sse(events)


class Gateway:
    def __init__(self, provider: Any) -> None:
        self.store = InMemoryResponseStore()
        policy = RetryPolicy(max_attempts=1, backoff_base=0.1, backoff_max=0.1, budget=RetryBudget(1.0, 100.0))
        router = Router({provider.name: provider}, policy, connect_timeout=1, read_timeout=5)
        alias = ModelAlias(name="default", deployments=[provider.deployment])
        chat = ChatService(None, Routing({"default": alias}), router, Settings())  # type: ignore[arg-type]
        self.service = ResponseService(chat, self.store)

    def create(self, **body: Any) -> dict[str, Any]:
        request = CreateResponse.model_validate({"model": "default", **body})
        response = self.service.create("t1", request, Deadline.after(10), TurnReport())
        Response.model_validate(response)
        return response

    def stream_text(self, **body: Any) -> tuple[str, dict[str, Any]]:
        request = CreateResponse.model_validate({"model": "default", "stream": True, **body})
        stream = self.service.stream("t1", request, Deadline.after(10), TurnReport(stream=StreamReport(0.0)))
        events: list[dict[str, Any]] = []
        try:
            while (batch := stream.next_events()) is not None:
                events += batch
        finally:
            stream.close()
        assert events[-1]["type"] == "response.completed", events[-1]
        return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta"), events[-1]["response"]


# ---------------------------------------------------------------------------- Anthropic


@pytest.fixture
def anthropic():
    provider = AnthropicProvider(
        deployment(
            provider="anthropic",
            model="claude-sonnet-4-20250514",
            key_ref="anthropic-key",
            default_max_tokens=1024,
            name="claude",
        ),
        FakeKeys({"anthropic-key": "sk-ant-test"}),
        requests.Session(),
    )
    with responses.RequestsMock() as mock:
        yield Gateway(provider), mock


def sent(mock: responses.RequestsMock, index: int = -1) -> dict[str, Any]:
    return json.loads(mock.calls[index].request.body)


def test_anthropic_text_and_instructions(anthropic):
    gateway, mock = anthropic
    mock.add(responses.POST, ANTHROPIC_URL, json=anthropic_message([{"type": "text", "text": "Hello!"}]))
    response = gateway.create(input="Hi", instructions="Answer in one word.", max_output_tokens=50)
    assert sent(mock) == {
        "model": "claude-sonnet-4-20250514",
        "max_tokens": 50,
        "system": "Answer in one word.",
        "messages": [{"role": "user", "content": "Hi"}],
        "metadata": {"user_id": "t1"},  # the alias's default pass-through policy: user = the tenant
    }
    assert Response.model_validate(response).output_text == "Hello!"
    assert response["usage"]["input_tokens"] == 12 and response["usage"]["output_tokens"] == 6


def test_anthropic_tool_call_and_its_output_in_the_next_turn(anthropic):
    gateway, mock = anthropic
    call = {
        "type": "tool_use",
        "id": "toolu_01A09q90qw90lq917835lq9",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    mock.add(responses.POST, ANTHROPIC_URL, json=anthropic_message([call], "tool_use"))
    mock.add(responses.POST, ANTHROPIC_URL, json=anthropic_message([{"type": "text", "text": "Sunny."}]))
    first = gateway.create(input="Weather in Paris?", tools=TOOLS)
    item = first["output"][0]
    assert item["type"] == "function_call" and item["call_id"] == call["id"]
    assert json.loads(item["arguments"]) == {"city": "Paris"}
    assert sent(mock, 0)["tools"] == [
        {"name": "get_weather", "description": "The weather in a city", "input_schema": TOOLS[0]["parameters"]}
    ]
    output = {"type": "function_call_output", "call_id": call["id"], "output": '{"sky": "sunny"}'}
    second = gateway.create(input=[output], tools=TOOLS, previous_response_id=first["id"])
    assert sent(mock, 1)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [call]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": '{"sky": "sunny"}'}],
        },
    ]
    assert Response.model_validate(second).output_text == "Sunny."


def test_anthropic_json_schema_is_a_forced_tool_whose_input_is_the_output_text(anthropic):
    gateway, mock = anthropic
    verdict = {"type": "tool_use", "id": "toolu_01", "name": "verdict", "input": {"answer": "yes"}}
    mock.add(responses.POST, ANTHROPIC_URL, json=anthropic_message([verdict], "tool_use"))
    response = gateway.create(input="Is it?", text=JSON_FORMAT)
    body = sent(mock)
    assert body["tools"][0]["name"] == "verdict" and body["tools"][0]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": "verdict"}
    parsed = Response.model_validate(response)
    assert json.loads(parsed.output_text) == {"answer": "yes"} and parsed.status == "completed"
    assert parsed.text.format.type == "json_schema"


def test_anthropic_streamed_deltas_equal_the_non_streamed_text(anthropic):
    gateway, mock = anthropic
    words = ["The ", "answer ", "is ", "42."]
    mock.add(responses.POST, ANTHROPIC_URL, json=anthropic_message([{"type": "text", "text": "".join(words)}]))
    stream = anthropic_stream(
        [({"type": "text", "text": ""}, [{"type": "text_delta", "text": w} for w in words])], "end_turn"
    )
    mock.add(responses.POST, ANTHROPIC_URL, body=stream, content_type="text/event-stream")
    plain = Response.model_validate(gateway.create(input="Q")).output_text
    streamed, final = gateway.stream_text(input="Q")
    assert streamed == plain == Response.model_validate(final).output_text == "The answer is 42."

    # JSON mode streams the forced tool's input as text deltas
    pieces = ['{"answer"', ': "y', 'es"}']
    start = {"type": "tool_use", "id": "toolu_02", "name": "verdict", "input": {}}
    stream = anthropic_stream([(start, [{"type": "input_json_delta", "partial_json": p} for p in pieces])], "tool_use")
    mock.add(responses.POST, ANTHROPIC_URL, body=stream, content_type="text/event-stream")
    streamed, final = gateway.stream_text(input="Is it?", text=JSON_FORMAT)
    assert json.loads(streamed) == {"answer": "yes"} and final["output"][0]["type"] == "message"


# ---------------------------------------------------------------------------- Bedrock


class ConverseClient:
    """A bedrock-runtime client answering with Converse's documented shapes; records each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.streams: list[list[dict[str, Any]]] = []

    def converse(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(kwargs)
        return self.replies.pop(0)

    def converse_stream(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(kwargs)
        return {"stream": iter(self.streams.pop(0))}


def converse_reply(content: list[dict], stop_reason: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason,
        "usage": {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18},
        "metrics": {"latencyMs": 250},
        "ResponseMetadata": {"RequestId": "req-1", "HTTPStatusCode": 200},
    }


@pytest.fixture
def bedrock():
    client = ConverseClient()
    provider = BedrockProvider(
        deployment(provider="bedrock", model="anthropic.claude-3-5-sonnet-20240620-v1:0", name="claude-bedrock"), client
    )
    return Gateway(provider), client


def test_bedrock_text_and_instructions(bedrock):
    gateway, client = bedrock
    client.replies.append(converse_reply([{"text": "Hello!"}]))
    response = gateway.create(input="Hi", instructions="Answer in one word.", max_output_tokens=50, temperature=0.2)
    assert client.requests[-1] == {
        "modelId": "anthropic.claude-3-5-sonnet-20240620-v1:0",
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "system": [{"text": "Answer in one word."}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.2},
        "requestMetadata": {"user": "t1"},  # the alias's default pass-through policy: user = the tenant
    }
    assert Response.model_validate(response).output_text == "Hello!"


def test_bedrock_tool_call_and_its_output_next_turn_send_tool_config_even_without_tools(bedrock):
    gateway, client = bedrock
    use = {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather", "input": {"city": "Paris"}}
    client.replies += [converse_reply([{"toolUse": use}], "tool_use"), converse_reply([{"text": "Sunny."}])]
    first = gateway.create(input="Weather in Paris?", tools=TOOLS)
    assert client.requests[0]["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    assert first["output"][0]["call_id"] == use["toolUseId"]
    output = {"type": "function_call_output", "call_id": use["toolUseId"], "output": "sunny"}
    second = gateway.create(input=[output], previous_response_id=first["id"])  # tools not sent again
    request = client.requests[1]
    assert request["messages"] == [
        {"role": "user", "content": [{"text": "Weather in Paris?"}]},
        {"role": "assistant", "content": [{"toolUse": use}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}]},
    ]
    assert request["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": {"type": "object"}}}}]
    }
    assert Response.model_validate(second).output_text == "Sunny."


def test_bedrock_json_schema_is_a_forced_tool_whose_input_is_the_output_text(bedrock):
    gateway, client = bedrock
    client.replies.append(
        converse_reply([{"toolUse": {"toolUseId": "t1", "name": "verdict", "input": {"answer": "no"}}}], "tool_use")
    )
    response = gateway.create(input="Is it?", text=JSON_FORMAT)
    config = client.requests[-1]["toolConfig"]
    assert config["toolChoice"] == {"tool": {"name": "verdict"}}
    assert config["tools"][0]["toolSpec"]["inputSchema"] == {"json": SCHEMA}
    assert json.loads(Response.model_validate(response).output_text) == {"answer": "no"}


def test_bedrock_streamed_deltas_equal_the_non_streamed_text(bedrock):
    gateway, client = bedrock
    words = ["The ", "answer ", "is ", "42."]
    client.replies.append(converse_reply([{"text": "".join(words)}]))
    client.streams.append(
        [{"messageStart": {"role": "assistant"}}]
        + [{"contentBlockDelta": {"delta": {"text": w}, "contentBlockIndex": 0}} for w in words]
        + [
            {"contentBlockStop": {"contentBlockIndex": 0}},
            {"messageStop": {"stopReason": "end_turn"}},
            {
                "metadata": {
                    "usage": {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18},
                    "metrics": {"latencyMs": 9},
                }
            },
        ]
    )
    plain = Response.model_validate(gateway.create(input="Q")).output_text
    streamed, final = gateway.stream_text(input="Q")
    assert streamed == plain == Response.model_validate(final).output_text == "The answer is 42."
