"""The request model of ``POST /v1/responses`` (OpenAI Responses), and what we refuse.

Fields we honour are typed strictly (a wrong type is a 400 naming the field). OpenAI
fields this gateway cannot honour are refused with a 400 that names them — never
dropped silently; anything else unknown is an unrecognized parameter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from llm_gateway.chat.models import Temperature, UnitInterval
from llm_gateway.errors import InvalidRequest

# OpenAI Responses fields we know but cannot honour (a non-null value is refused by name).
UNSUPPORTED_FIELDS = (
    "reasoning",
    "prompt",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "top_logprobs",
    "max_tool_calls",
    "context_management",
    "conversation_options",
)
# Our defaults for fields OpenAI defines (what an absent field means).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0

Metadata = dict[Annotated[StrictStr, Field(max_length=64)], Annotated[StrictStr, Field(max_length=512)]]


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: StrictStr = Field(min_length=1, max_length=128)
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None

    def public(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": True if self.strict is None else self.strict,
        }

    def chat(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters or {"type": "object"}}
        if self.description is not None:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


class FunctionChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: StrictStr = Field(min_length=1)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    # json_schema only
    name: StrictStr | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None

    @model_validator(mode="after")
    def _schema_needs_name(self) -> TextFormat:
        if self.type == "json_schema" and (self.name is None or self.schema_ is None):
            raise ValueError("a 'json_schema' format needs 'name' and 'schema'")
        return self

    def public(self) -> dict[str, Any]:
        if self.type != "json_schema":
            return {"type": self.type}
        return {
            "type": "json_schema",
            "name": self.name,
            "schema": self.schema_,
            "description": self.description,
            "strict": self.strict,
        }

    def chat(self) -> dict[str, Any] | None:
        """The Chat Completions ``response_format`` (None for plain text)."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        schema: dict[str, Any] = {"name": self.name, "schema": self.schema_}
        if self.description is not None:
            schema["description"] = self.description
        if self.strict is not None:
            schema["strict"] = self.strict
        return {"type": "json_schema", "json_schema": schema}


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None  # the only verbosity every model honours


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr = Field(min_length=1, max_length=128)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_obfuscation: StrictBool | None = None  # we never add obfuscation padding: harmless


class CreateResponse(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[dict[str, Any]]
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Temperature | None = None
    top_p: UnitInterval | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextConfig | None = None
    metadata: Metadata | None = Field(None, max_length=16)
    store: StrictBool = True
    previous_response_id: StrictStr | None = Field(None, min_length=1, max_length=128)
    conversation: StrictStr | ConversationRef | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: StrictStr | None = Field(None, max_length=256)
    service_tier: StrictStr | None = Field(None, max_length=32)  # the alias's pass-through policy decides
    safety_identifier: StrictStr | None = Field(None, max_length=256)
    stream: StrictBool = False
    background: StrictBool | None = None  # run on the jobs path (responses/background.py)
    stream_options: StreamOptions | None = None
    include: list[StrictStr] | None = None

    def check_supported(self) -> None:
        """Refuse what we cannot honour, naming the field (before any read, write or upstream call)."""
        extra = self.model_extra or {}
        for name in UNSUPPORTED_FIELDS:
            if extra.get(name) is not None:
                raise InvalidRequest(
                    f"'{name}' is not supported by this gateway; remove it.", code="unsupported_parameter", param=name
                )
        for name in sorted(extra):
            if name not in UNSUPPORTED_FIELDS:
                raise InvalidRequest(f"Unrecognized parameter: '{name}'.", code="unknown_parameter", param=name)
        if self.include:
            raise InvalidRequest(
                "'include' is not supported by this gateway (it has no extra output data to include).",
                code="unsupported_parameter",
                param="include",
            )
        if self.conversation is not None and self.previous_response_id is not None:
            raise InvalidRequest(
                "'conversation' and 'previous_response_id' cannot be used together; pass one of them.",
                param="conversation",
            )
        if self.background and not self.store:
            raise InvalidRequest(
                "A background response is stored (it is read back with GET); 'background' needs 'store': true.",
                param="background",
            )
        if isinstance(self.input, list) and not self.input:
            raise InvalidRequest("'input' must hold at least one item.", param="input")
        self.function_tools()  # validates every tool

    def function_tools(self) -> list[FunctionTool]:
        tools: list[FunctionTool] = []
        for index, tool in enumerate(self.tools or ()):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise InvalidRequest(
                    f"Tool type '{str(kind)[:64]}' is not supported by this gateway; only 'function' tools are.",
                    code="unsupported_parameter",
                    param=f"tools[{index}].type",
                )
            try:
                tools.append(FunctionTool.model_validate(tool))
            except ValueError as exc:
                raise InvalidRequest(
                    f"Invalid function tool: {str(exc).splitlines()[-1][:200]}", param=f"tools[{index}]"
                ) from None
        return tools

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation

    @property
    def text_format(self) -> TextFormat:
        return (self.text.format if self.text else None) or TextFormat.model_validate({"type": "text"})
