"""The stored assistant reply and the ``chat.completion`` body of a turn."""

from __future__ import annotations

import time
from typing import Any

from llm_gateway.chat.tokens import reply_tokens
from llm_gateway.conversations.records import NewMessage, StoredMessage
from llm_gateway.upstream.router import RoutedReply


def stored_reply(routed: RoutedReply) -> NewMessage:
    choice = routed.reply.body["choices"][0]
    body = {k: v for k, v in (choice.get("message") or {}).items() if v is not None}
    body["role"] = "assistant"
    usage = routed.reply.usage
    cost = routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
    meta = {
        "id": routed.reply.body.get("id"),
        "created": routed.reply.body.get("created"),
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": round(cost, 10),
        },
        "model": routed.reply.body.get("model"),
        "deployment": routed.deployment.name,
        "finish_reason": choice.get("finish_reason"),
    }
    # as history the reply costs its tokens plus the per-message framing, like any message
    return NewMessage(body, reply_tokens(body, usage.completion_tokens), meta=meta)


def completion_body(routed: RoutedReply, conversation_id: str | None) -> dict[str, Any]:
    body = dict(routed.reply.body)
    body.setdefault("object", "chat.completion")
    body.setdefault("created", int(time.time()))
    if conversation_id:
        body["conversation_id"] = conversation_id
    return body


def replayed_completion(reply: StoredMessage, conversation_id: str, turn_id: str) -> dict[str, Any]:
    """The chat.completion of an already committed idempotent turn, rebuilt from its stored reply."""
    meta = reply.meta
    usage = meta.get("usage") or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {
        "id": meta.get("id") or f"chatcmpl-{turn_id}",
        "object": "chat.completion",
        "created": meta.get("created") or reply.created_at // 1000,
        "model": meta.get("model"),
        "choices": [{"index": 0, "message": reply.body, "finish_reason": meta.get("finish_reason")}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "conversation_id": conversation_id,
    }
