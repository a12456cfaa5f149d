"""Pydantic models of the OpenAI Chat Completions wire format (and our extension).

Fields we interpret are typed strictly, so wrong types are rejected with a 400.
Everything else (``tools``, ``response_format``, ``seed``, ``logprobs`` …) is kept as given and
passed through to the upstream unchanged — except ``service_tier``, ``store``, ``metadata`` and
``user``, which follow the alias's pass-through policy (upstream/passthrough.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictFloat, StrictInt, StrictStr

from llm_gateway.upstream.aliases import ModelAlias
from llm_gateway.wire import message_text as message_text

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


# A JSON number (float or int, never a string or bool) within bounds. The bounds sit on each member
# of the union so the JSON Schema says `minimum`/`maximum` (a bound on the union itself comes out as
# pydantic's non-standard `ge`/`le`).
Temperature = Annotated[StrictFloat, Field(ge=0, le=2)] | Annotated[StrictInt, Field(ge=0, le=2)]
UnitInterval = Annotated[StrictFloat, Field(ge=0, le=1)] | Annotated[StrictInt, Field(ge=0, le=1)]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Role
    content: StrictStr | list[dict[str, Any]] | None = None
    name: StrictStr | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: StrictStr | None = None

    def wire(self) -> dict[str, Any]:
        """The message as the upstream receives it (no nulls we did not get)."""
        return self.model_dump(exclude_none=True)

    def text(self) -> str:
        """All text in the message, for token counting."""
        return message_text(self.wire())


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"model": "default", "messages": [{"role": "user", "content": "Hello"}]},
                {"model": "default", "messages": [{"role": "user", "content": "Hello"}], "stream": True},
            ]
        },
    )

    model: StrictStr = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    n: StrictInt | None = Field(None, ge=1, le=128)
    stop: StrictStr | list[StrictStr] | None = None
    # --- llm-gateway extension -------------------------------------------------
    conversation_id: StrictStr | None = Field(None, min_length=1, max_length=128)
    # Set by the Responses view, never from the wire: a system prompt for this turn only (OpenAI's
    # ``instructions``), sent first and not stored as the conversation's prompt.
    _instructions: str | None = PrivateAttr(default=None)

    @property
    def instructions(self) -> str | None:
        return self._instructions

    def with_instructions(self, text: str | None) -> ChatCompletionRequest:
        self._instructions = text
        return self

    def completion_budget(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def upstream_body(self, alias: ModelAlias, messages: list[dict[str, Any]], tenant: str) -> dict[str, Any]:
        """The request as the upstream receives it: our extension removed, the alias's pass-through
        policy applied (``service_tier``, ``store``, ``metadata``, ``user``), the alias's name as model."""
        body = self.model_dump(exclude_none=True, exclude={"conversation_id", "messages", "model"})
        body["model"] = alias.name
        body["messages"] = messages
        return alias.pass_through.apply(body, tenant)


# OpenAI's metadata bounds: 16 pairs, keys up to 64 characters, values up to 512
Metadata = Annotated[
    dict[Annotated[StrictStr, Field(max_length=64)], Annotated[StrictStr, Field(max_length=512)]],
    Field(max_length=16),
]


class CreateConversation(BaseModel):
    """OpenAI's ``conversations.create`` body (``metadata``, up to 20 ``items``); ``model`` and
    ``system`` are our extensions."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"model": "default", "metadata": {"topic": "demo"}}]}
    )

    metadata: Metadata | None = None
    # validated item by item by conversations.items.parse_items (a 400 names the item and field)
    items: list[Any] | None = Field(default=None, description="Up to 20 input items.")
    model: StrictStr | None = None
    system: StrictStr | None = None


class UpdateConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: Metadata


class CreateItems(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[Any] = Field(description="Up to 20 input items (messages, function calls and outputs).")


# Names pydantic gives the member of a union it tried ("float", "list[str]", "function-after[…]"):
# they appear in an error's location but are not fields of the request.
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})
_LOCATION_ROOTS = frozenset({"body", "query", "path", "header"})


def validation_reason(errors: Sequence[Mapping[str, Any]], prefix: str = "") -> tuple[str, str | None]:
    """A readable message naming the offending field, and that field as an OpenAI ``param``.

    Built from pydantic's error list; never echoes the offending value (it may be a prompt).
    """
    if not errors:
        return "Invalid request.", prefix or None
    first = errors[0]
    kind = first.get("type")
    if kind == "json_invalid":
        return "We could not parse the JSON body of your request.", None
    if kind == "model_attributes_type" and len(first.get("loc", ())) <= 1:
        return "The request body must be a JSON object.", None
    param = prefix
    for index, part in enumerate(first.get("loc", ())):
        part = str(part)
        if index == 0 and part in _LOCATION_ROOTS:
            continue
        if part in _UNION_TAGS or "[" in part or "-" in part:
            break
        param += f"[{part}]" if part.isdigit() else (f".{part}" if param else part)
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param or None
    if kind == "extra_forbidden":
        return f"Unrecognized parameter: '{param}'.", param or None
    return f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param or None


# --------------------------------------------------------------------------- responses
# OpenAI's Chat Completions response shapes, as documented in /openapi.json. Lenient where OpenAI
# is (an upstream's extra fields pass through), exact in the fields every SDK reads.


class _OpenShape(BaseModel):
    model_config = ConfigDict(extra="allow")


class CompletionUsage(_OpenShape):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_OpenShape):
    role: Literal["assistant"]
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    refusal: str | None = None


class ChatCompletionChoice(_OpenShape):
    index: int
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(_OpenShape):
    """OpenAI's ``chat.completion``; ``conversation_id`` is the gateway's extension."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None
    conversation_id: str | None = None


class ChatCompletionChunk(_OpenShape):
    """One ``data:`` event of a streamed completion (the stream ends with ``data: [DONE]``)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: CompletionUsage | None = None
    conversation_id: str | None = None
