"""JSON output (``response_format`` json_schema / json_object) for providers without it, as a forced tool.

Anthropic Messages and Bedrock Converse have no ``response_format``, but both force a tool
call that must match its input schema. So a request with a JSON ``response_format`` is sent
as one function tool (named after the schema) that the model must call; the call's
arguments — JSON matching the schema — come back as the reply's text, exactly where an
OpenAI model puts its JSON output, streamed or not (``finish_reason`` is ``stop``).

A JSON format together with the client's own tools is refused with a 400 naming
``response_format``: the forced tool would stop the model from calling them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from llm_gateway.providers.base import UpstreamReply
from llm_gateway.providers.translate import refuse

JSON_OBJECT_TOOL = "json_response"
_DESCRIPTION = "Respond by calling this tool: its input is your whole reply, as JSON matching the schema."


def json_tool(body: dict[str, Any], provider: str) -> tuple[dict[str, Any], str | None]:
    """``body`` with a JSON ``response_format`` replaced by a forced tool, and that tool's name
    (or ``body`` unchanged and None when the format is text or absent)."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("json_schema", "json_object"):
        return body, None
    assert isinstance(fmt, dict)
    if body.get("tools"):
        raise refuse(provider, "response_format", f"response_format '{kind}' together with 'tools'")
    if kind == "json_schema":
        spec: dict[str, Any] = fmt["json_schema"] if isinstance(fmt.get("json_schema"), dict) else {}
        name = str(spec.get("name") or JSON_OBJECT_TOOL)
        schema = spec.get("schema") if isinstance(spec.get("schema"), dict) else {"type": "object"}
        description = str(spec.get("description") or _DESCRIPTION)
    else:
        name, schema, description = JSON_OBJECT_TOOL, {"type": "object"}, _DESCRIPTION
    out = {k: v for k, v in body.items() if k not in ("response_format", "tool_choice", "parallel_tool_calls")}
    out["tools"] = [{"type": "function", "function": {"name": name, "description": description, "parameters": schema}}]
    out["tool_choice"] = {"type": "function", "function": {"name": name}}
    return out, name


def json_reply(reply: UpstreamReply, tool: str) -> UpstreamReply:
    """The forced tool's call as the reply's text content."""
    body = dict(reply.body)
    choices = []
    for choice in body.get("choices") or ():
        message = dict(choice.get("message") or {})
        calls = message.pop("tool_calls", None) or []
        text = "".join(
            c.get("function", {}).get("arguments", "") for c in calls if c.get("function", {}).get("name") == tool
        )
        message["content"] = (message.get("content") or "") + text
        finish = "stop" if choice.get("finish_reason") == "tool_calls" else choice.get("finish_reason")
        choices.append({**choice, "message": message, "finish_reason": finish})
    body["choices"] = choices
    return replace(reply, body=body)


class JsonChunks:
    """A provider's chunk stream with the forced tool's argument deltas as content deltas.

    Keeps the wrapped stream's ``close`` and ``abort`` (the router and the stream use them).
    """

    def __init__(self, chunks: Iterator[dict[str, Any]]) -> None:
        self.chunks = chunks

    def __iter__(self) -> JsonChunks:
        return self

    def __next__(self) -> dict[str, Any]:
        chunk = next(self.chunks)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta")
            if isinstance(delta, dict) and "tool_calls" in delta:
                calls = delta.pop("tool_calls") or []
                text = "".join((c.get("function") or {}).get("arguments") or "" for c in calls)
                if text:
                    delta["content"] = (delta.get("content") or "") + text
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "stop"
        return chunk

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()

    def abort(self) -> None:
        abort = getattr(self.chunks, "abort", None)
        if abort is not None:
            abort()
