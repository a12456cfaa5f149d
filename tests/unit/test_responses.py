"""ResponseService over fakes: the Response object, chains and forks, bad input, streaming events.

Every body and event is validated with openai-python's own types, and the fields the SDK
requires are checked to be present (not filled in by defaults).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from llm_gateway.chat.service import ChatService, TurnReport
from llm_gateway.chat.streaming import StreamReport
from llm_gateway.deadline import Deadline
from llm_gateway.errors import ContextLengthExceeded, InvalidRequest, NotFound
from llm_gateway.responses.models import CreateResponse
from llm_gateway.responses.service import ResponseService
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import Deployment, ModelAlias, Routing
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy
from llm_gateway.upstream.router import Router
from tests.fakes import InMemoryResponseStore, ScriptedProvider

EVENTS = TypeAdapter(ResponseStreamEvent)
ITEMS = TypeAdapter(ResponseItem)


class Setup:
    def __init__(self, script: list[Any] | None = None, context_window: int = 128_000, **alias: Any) -> None:
        self.provider = ScriptedProvider("d1", script)
        policy = RetryPolicy(max_attempts=1, backoff_base=0.1, backoff_max=0.1, budget=RetryBudget(1.0, 100.0))
        router = Router({"d1": self.provider}, policy, connect_timeout=1, read_timeout=5)
        deployment = Deployment(name="d1", model="m", base_url="http://x.test/v1", context_window=context_window)
        routing = Routing({"default": ModelAlias(name="default", deployments=[deployment], **alias)})
        self.store = InMemoryResponseStore()
        self.chat = ChatService(None, routing, router, Settings())  # type: ignore[arg-type]
        self.service = ResponseService(self.chat, self.store)

    def create(self, tenant: str = "t1", **body: Any) -> dict[str, Any]:
        request = CreateResponse.model_validate({"model": "default", **body})
        return self.service.create(tenant, request, Deadline.after(10), TurnReport())

    def stream(self, tenant: str = "t1", **body: Any) -> list[dict[str, Any]]:
        request = CreateResponse.model_validate({"model": "default", "stream": True, **body})
        report = TurnReport(stream=StreamReport(0.0))
        stream = self.service.stream(tenant, request, Deadline.after(10), report)
        events: list[dict[str, Any]] = []
        try:
            while (batch := stream.next_events()) is not None:
                events += batch
        finally:
            stream.close()
        return events


def parsed(body: dict[str, Any]) -> Response:
    """The body as the SDK's Response, with every field the SDK requires actually sent."""
    response = Response.model_validate(body)
    required = {name for name, f in Response.model_fields.items() if f.is_required()}
    assert required <= response.model_fields_set
    assert (
        response.usage is None or {"input_tokens_details", "output_tokens_details"} <= response.usage.model_fields_set
    )
    return response


def upstream_messages(setup: Setup, index: int = -1) -> list[tuple[str, str]]:
    return [(m["role"], m.get("content") or "") for m in setup.provider.bodies[index]["messages"]]


