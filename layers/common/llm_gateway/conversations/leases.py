"""The turn lease on a conversation head: a conditional update with an expiry."""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import ClientError

from llm_gateway.aws.dynamo import TRANSACTION_CONFLICT
from llm_gateway.aws.dynamo import error_code as _code
from llm_gateway.aws.dynamo import n as _n
from llm_gateway.aws.dynamo import s as _s
from llm_gateway.conversations.records import DELETED, Lease
from llm_gateway.conversations.table import Table
from llm_gateway.deadline import now_ms
from llm_gateway.errors import ConversationBusy


class Leases(Table):
    """A short lease per turn: a second turn gets 409 at once; a crashed one blocks nothing for long."""

    def acquire_lease(self, tenant: str, conversation_id: str, ttl_seconds: float) -> Lease:
        key = self._key(tenant, conversation_id)
        now = now_ms()
        lease_id = uuid.uuid4().hex
        expires = now + int(ttl_seconds * 1000)
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET lease_id = :l, lease_expires = :exp",
                ConditionExpression=(
                    "attribute_exists(PK) AND attribute_not_exists(#deleted)"
                    " AND (attribute_not_exists(lease_id) OR lease_expires < :now)"
                ),
                ExpressionAttributeNames={"#deleted": DELETED},
                ExpressionAttributeValues={":l": _s(lease_id), ":exp": _n(expires), ":now": _n(now)},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                old: Any = err.response.get("Item")
                if old and DELETED not in old:
                    raise ConversationBusy(
                        "Another turn is in progress on this conversation; retry when it completes."
                    ) from err
                raise self._not_found(conversation_id) from err
            if _code(err) == TRANSACTION_CONFLICT:  # another turn is committing this very head
                raise ConversationBusy(
                    "Another turn is in progress on this conversation; retry when it completes."
                ) from err
            raise
        return Lease(self._conversation(resp["Attributes"]), lease_id, expires)

    def extend_lease(self, lease: Lease, ttl_seconds: float) -> None:
        expires = now_ms() + int(ttl_seconds * 1000)
        if not self._update_held(lease, "SET lease_expires = :exp", {":exp": _n(expires)}):
            raise ConversationBusy("The turn lost its lease on the conversation.")
        lease.expires_at = expires

    def release_lease(self, lease: Lease) -> None:
        # Not held (ours expired and someone else holds it now): nothing to release.
        self._update_held(lease, "REMOVE lease_id, lease_expires", {})

    def _update_held(self, lease: Lease, update: str, values: dict) -> bool:
        """Update the conversation head if ``lease`` still holds it; False if it does not."""
        conv = lease.conversation
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(conv.tenant, conv.id),
                UpdateExpression=update,
                ConditionExpression="lease_id = :l",
                ExpressionAttributeValues={":l": _s(lease.lease_id), **values},
            )
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                return False
            raise
        return True
