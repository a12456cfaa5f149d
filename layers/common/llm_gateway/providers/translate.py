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
from typing import Any

from ..errors import InvalidRequest
from .base import Usage


def refuse(provider: str, param: str, what: str | None = None) -> InvalidRequest:
    detail = what or f"'{param}'"
    return InvalidRequest(
        f"{detail} is not supported by this model's provider ({provider}); remove it or use another model.",
        code="unsupported_parameter",
        param=param,
    )


def check_params(body: dict[str, Any], provider: str, supported: frozenset[str]) -> None:
    """Refuse any request field outside ``supported`` (nulls count as absent)."""
    for key in sorted(body):
        if key not in supported and body[key] is not None:
            raise refuse(provider, key)
    n = body.get("n")
    if n not in (None, 1):
        raise refuse(provider, "n", "'n' greater than 1")
    response_format = body.get("response_format")
    if response_format is not None and (not isinstance(response_format, dict)
                                        or response_format.get("type") != "text"):
        kind = response_format.get("type") if isinstance(response_format, dict) else response_format
        raise refuse(provider, "response_format", f"response_format '{kind}'")
    temperature = body.get("temperature")
    if provider == "anthropic" and temperature is not None and temperature > 1:
        raise InvalidRequest(f"'temperature' must be between 0 and 1 for this model's provider ({provider}).",
                             param="temperature")


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
        out.append({"name": fn["name"], "description": fn.get("description"),
                    "parameters": fn.get("parameters") or {"type": "object", "properties": {}}})
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


def completion(model: str, message: dict[str, Any], finish_reason: str, usage: Usage,
               id_: str | None = None) -> dict[str, Any]:
    return {
        "id": id_ or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage_dict(usage),
    }


def usage_dict(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


class ChunkMaker:
    """Builds OpenAI ``chat.completion.chunk`` dicts; the first one carries the role."""

    def __init__(self, model: str, id_: str | None = None) -> None:
        self.id = id_ or f"chatcmpl-{uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self.started = False

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self.started:
            delta = {"role": "assistant", **delta}
            self.started = True
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    def usage(self, usage: Usage) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [], "usage": usage_dict(usage)}
