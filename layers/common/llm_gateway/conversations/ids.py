"""Conversation item ids: stable, and naming their place in the store.

``msg_<conv><seq>`` for a message's text, ``fc_<conv><seq><call>`` for one of its tool calls,
``fco_<conv><seq>`` for a tool result, where ``<conv>`` is a short digest of the conversation
id (so an id of another conversation is recognised as such), ``<seq>`` the message's
sequence number (10 hex digits) and ``<call>`` a digest of the call's ``call_id``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from llm_gateway.conversations.items import FunctionCallItem, FunctionCallOutputItem, IdFor, MessageItem

_ID_RE = re.compile(r"^(msg|fc|fco)_([0-9a-f]{12})([0-9a-f]{10})([0-9a-f]{8})?$")


def _digest(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size // 2).hexdigest()


def call_key(call_id: str) -> str:
    return _digest(call_id, 8)


def item_id(conversation_id: str, seq: int, kind: str, call_id: str | None = None) -> str:
    tail = call_key(call_id) if kind == "fc" and call_id is not None else ""
    return f"{kind}_{_digest(conversation_id, 12)}{seq:010x}{tail}"


def ids_for(conversation_id: str, seq: int) -> IdFor:
    return lambda kind, call_id: item_id(conversation_id, seq, kind, call_id)


@dataclass(frozen=True)
class ItemRef:
    kind: str  # msg | fc | fco
    seq: int
    call: str | None  # call_key of a function call item


def parse_item_id(conversation_id: str, value: str) -> ItemRef | None:
    """Where an item id points in ``conversation_id``; None if it is not one of its ids."""
    match = _ID_RE.match(value)
    if not match or match.group(2) != _digest(conversation_id, 12):
        return None
    kind, call = match.group(1), match.group(4)
    if (kind == "fc") != (call is not None):
        return None
    return ItemRef(kind, int(match.group(3), 16), call)


def item_position(value: str, items: Sequence[MessageItem | FunctionCallItem | FunctionCallOutputItem]) -> int:
    """Index of the item with id ``value`` among the items of its message, -1 if it is not (any more) there."""
    for index, item in enumerate(items):
        if item.id == value:
            return index
    return -1
