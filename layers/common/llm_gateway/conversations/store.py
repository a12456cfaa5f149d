"""Conversation state in DynamoDB: one head item and one item per message.

Layout (one table, see DESIGN.md):

* head      ``PK = T#<tenant>#C#<conversation>``, ``SK = META`` — version, message count,
  token totals, system prompt, lease, timestamps; ``GSI1`` lists a tenant's conversations.
* message   same PK, ``SK = M#<10-digit seq>`` — role, the wire message as JSON, its
  token count. Never one growing item per conversation (400 KB item limit).
* turn      same PK, ``SK = TURN#<turn id>`` — written with the messages of an idempotent
  turn (jobs), so a redelivered job can never store a second reply.

A turn leases the head with a conditional update (expiring, so a crashed turn blocks
nothing for long), reads the newest history that fits its budget with a descending
Query, and commits with one TransactWriteItems: head version + lease check, and the
new message items with ``attribute_not_exists``.

The adapter is assembled from its parts (``table.py`` keys and codec, ``heads.py``,
``history.py``, ``leases.py``, ``commits.py``); the records and the Protocol live in
``records.py`` and are re-exported here.
"""

from __future__ import annotations

from llm_gateway.conversations.commits import Commits
from llm_gateway.conversations.heads import Heads
from llm_gateway.conversations.history import HistoryReads
from llm_gateway.conversations.leases import Leases
from llm_gateway.conversations.records import (
    MAX_MESSAGE_ITEM_BYTES,
    META,
    MSG_LAST,
    MSG_PREFIX,
    TURN_PREFIX,
    Conversation,
    ConversationStore,
    History,
    Lease,
    NewMessage,
    StoredMessage,
    TurnAlreadyCommitted,
    TurnUsage,
    new_conversation_id,
)
from llm_gateway.conversations.table import conversation_pk, message_sk
from llm_gateway.deadline import now_ms

__all__ = [
    "MAX_MESSAGE_ITEM_BYTES",
    "META",
    "MSG_LAST",
    "MSG_PREFIX",
    "TURN_PREFIX",
    "Conversation",
    "ConversationStore",
    "DynamoConversationStore",
    "History",
    "Lease",
    "NewMessage",
    "StoredMessage",
    "TurnAlreadyCommitted",
    "TurnUsage",
    "conversation_pk",
    "message_sk",
    "new_conversation_id",
    "now_ms",
]


class DynamoConversationStore(Heads, HistoryReads, Leases, Commits):
    """:class:`ConversationStore` on one DynamoDB table, through a low-level client."""