def test_a_stateless_response_is_the_full_response_object_and_is_stored():
    s = Setup(["Hello there"])
    body = s.create(input="Hi", instructions="Be brief", metadata={"k": "v"})
    response = parsed(body)
    assert response.output_text == "Hello there"
    assert response.status == "completed" and response.object == "response"
    assert response.id.startswith("resp_") and response.store is True
    assert body["tools"] == [] and body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    assert body["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert body["usage"]["output_tokens_details"] == {"reasoning_tokens": 0}
    assert body["text"] == {"format": {"type": "text"}, "verbosity": "medium"} and body["truncation"] == "disabled"
    assert upstream_messages(s) == [("system", "Be brief"), ("user", "Hi")]
    assert s.service.get("t1", response.id) == body
    listed = s.service.input_items("t1", response.id)
    assert [ITEMS.validate_python(i).type for i in listed["data"]] == ["message"]
    assert listed["data"][0]["content"] == [{"type": "input_text", "text": "Hi"}]


def test_store_false_writes_nothing_and_a_follow_up_naming_it_is_404_before_any_upstream_call():
    s = Setup()
    first = s.create(input="Hi", store=False)
    assert s.store.writes == 0
    with pytest.raises(NotFound) as info:
        s.create(input="again", previous_response_id=first["id"])
    assert info.value.param == "previous_response_id" and "store=false" in info.value.message
    assert len(s.provider.bodies) == 1
    with pytest.raises(NotFound):
        s.service.get("t1", first["id"])


def test_a_chain_sends_its_turns_in_order_and_a_fork_only_its_own_branch():
    s = Setup(["A1", "A2", "A3", "F"])
    r1 = s.create(input="Q1")
    r2 = s.create(input="Q2", previous_response_id=r1["id"])
    r3 = s.create(input="Q3", previous_response_id=r2["id"])
    assert upstream_messages(s) == [
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
        ("assistant", "A2"),
        ("user", "Q3"),
    ]
    assert r3["previous_response_id"] == r2["id"]
    s.create(input="fork", previous_response_id=r1["id"])
    assert upstream_messages(s) == [("user", "Q1"), ("assistant", "A1"), ("user", "fork")]


def test_another_tenants_response_is_404_on_every_route():
    s = Setup()
    r1 = s.create(input="Q1")
    with pytest.raises(NotFound):
        s.create(tenant="t2", input="x", previous_response_id=r1["id"])
    for call in (s.service.get, s.service.delete, s.service.input_items):
        with pytest.raises(NotFound):
            call("t2", r1["id"])
    assert len(s.provider.bodies) == 1


def test_a_chain_read_costs_the_same_at_depth_300_as_at_depth_10():
    s = Setup(history_max_messages=20)
    previous = None
    for _ in range(300):
        previous = s.create(input="q", **({"previous_response_id": previous} if previous else {}))["id"]
    # each turn is 2 messages: the budget (20 messages) reaches 10 responses (read: the parent and
    # the ancestors its own budget reached), whatever the depth
    assert s.store.chain_reads[30] == s.store.chain_reads[-1] == max(s.store.chain_reads) == 11
    assert len(s.provider.bodies[-1]["messages"]) == 21


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "conversation": "conv_1", "previous_response_id": "resp_1"}, "conversation"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "x", "reasoning": {"effort": "high"}}, "reasoning"),
        ({"input": "x", "background": True, "store": False}, "background"),
        ({"input": "x", "frobnicate": 1}, "frobnicate"),
        (
            {"input": [{"type": "message", "role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_with_no_write_and_no_upstream_call(body, param):
    s = Setup()
    with pytest.raises(InvalidRequest) as info:
        s.create(**body)
    assert info.value.param == param
    assert s.store.writes == 0 and s.provider.bodies == []


def test_tools_and_json_schema_reach_the_chat_request():
    s = Setup()
    s.create(input="no tools", parallel_tool_calls=False, tool_choice="auto")
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(s.provider.bodies[-1])
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = s.create(
        input="x",
        tools=[{"type": "function", "name": "lookup", "parameters": schema}],
        tool_choice={"type": "function", "name": "lookup"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
        max_output_tokens=50,
        temperature=0.5,
    )
    sent = s.provider.bodies[-1]
    assert sent["tools"] == [{"type": "function", "function": {"name": "lookup", "parameters": schema}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert sent["parallel_tool_calls"] is False and sent["max_completion_tokens"] == 50
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": schema, "strict": True},
    }
    response = parsed(body)
    assert response.tools[0].name == "lookup" and response.text.format.type == "json_schema"


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}


def test_a_function_call_and_its_output_round_trip_through_a_chain():
    s = Setup([{"message": {"content": None, "tool_calls": [CALL]}, "finish_reason": "tool_calls"}, "done"])
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    r1 = parsed(s.create(input="find x", tools=tools))
    call = r1.output[0]
    assert call.type == "function_call" and call.call_id == "call_1" and call.arguments == '{"q": "x"}'
    output = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    s.create(input=[output], tools=tools, previous_response_id=r1.id)
    sent = s.provider.bodies[-1]["messages"]
    assert sent[1] == {"role": "assistant", "tool_calls": [CALL]}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}


def test_truncation_disabled_refuses_a_history_that_overflows_and_auto_trims_it():
    s = Setup(context_window=1300, history_max_tokens=5000)
    long = "word " * 200
    first = s.create(input=long, max_output_tokens=1000)
    with pytest.raises(ContextLengthExceeded):
        s.create(input=long, previous_response_id=first["id"], max_output_tokens=1000)
    s.create(input=long, previous_response_id=first["id"], max_output_tokens=1000, truncation="auto")
    assert len(s.provider.bodies[-1]["messages"]) < 3


# ---------------------------------------------------------------------------- streaming


def event_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def validated(events: list[dict[str, Any]]) -> None:
    for event in events:
        typed = EVENTS.validate_python(event)
        assert type(typed).model_fields.keys() >= set(event) - {"type"}
        required = {n for n, f in type(typed).model_fields.items() if f.is_required()}
        assert required <= typed.model_fields_set
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_streamed_text_response_sends_openais_events_in_order_and_stores_what_it_streamed():
    s = Setup(["Hello streamed world"])
    events = s.stream(input="Hi")
    validated(events)
    assert event_types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert text == "Hello streamed world" == parsed(final).output_text
    assert s.service.get("t1", final["id"]) == final
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []


def test_a_streamed_function_call_sends_argument_deltas_and_done():
    s = Setup([{"message": {"content": None, "tool_calls": [CALL]}, "finish_reason": "tool_calls"}])
    events = s.stream(input="find", tools=[{"type": "function", "name": "lookup"}])
    validated(events)
    assert event_types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    item = events[-1]["response"]["output"][0]
    assert item["call_id"] == "call_1" and json.loads(item["arguments"]) == {"q": "x"}


def test_a_stream_cut_mid_reply_ends_with_response_failed_and_stores_nothing():
    s = Setup([{"text": "one two three four", "cut": 3}])
    events = s.stream(input="Hi")
    validated(events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"] == "server_error"
    assert s.store.writes == 0


def test_a_stateless_client_can_replay_a_responses_output_as_input():
    """Agents that keep their own history (store=false) send our output items back verbatim."""
    s = Setup([{"message": {"content": "Let me check.", "tool_calls": [CALL]}, "finish_reason": "tool_calls"}, "42"])
    first = s.create(input="find x", store=False, tools=[{"type": "function", "name": "lookup"}])
    assert [i["type"] for i in first["output"]] == ["message", "function_call"]
    history = [{"role": "user", "content": "find x"}, *first["output"]]
    history.append({"type": "function_call_output", "call_id": "call_1", "output": "42"})
    second = s.create(input=history, store=False, tools=[{"type": "function", "name": "lookup"}])
    assert parsed(second).output_text == "42"
    assert s.provider.bodies[-1]["messages"] == [
        {"role": "user", "content": "find x"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]


def test_a_streamed_text_then_function_call_closes_each_item_before_the_next():
    reply = {"message": {"content": "Let me check.", "tool_calls": [CALL]}, "finish_reason": "tool_calls"}
    s = Setup([reply])
    events = s.stream(input="find", tools=[{"type": "function", "name": "lookup"}])
    validated(events)
    assert event_types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,  # "Let ", "me ", "check."
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.done"] == [0, 1]
    assert s.service.get("t1", final["id"]) == final
    # the next turn's history holds the streamed reply exactly as a non-streamed one would
    s.provider.script.append("ok")
    s.create(
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "42"}], previous_response_id=final["id"]
    )
    assert s.provider.bodies[-1]["messages"][1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [CALL],
    }
