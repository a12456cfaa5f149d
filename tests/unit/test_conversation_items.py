"""Conversation items: OpenAI's shapes (checked with openai-python's own types) and the two conversions."""

from __future__ import annotations

from typing import Any

import pytest
from openai import BaseModel as OpenAIModel
from openai.types.conversations import ConversationItem, Message
from openai.types.responses import ResponseFunctionToolCallItem, ResponseFunctionToolCallOutputItem
from pydantic import TypeAdapter

from llm_gateway.conversations.ids import ItemRef, ids_for, item_id, item_position, parse_item_id
from llm_gateway.conversations.items import check_representable, items_to_messages, message_to_items, parse_items
from llm_gateway.errors import InvalidRequest

CONV = "conv_" + "a" * 32
SDK_ITEM: TypeAdapter[Any] = TypeAdapter(ConversationItem)


def required_fields(model: type[OpenAIModel]) -> set[str]:
    return {name for name, info in model.model_fields.items() if info.is_required()}


def as_sdk(item: Any) -> Any:
    """Parse our item with openai-python's ConversationItem union; no required field may be missing."""
    body = item.model_dump()
    parsed = SDK_ITEM.validate_python(body)
    missing = required_fields(type(parsed)) - parsed.model_fields_set
    assert not missing, (body, missing)
    assert parsed.model_dump(exclude_unset=True) == body  # nothing of ours is unknown to the SDK type
    return parsed


def items_of(body: dict[str, Any], seq: int = 0) -> list[Any]:
    return message_to_items(body, ids_for(CONV, seq))


def test_user_text_message_is_an_input_text_message_item() -> None:
    (item,) = items_of({"role": "user", "content": "hello"})
    parsed = as_sdk(item)
    assert isinstance(parsed, Message)
    assert parsed.role == "user" and parsed.status == "completed" and parsed.id.startswith("msg_")
    assert [(c.type, c.text) for c in parsed.content] == [("input_text", "hello")]


def test_assistant_text_is_output_text_with_empty_annotations() -> None:
    (item,) = items_of({"role": "assistant", "content": "hi there"})
    parsed = as_sdk(item)
    assert parsed.role == "assistant"
    assert parsed.content[0].type == "output_text" and parsed.content[0].annotations == []


@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_and_developer_messages(role: str) -> None:
    (item,) = items_of({"role": role, "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    parsed = as_sdk(item)
    assert parsed.role == role and [c.text for c in parsed.content] == ["a", "b"]


def test_image_part_is_input_image() -> None:
    body = {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        ],
    }
    (item,) = items_of(body)
    parsed = as_sdk(item)
    assert parsed.content[1].type == "input_image"
    assert parsed.content[1].image_url == "data:image/png;base64,iVBORw0KGgo=" and parsed.content[1].detail == "low"


def test_assistant_tool_calls_become_function_call_items_and_tool_messages_outputs() -> None:
    body = {
        "role": "assistant",
        "content": "checking",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": "{}"}},
        ],
    }
    message, first, second = (as_sdk(i) for i in items_of(body, seq=7))
    assert isinstance(message, Message) and message.content[0].text == "checking"
    assert isinstance(first, ResponseFunctionToolCallItem) and isinstance(second, ResponseFunctionToolCallItem)
    assert (first.call_id, first.name, first.arguments, first.status) == (
        "call_1",
        "weather",
        '{"city":"Oslo"}',
        "completed",
    )
    assert second.call_id == "call_2" and first.id != second.id and first.id.startswith("fc_")
    (output,) = (as_sdk(i) for i in items_of({"role": "tool", "tool_call_id": "call_1", "content": "sunny"}, seq=8))
    assert isinstance(output, ResponseFunctionToolCallOutputItem)
    assert (output.call_id, output.output, output.status) == ("call_1", "sunny", "completed")


def test_assistant_with_only_tool_calls_has_no_message_item() -> None:
    body = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert [i.type for i in items_of(body)] == ["function_call"]


def test_refusal_and_incomplete_status() -> None:
    items = message_to_items(
        {"role": "assistant", "content": None, "refusal": "no"}, ids_for(CONV, 1), status="incomplete"
    )
    parsed = as_sdk(items[0])
    assert parsed.status == "incomplete" and parsed.content[0].type == "refusal" and parsed.content[0].refusal == "no"


