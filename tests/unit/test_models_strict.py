"""The Chat Completions models: strict where we interpret, pass-through where we do not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llm_gateway.chat.models import ChatCompletionRequest, ChatMessage, CreateConversation, message_text
from llm_gateway.errors import InvalidRequest
from llm_gateway.upstream.aliases import ModelAlias

USER = {"role": "user", "content": "hi"}


def request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "default", "messages": [USER], **fields})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "0.5"),
        ("temperature", "hot"),
        ("temperature", True),
        ("temperature", 2.5),
        ("temperature", -1),
        ("top_p", 1.5),
        ("stream", "yes"),
        ("stream", "true"),
        ("stream", 1),
        ("max_tokens", "10"),
        ("max_tokens", 1.5),
        ("max_tokens", 0),
        ("max_completion_tokens", -3),
        ("n", 0),
        ("n", "2"),
        ("stop", 5),
        ("stop", ["a", 1]),
        ("model", 42),
        ("model", ""),
        ("messages", "hi"),
        ("messages", []),
        ("messages", {"role": "user"}),
        ("conversation_id", 7),
        ("conversation_id", ""),
        ("conversation_id", "c" * 129),
        ("stream_options", {"include_usage": "yes"}),
    ],
)
def test_wrong_types_and_values_are_rejected(field, value):
    with pytest.raises(ValidationError):
        request(**{field: value})


@pytest.mark.parametrize(
    "message",
    [
        {"role": "wizard", "content": "hi"},
        {"content": "hi"},
        {"role": "user", "content": 5},
        {"role": "user", "content": "x", "name": 3},
        {"role": "tool", "content": "x", "tool_call_id": 1},
        "hi",
    ],
)
def test_bad_messages_are_rejected(message):
    with pytest.raises(ValidationError):
        request(messages=[message])


def test_valid_values_are_kept():
    r = request(temperature=0, top_p=1, stream=False, max_tokens=5, n=1, stop=["x"], conversation_id="conv_1")
    assert (r.temperature, r.max_tokens, r.stop, r.conversation_id) == (0, 5, ["x"], "conv_1")
    for role in ("system", "developer", "user", "assistant", "tool", "function"):
        request(messages=[{"role": role, "content": "x"}])
    request(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}],
            }
        ]
    )


def test_fields_we_do_not_interpret_pass_through_and_our_extension_does_not():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = request(
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        seed=7,
        logprobs=True,
        user="u1",
        conversation_id="conv_1",
        temperature=0.2,
    )
    forwarding = alias("gpt-real", user="forward")
    body = r.upstream_body(forwarding, [USER], "tenant-a")
    assert body == {
        "model": "gpt-real",
        "messages": [USER],
        "stream": False,
        "temperature": 0.2,
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "seed": 7,
        "logprobs": True,
        "user": "u1",
    }
    assert "conversation_id" not in body


def alias(name: str = "gpt-real", **rules: str) -> ModelAlias:
    return ModelAlias(name=name, deployments=[{"name": "d", "model": "m"}], pass_through=rules)


PROVIDER_FIELDS = {"service_tier": "priority", "store": True, "metadata": {"k": "v"}, "user": "end-user-7"}


def test_pass_through_defaults_drop_what_acts_at_the_provider_and_name_the_tenant():
    body = request(**PROVIDER_FIELDS, seed=1).upstream_body(alias(), [USER], "tenant-a")
    assert body == {"model": "gpt-real", "messages": [USER], "stream": False, "seed": 1, "user": "tenant-a"}
    # the tenant is named even when the client sent no user
    assert request().upstream_body(alias(), [USER], "tenant-b")["user"] == "tenant-b"


def test_pass_through_forward_and_drop_per_field():
    rules = {"service_tier": "forward", "store": "forward", "metadata": "drop", "user": "drop"}
    body = request(**PROVIDER_FIELDS).upstream_body(alias(**rules), [USER], "tenant-a")
    assert (body["service_tier"], body["store"]) == ("priority", True)
    assert "metadata" not in body and "user" not in body


@pytest.mark.parametrize("field", sorted(PROVIDER_FIELDS))
def test_pass_through_reject_is_a_400_naming_the_field(field):
    strict = alias(**{field: "reject"})
    with pytest.raises(InvalidRequest) as caught:
        strict.pass_through.check(request(**PROVIDER_FIELDS).model_extra or {}, strict.name)
    assert caught.value.param == field and caught.value.code == "unsupported_parameter"
    strict.pass_through.check(request(**{field: None}).model_extra or {}, strict.name)  # null: absent
    strict.pass_through.check(request().model_extra or {}, strict.name)


def test_pass_through_rules_are_validated():
    with pytest.raises(ValidationError):
        alias(store="tenant")  # only user may be set to the tenant
    with pytest.raises(ValidationError):
        alias(temperature="drop")  # not a provider-side field


def test_message_wire_form_keeps_extra_fields_and_drops_nulls():
    calls = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    m = ChatMessage.model_validate(
        {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls, "audio": {"id": "a"}}
    )
    assert m.wire() == {"role": "assistant", "audio": {"id": "a"}, "tool_calls": calls}


def test_message_text_collects_every_text_part():
    assert (
        message_text(
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}],
            }
        )
        == "a\nb"
    )
    call = {"function": {"name": "f", "arguments": "{1}"}}
    assert message_text({"role": "assistant", "tool_calls": [call]}) == "f\n{1}"
    assert message_text({"role": "user"}) == ""


def test_completion_budget_prefers_max_completion_tokens():
    assert request().completion_budget(100) == 100
    assert request(max_tokens=7).completion_budget(100) == 7
    assert request(max_tokens=7, max_completion_tokens=9).completion_budget(100) == 9


def test_create_conversation_is_strict_and_bounded():
    assert CreateConversation.model_validate({}).model == None  # noqa: E711
    for bad in (
        {"colour": "red"},
        {"system": 5},
        {"metadata": {"k": 1}},
        {"metadata": {"k": "v" * 513}},
        {"metadata": {"k" * 65: "v"}},
        {"metadata": {f"k{i}": "v" for i in range(17)}},
    ):
        with pytest.raises(ValidationError):
            CreateConversation.model_validate(bad)
    CreateConversation.model_validate({"metadata": {f"{i:064d}": "v" * 512 for i in range(16)}})
