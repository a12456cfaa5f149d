"""Responses ⇄ the chat turn: input items to chat messages, a chat reply to output items.

The gateway runs every Responses request as one chat turn (see DESIGN.md), so this
module is the whole bridge:

* :func:`input_messages` — ``input`` (a string or a list of items) to wire-format chat
  messages, plus the input items as stored and listed (each with an id);
* :func:`output_items` — the assistant's chat message to ``message`` / ``function_call``
  output items;

both through the one item ⇄ chat message conversion of :mod:`llm_gateway.conversations.items`;
* :func:`chat_request` — the Chat Completions request the turn sends upstream;
* :func:`response_object` — the full OpenAI Response object, with OpenAI's defaults for
  every field the SDK's types require.

Whatever cannot be represented is a 400 naming the item and field, never a silent drop.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.conversations.items import ItemStatus, items_to_messages, message_to_items, parse_items
from llm_gateway.errors import GatewayError, InvalidRequest, RateLimited, error_object
from llm_gateway.providers.base import Usage
from llm_gateway.responses.models import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, CreateResponse


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _new_ids(kind: str, call_id: str | None) -> str:
    return new_id(kind)


def _public(items: list[Any]) -> list[dict[str, Any]]:
    """Items as the Responses API shows them (output_text parts carry ``logprobs: []``)."""
    out = [item.model_dump() for item in items]
    for item in out:
        for part in item.get("content") or ():
            if isinstance(part, dict) and part.get("type") == "output_text":
                part.setdefault("logprobs", [])
    return out


def _without_output_only(raw: Any) -> Any:
    """Input items as a client replays our output items (stateless agents send the whole history
    back): an output_text part's ``logprobs`` is output data, not a request, and is left out."""
    if not isinstance(raw, list):
        return raw
    out = []
    for item in raw:
        if isinstance(item, dict) and isinstance(item.get("content"), list):
            parts = [
                {k: v for k, v in p.items() if k != "logprobs"}
                if isinstance(p, dict) and p.get("type") == "output_text"
                else p
                for p in item["content"]
            ]
            item = {**item, "content": parts}
        out.append(item)
    return out


def input_messages(request: CreateResponse) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``input`` as (the input items as stored and listed, each with an id; the chat messages)."""
    raw: Any = (
        [{"type": "message", "role": "user", "content": request.input}]
        if isinstance(request.input, str)
        else request.input
    )
    converted = items_to_messages(parse_items(_without_output_only(raw), "input", max_items=None), "input")
    messages = [c.body for c in converted]
    items: list[Any] = []
    for c in converted:
        items += message_to_items(c.body, _new_ids, param=f"input[{c.first_item}]")
    return _public(items), messages


def output_items(message: dict[str, Any], *, status: ItemStatus = "completed") -> list[dict[str, Any]]:
    """The assistant's chat message as Responses output items (its text, then its calls)."""
    return _public(message_to_items(message, _new_ids, status=status, param="reply"))


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": content}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


# ---------------------------------------------------------------------------- request / response


def chat_request(
    request: CreateResponse, messages: list[dict[str, Any]], *, conversation_id: str | None = None
) -> ChatCompletionRequest:
    """The chat turn this Responses request is (messages: what goes upstream, in order)."""
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.stream:  # the final event carries the upstream's own usage, not our estimate
        body["stream_options"] = {"include_usage": True}
    if request.max_output_tokens is not None:
        body["max_completion_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    tools = request.function_tools()
    choice = request.tool_choice
    if tools:  # tool_choice and parallel_tool_calls mean nothing upstream without tools (OpenAI refuses them)
        body["tools"] = [t.chat() for t in tools]
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
        if choice is not None:
            body["tool_choice"] = (
                choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice.name}}
            )
    elif choice not in (None, "auto", "none"):
        raise InvalidRequest("'tool_choice' needs 'tools'.", param="tool_choice")
    response_format = request.text_format.chat()
    if response_format is not None:
        body["response_format"] = response_format
    user = request.safety_identifier or request.user
    if user is not None:
        body["user"] = user
    if request.service_tier is not None:  # store and metadata are the gateway's own, never the provider's
        body["service_tier"] = request.service_tier
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    return ChatCompletionRequest.model_validate(body)


def response_usage(usage: Usage | None, raw: dict[str, Any] | None = None) -> dict[str, Any] | None:
    if usage is None:
        return None
    raw = raw or {}
    cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


# the values of the Response type's ``service_tier`` (openai.types.responses.ServiceTier)
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")


def service_tier(reported: Any, requested: str | None) -> str:
    """A Response's ``service_tier``: the tier the upstream said it served the request with; else the
    one requested, when the alias's pass-through policy forwarded it; else ``default``."""
    for tier in (reported, requested):
        if isinstance(tier, str) and tier in SERVICE_TIERS:
            return tier
    return "default"


def response_error(exc: GatewayError | None) -> dict[str, Any]:
    """A Response's ``error`` (OpenAI's ``ResponseError``). Its ``code`` must be one of the Responses
    API's own codes, which have no quota code: ``rate_limit_exceeded`` for every 429 (a used-up
    budget too), else ``server_error``. ``type`` and ``param`` are those of the synchronous error body
    for the same exception (``insufficient_quota`` for a budget, ``rate_limit_error`` for a rate
    limit), so a client tells them apart as it would on a synchronous request."""
    if exc is None:
        return {"code": "server_error", "message": "Internal server error.", "type": "server_error", "param": None}
    body = error_object(exc)
    code = "rate_limit_exceeded" if isinstance(exc, RateLimited) else "server_error"
    return {"code": code, "message": exc.message, "type": body["type"], "param": body["param"]}


def incomplete_details(finish_reason: str | None) -> dict[str, Any] | None:
    if finish_reason == "length":
        return {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return {"reason": "content_filter"}
    return None


def response_object(
    request: CreateResponse,
    response_id: str,
    *,
    created_at: int | None = None,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete: dict[str, Any] | None = None,
    service_tier: str = "default",
) -> dict[str, Any]:
    """The OpenAI Response object, every field the SDK's types know, with OpenAI's defaults."""
    created = created_at if created_at is not None else int(time.time())
    conversation_id = request.conversation_id
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "completed_at": int(time.time()) if status == "completed" else None,
        "status": status,
        "background": bool(request.background),
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": None,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "conversation": {"id": conversation_id} if conversation_id else None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": request.safety_identifier,
        "service_tier": service_tier,
        "store": request.store,
        "temperature": DEFAULT_TEMPERATURE if request.temperature is None else float(request.temperature),
        "text": {"format": request.text_format.public(), "verbosity": "medium"},
        "tool_choice": _tool_choice(request),
        "tools": [t.public() for t in request.function_tools()],
        "top_logprobs": 0,
        "top_p": DEFAULT_TOP_P if request.top_p is None else float(request.top_p),
        "truncation": request.truncation or "disabled",
        "usage": usage,
        "user": request.user,
        "metadata": request.metadata or {},
    }


def _tool_choice(request: CreateResponse) -> Any:
    choice = request.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else {"type": "function", "name": choice.name}


def output_text(output: list[dict[str, Any]]) -> str:
    """All output_text of the output items (what the SDK's ``output_text`` property computes)."""
    return "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or ()
        if part.get("type") == "output_text"
    )
