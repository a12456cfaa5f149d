"""Helpers shared by the providers that translate OpenAI Chat Completions to another API.

Rule: a request field the target API cannot honour is refused with a 400 that names
it (:func:`refuse`); nothing is dropped silently.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from llm_gateway.errors import InvalidRequest
from llm_gateway.providers.base import Usage
from llm_gateway.wire import chat_completion

# The request fields the translating providers (Anthropic, Bedrock) honour; any other is refused.
SUPPORTED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "n",
        "response_format",
    }
)
MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "tool_call_id"})


def refuse(provider: str, param: str, what: str | None = None) -> InvalidRequest:
    detail = what or f"'{param}'"
    return InvalidRequest(
        f"{detail} is not supported by this model's provider ({provider}); remove it or use another model.",
        code="unsupported_parameter",
        param=param,
    )


def check_params(body: dict[str, Any], provider: str, supported: frozenset[str] = SUPPORTED) -> None:
    """Refuse any request field outside ``supported`` (nulls count as absent)."""
    for key in sorted(body):
        if key not in supported and body[key] is not None:
            raise refuse(provider, key)
    n = body.get("n")
    if n not in (None, 1):
        raise refuse(provider, "n", "'n' greater than 1")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict) or response_format.get("type") != "text"):
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        raise refuse(provider, "response_format", f"response_format '{kind}'")
    temperature = body.get("temperature")
    if provider == "anthropic" and temperature is not None and temperature > 1:
        raise InvalidRequest(
            f"'temperature' must be between 0 and 1 for this model's provider ({provider}).", param="temperature"
        )


def max_tokens(body: dict[str, Any], default: int) -> int:
    return body.get("max_completion_tokens") or body.get("max_tokens") or default


def stop_list(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def text_of(content: Any, provider: str, param: str) -> str:
    """Text-only content (system prompts, tool results) as one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise refuse(provider, f"{param}[{j}]", f"content part '{kind}' here")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def data_url(url: str, param: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:`` URL."""
    header, sep, data = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequest("An image must be a base64 data URL (data:image/png;base64,...).", param=param)
    media_type = header[5:-7]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("The image data URL is not valid base64.", param=param) from None
    return media_type, data


def tool_arguments(call: dict[str, Any], param: str) -> dict[str, Any]:
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param)
    return value


def function_tools(body: dict[str, Any], provider: str) -> list[dict[str, Any]]:
    """The request's tools as (name, description, parameters) dicts; only function tools exist here."""
    out = []
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise refuse(provider, f"tools[{i}].type", "a tool that is not a function")
        fn = tool.get("function") or {}
        if fn.get("strict"):
            raise refuse(provider, f"tools[{i}].function.strict", "strict function schemas")
        if not fn.get("name"):
            raise InvalidRequest("Every tool needs a function name.", param=f"tools[{i}].function.name")
        out.append(
            {
                "name": fn["name"],
                "description": fn.get("description"),
                "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
            }
        )
    return out


def merge_same_role(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive messages of one role become one message whose content lists are joined."""
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1]["content"].extend(message["content"])
        else:
            merged.append({"role": message["role"], "content": list(message["content"])})
    return merged


Blocks = list[dict[str, Any]]


def split_messages(
    messages: list[dict[str, Any]],
    provider: str,
    *,
    content: Callable[[Any, str], Blocks],
    tool_use: Callable[[Any, Any, dict[str, Any]], dict[str, Any]],
    tool_result: Callable[[Any, str], dict[str, Any]],
) -> tuple[list[str], Blocks]:
    """An OpenAI message list as (system texts, user/assistant turns) in the target API's blocks.

    System and developer messages become system texts; user content and assistant content
    become blocks (``content(content, param)``), assistant tool calls ``tool_use(id, name, arguments)``
    blocks, and tool messages ``tool_result(tool_call_id, text)`` blocks in a user turn.
    Consecutive turns of one role are merged (both APIs want user/assistant alternation).
    Message fields or roles the target cannot take are refused; at least one turn is required.
    """
    system: list[str] = []
    turns: Blocks = []
    for i, m in enumerate(messages):
        role, where = m.get("role"), f"messages[{i}]"
        for key in m:
            if key not in MESSAGE_FIELDS and m[key] is not None:
                raise refuse(provider, f"{where}.{key}")
        if role in ("system", "developer"):
            system.append(text_of(m.get("content"), provider, f"{where}.content"))
        elif role == "user":
            turns.append({"role": "user", "content": content(m.get("content"), f"{where}.content")})
        elif role == "assistant":
            blocks = content(m.get("content"), f"{where}.content")
            for k, call in enumerate(m.get("tool_calls") or ()):
                arguments = tool_arguments(call, f"{where}.tool_calls[{k}].function.arguments")
                blocks.append(tool_use(call.get("id"), (call.get("function") or {}).get("name"), arguments))
            turns.append({"role": "assistant", "content": blocks})
        elif role == "tool":
            text = text_of(m.get("content"), provider, f"{where}.content")
            turns.append({"role": "user", "content": [tool_result(m.get("tool_call_id"), text)]})
        else:
            raise refuse(provider, f"{where}.role", f"the '{role}' role")
    if not turns:
        raise InvalidRequest("At least one user or assistant message is required.", param="messages")
    return system, merge_same_role(turns)


def usage_from(usage: dict[str, Any] | None, prompt: tuple[str, ...], completion: str) -> Usage:
    """Usage from a provider's counters: the prompt parts (input, cache reads and writes) add up,
    as OpenAI's ``prompt_tokens`` include cached tokens (unbelievable counters: see Usage)."""
    return Usage.counted(usage, prompt, completion)


def tool_call(id_: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI ``tool_calls`` entry for a provider's tool-use block (``arguments``: the decoded input)."""
    return {
        "id": id_,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments or {}, separators=(",", ":"))},
    }


def assistant_message(text: list[str], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The reply message: the text blocks joined (null content for a tool-calls-only reply)."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def completion(
    model: str, message: dict[str, Any], finish_reason: str, usage: Usage, id_: str | None = None
) -> dict[str, Any]:
    """The ``chat.completion`` of a translated reply (``wire.chat_completion``, the one builder)."""
    return chat_completion(message, finish_reason, usage.prompt_tokens, usage.completion_tokens, model=model, id_=id_)


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


class ChunkMaker:
    """Builds OpenAI ``chat.completion.chunk`` dicts; the first one carries the role."""

    def __init__(self, model: str, id_: str | None = None) -> None:
        self.id = id_ or f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self.started = False
        self.tool_index: dict[int, int] = {}  # the provider's content block index -> OpenAI tool call index

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self.started:
            delta = {"role": "assistant", **delta}
            self.started = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_dict(usage),
        }

    def tool_call_start(self, block: int, id_: Any, name: Any) -> dict[str, Any]:
        """The chunk that opens a tool call (the provider's content block ``block``)."""
        index = self.tool_index[block] = len(self.tool_index)
        return self.chunk(
            {
                "tool_calls": [
                    {"index": index, "id": id_, "type": "function", "function": {"name": name, "arguments": ""}}
                ]
            }
        )

    def tool_call_arguments(self, block: int, arguments: str) -> dict[str, Any]:
        """A piece of the JSON arguments of the tool call opened by content block ``block``."""
        return self.chunk(
            {"tool_calls": [{"index": self.tool_index.get(block, 0), "function": {"arguments": arguments}}]}
        )
