"""Reading a conversation's messages from DynamoDB: pages, one message, the budgeted history, a turn."""

from __future__ import annotations

from typing import Any

from llm_gateway.aws.dynamo import batch_get
from llm_gateway.aws.dynamo import num as _num
from llm_gateway.aws.dynamo import s as _s
from llm_gateway.conversations.records import (
    MSG_LAST,
    MSG_PREFIX,
    TURN_PREFIX,
    Conversation,
    History,
    HistoryBudget,
    StoredMessage,
)
from llm_gateway.conversations.table import MESSAGE_PROJECTION, Table, message_sk


class HistoryReads(Table):
    """Bounded reads of message items (``SK = M#<seq>``): the cost never grows with the conversation."""

    def messages(
        self, tenant: str, conversation_id: str, *, limit: int, after: int | None
    ) -> tuple[list[StoredMessage], bool]:
        """Messages oldest first after the sequence number ``after`` (exclusive)."""
        return self.messages_page(
            tenant, conversation_id, start=0 if after is None else after + 1, descending=False, limit=limit
        )

    def messages_page(
        self, tenant: str, conversation_id: str, *, start: int | None, descending: bool, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Up to ``limit`` messages from sequence number ``start`` (inclusive) in either direction, and
        whether more follow. Reads ``limit + 1`` items (more round trips only when DynamoDB's 1 MB page
        limit cuts a page short), however long the conversation is."""
        key = self._key(tenant, conversation_id)
        if start is None:
            condition, values = "PK = :pk AND begins_with(SK, :m)", {":pk": key["PK"], ":m": _s(MSG_PREFIX)}
        else:
            low, high = (message_sk(0), message_sk(start)) if descending else (message_sk(start), MSG_LAST)
            condition, values = (
                "PK = :pk AND SK BETWEEN :lo AND :hi",
                {":pk": key["PK"], ":lo": _s(low), ":hi": _s(high)},
            )
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not descending,
            "ConsistentRead": True,
        }
        items, has_more = self._query_page(params, limit)
        return [self._message(item) for item in items], has_more

    def message(self, tenant: str, conversation_id: str, seq: int) -> StoredMessage | None:
        key = self._key(tenant, conversation_id)
        resp = self.client.get_item(
            TableName=self.table, Key={"PK": key["PK"], "SK": _s(message_sk(seq))}, ConsistentRead=True
        )
        return self._message(resp["Item"]) if "Item" in resp else None

    def read_history(self, tenant: str, conversation_id: str, *, max_messages: int, max_tokens: int) -> History:
        """The newest complete messages that fit both budgets, oldest first.

        One descending Query with ``Limit = max_messages`` (more pages only when
        DynamoDB's 1 MB page limit cuts it short), so the items read are bounded by the
        budget however long the conversation is, in one round trip.
        """
        key = self._key(tenant, conversation_id)
        budget = HistoryBudget(max_messages, max_tokens)
        items_read = 0
        params: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :pk AND begins_with(SK, :m)",
            "ExpressionAttributeValues": {":pk": key["PK"], ":m": _s(MSG_PREFIX)},
            "ScanIndexForward": False,
            "ConsistentRead": True,
            **MESSAGE_PROJECTION,
        }
        while budget.room() > 0:
            params["Limit"] = budget.room()
            resp = self.client.query(**params)
            full = False
            for item in resp.get("Items", []):
                items_read += 1
                if not budget.take(self._message(item)):
                    full = True
                    break
            if full or "LastEvaluatedKey" not in resp:
                break
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return History(budget.window(), items_read)

    def turn_history(self, conversation: Conversation, *, max_messages: int, max_tokens: int) -> History:
        """The history a turn on the leased ``conversation`` sends: read here every time (a process's cache
        wraps the store, conversations.cache); nothing to read before the first message."""
        if not conversation.message_count:
            return History([], 0)
        return self.read_history(conversation.tenant, conversation.id, max_messages=max_messages, max_tokens=max_tokens)

    def turn_messages(self, tenant: str, conversation_id: str, turn_id: str) -> list[StoredMessage] | None:
        key = self._key(tenant, conversation_id)
        resp = self.client.get_item(
            TableName=self.table, Key={"PK": key["PK"], "SK": _s(TURN_PREFIX + turn_id)}, ConsistentRead=True
        )
        marker = resp.get("Item")
        if not marker:
            return None
        first, count = _num(marker, "first_seq"), _num(marker, "count")
        keys = [{"PK": key["PK"], "SK": _s(message_sk(seq))} for seq in range(first, first + count)]
        found = [self._message(item) for item in batch_get(self.client, self.table, keys, what="reading a turn")]
        if len(found) != count:
            raise RuntimeError(f"turn '{turn_id}' is missing {count - len(found)} of its messages")
        return sorted(found, key=lambda m: m.seq)
