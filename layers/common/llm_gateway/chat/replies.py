"""One completed reply, however it arrived, and the two things built from it.

A turn's reply comes three ways: a plain upstream call (:func:`from_routed`), a stream folded
chunk by chunk (``streaming.ChatStream`` builds the same :class:`Completion`), or an idempotent
turn committed before (:func:`from_stored`, a redelivered job). Whatever the way, the stored
assistant message — its body, metadata and token count — comes from :func:`stored_reply`, and the
``chat.completion`` body from :func:`completion_body` (over ``wire.chat_completion``), so a rule
changed here reaches every path at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_gateway.chat.tokens import reply_tokens
from llm_gateway.conversations.records import NewMessage, StoredMessage
from llm_gateway.providers.base import Usage
from llm_gateway.upstream.router import RoutedReply
from llm_gateway.wire import chat_completion


@dataclass(frozen=True)
class Completion:
    """Choice 0 of a completed turn and what is known about it."""

    message: dict[str, Any]  # the assistant message in wire format, as stored: no null fields
    finish_reason: str | None
    usage: Usage
    cost_usd: float
    model: str | None  # the model the upstream named
    deployment: str | None
    id: str | None = None
    created: int | None = None  # epoch seconds
    # a plain call's own body: what it holds beyond the above passes through to the client (other
    # choices, logprobs, usage details); it is not stored, so a replay cannot return it
    upstream: Mapping[str, Any] | None = None


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def assistant_message(message: Mapping[str, Any] | None) -> dict[str, Any]:
    """An upstream's reply message as stored and sent upstream again: null fields dropped."""
    body = {k: v for k, v in (message or {}).items() if v is not None}
    body["role"] = "assistant"
    return body


def from_routed(routed: RoutedReply) -> Completion:
    body = routed.reply.body
    choice = body["choices"][0]
    usage = routed.reply.usage
    return Completion(
        message=assistant_message(choice.get("message")),
        finish_reason=choice.get("finish_reason"),
        usage=usage,
        cost_usd=routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens),
        model=body.get("model"),
        deployment=routed.deployment.name,
        # the id and time the client is told are stored with the reply, so a replay tells the same
        id=body.get("id") or new_completion_id(),
        created=body.get("created") or int(time.time()),
        upstream=body,
    )


def from_stored(reply: StoredMessage, turn_id: str) -> Completion:
    """The reply of an idempotent turn committed before, from its stored message."""
    meta = reply.meta
    usage = meta.get("usage") or {}
    return Completion(
        message=reply.body,
        finish_reason=meta.get("finish_reason"),
        usage=Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
        cost_usd=usage.get("cost_usd", 0.0),
        model=meta.get("model"),
        deployment=meta.get("deployment"),
        id=meta.get("id") or f"chatcmpl-{turn_id}",
        created=meta.get("created") or reply.created_at // 1000,
    )


def stored_reply(completion: Completion) -> NewMessage:
    """The assistant message a conversation (or a stored response) keeps for a completed reply."""
    usage = completion.usage
    meta = {
        "id": completion.id,
        "created": completion.created,
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": round(completion.cost_usd, 10),
        },
        "model": completion.model,
        "deployment": completion.deployment,
        "finish_reason": completion.finish_reason,
    }
    # as history the reply costs its tokens plus the per-message framing, like any message
    return NewMessage(completion.message, reply_tokens(completion.message, usage.completion_tokens), meta=meta)


def completion_body(completion: Completion, conversation_id: str | None = None) -> dict[str, Any]:
    """The ``chat.completion`` a client receives (``conversation_id``: the gateway's extension)."""
    body = chat_completion(
        completion.message,
        completion.finish_reason,
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        model=completion.model,
        id_=completion.id,
        created=completion.created,
        base=completion.upstream,
    )
    if conversation_id:
        body["conversation_id"] = conversation_id
    return body