def test_item_ids_are_stable_distinct_and_scoped_to_their_conversation() -> None:
    a = items_of({"role": "user", "content": "x"}, seq=3)[0].id
    assert a == items_of({"role": "user", "content": "other text"}, seq=3)[0].id  # ids name a place
    assert a != items_of({"role": "user", "content": "x"}, seq=4)[0].id
    assert parse_item_id(CONV, a) == ItemRef("msg", 3, None)
    assert parse_item_id("conv_" + "b" * 32, a) is None  # another conversation's id is not one of ours
    fc = item_id(CONV, 12, "fc", "call_9")
    ref = parse_item_id(CONV, fc)
    assert ref is not None and ref.kind == "fc" and ref.seq == 12 and ref.call
    for forged in ["", "msg_", "msg_xyz", a + "0", "fc_" + a[4:], "fco_" + a[4:] + "deadbeef", a.upper()]:
        assert parse_item_id(CONV, forged) is None, forged
    items = items_of(
        {
            "role": "assistant",
            "content": "t",
            "tool_calls": [{"id": "call_9", "function": {"name": "f", "arguments": ""}}],
        },
        seq=12,
    )
    assert item_position(fc, items) == 1 and item_position(a, items) == -1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"role": "function", "name": "f", "content": "x"}, "m.role"),
        ({"role": "user", "content": "x", "name": "bob"}, "m.name"),
        ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "m.content[0].type"),
        ({"role": "user", "content": [{"type": "file", "file": {}}]}, "m.content[0].type"),
        ({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}, "m.content[0].type"),
        ({"role": "assistant", "content": "x", "tool_calls": [{"id": "c", "type": "custom"}]}, "m.tool_calls[0]"),
        ({"role": "tool", "content": "x"}, "m"),
    ],
)
def test_unrepresentable_chat_messages_are_a_400_naming_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        check_representable(body, "m")
    assert err.value.param == param and param in err.value.message


# ---- input items -> chat messages


def convert(raw: list[Any]) -> list[dict[str, Any]]:
    return [m.body for m in items_to_messages(parse_items(raw))]


def test_easy_and_typed_input_messages() -> None:
    assert convert(
        [
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}],
            },
        ]
    ) == [
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": "be brief"},
        {"role": "assistant", "content": "ok"},
    ]


def test_function_calls_join_the_assistant_message_before_them() -> None:
    messages = convert(
        [
            {"role": "assistant", "content": "let me look"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "1"},
            {"type": "function_call_output", "call_id": "c2", "output": "2"},
            {"type": "function_call", "call_id": "c3", "name": "h", "arguments": "[]"},
        ]
    )
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool", "assistant"]
    assert [c["id"] for c in messages[0]["tool_calls"]] == ["c1", "c2"]
    assert messages[0]["tool_calls"][0] == {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
    }
    assert messages[1] == {"role": "tool", "tool_call_id": "c1", "content": "1"}
    assert messages[3] == {"role": "assistant", "content": None, "tool_calls": [messages[3]["tool_calls"][0]]}


def test_image_input_part_becomes_an_image_url_part() -> None:
    (message,) = convert(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "high"},
                ],
            }
        ]
    )
    assert message["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}},
    ]


def test_round_trip_chat_to_items_to_chat() -> None:
    history = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "image_url", "image_url": {"url": "u"}}]},
        {
            "role": "assistant",
            "content": "a",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "r"},
        {"role": "assistant", "content": "done"},
    ]
    items = [i.model_dump() for seq, m in enumerate(history) for i in items_of(m, seq)]
    for item in items:
        SDK_ITEM.validate_python(item)
    assert convert(items) == history  # listed items can be sent back as they are


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([{"type": "reasoning", "summary": []}], "items[0].type"),
        ([{"type": "item_reference", "id": "msg_1"}], "items[0].type"),
        ([{"role": "user", "content": "x"}, {"type": "message", "role": "tool", "content": "x"}], "items[1].role"),
        ([{"type": "message", "role": "user"}], "items[0].content"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "items[0].call_id"),
        ([{"type": "function_call_output", "call_id": "c", "output": 5}], "items[0].output"),
        ([{"role": "user", "content": [{"type": "output_text", "text": "x"}]}], "items[0].content[0].type"),
        ([{"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}], "items[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}], "items[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "items[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_text", "text": "x", "extra": 1}]}], "items[0].content[0].extra"),
        (
            [{"role": "assistant", "content": [{"type": "output_text", "text": "x", "annotations": [{"type": "u"}]}]}],
            "items[0].content[0].annotations",
        ),
        ([{"role": "user", "content": "x"}] * 21, "items"),
        ("hello", "items"),
        (["hello"], "items[0]"),
    ],
)
def test_bad_input_items_are_a_400_naming_the_field(raw: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_items(raw)
    assert err.value.param == param and param in err.value.message


def test_a_tool_message_with_text_parts_is_one_output() -> None:
    body = {
        "role": "tool",
        "tool_call_id": "c",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    (item,) = items_of(body)
    assert as_sdk(item).output == "ab"
