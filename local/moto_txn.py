"""moto's ``DynamoDBBackend.transact_write_items`` with an undo log instead of table copies.

moto 5.2 deep-copies every table a transaction names before it writes and puts the copies
back when the transaction fails: O(table) per transaction. This is moto's own method, step for
step, except that it records the prior version of each item it touches (O(items written)) and a
failure restores exactly those items. Installed by ``local.moto_fast.install()``.
"""

from __future__ import annotations

import copy
from typing import Any


def _key_values(table, key: dict[str, Any]):
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr is not None else None
    return hash_value, range_value


class UndoLog:
    """Prior versions of the items a transaction writes, restored newest first on failure."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.entries: list[tuple[Any, Any, Any, Any, bool]] = []

    def record(self, table_name: str, key: dict[str, Any]) -> None:
        if table_name not in self.backend.tables:
            return
        table = self.backend.tables[table_name]
        try:
            hash_value, range_value = _key_values(table, key)
        except (KeyError, TypeError, IndexError, AttributeError):
            return  # a malformed key: moto rejects it before it writes anything
        had_partition = hash_value in table.items
        if range_value is None:
            prior = table.items.get(hash_value)
        else:
            prior = table.items[hash_value].get(range_value) if had_partition else None
        self.entries.append((table, hash_value, range_value, copy.deepcopy(prior), had_partition))

    def rollback(self) -> None:
        from local.moto_gsi import touched

        for table, hash_value, range_value, prior, had_partition in reversed(self.entries):
            self._restore(table, hash_value, range_value, prior, had_partition)
            touched(table, hash_value, range_value)  # the GSI index follows the restored item
        self.entries.clear()

    @staticmethod
    def _restore(table, hash_value, range_value, prior, had_partition) -> None:
        if range_value is None:
            if prior is None:
                table.items.pop(hash_value, None)
            else:
                table.items[hash_value] = prior
            return
        if prior is None:
            part = table.items.get(hash_value)
            if part is not None:
                part.pop(range_value, None)
                if not part and not had_partition:
                    del table.items[hash_value]
        else:
            table.items[hash_value][range_value] = prior


def transact_write_items(self, transact_items: list[dict[str, Any]]) -> None:  # noqa: C901 - moto's own shape
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import get_filter_expression

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    undo = UndoLog(self)
    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        if len(list(item.keys())) > 1:
            undo.rollback()
            raise TransactWriteSingleOpException
        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]
            check_unicity(table_name, key)
            current = self.get_item(table_name, key)
            if condition_expression is not None:
                condition_op = get_filter_expression(condition_expression, names, values)
                if not condition_op.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)
            if op_type != "ConditionCheck":
                undo.record(table_name, key)
            common = {
                "condition_expression": condition_expression,
                "expression_attribute_names": names,
                "expression_attribute_values": values,
            }
            if op_type == "Put":
                self.put_item(table_name, op["Item"], **common)
            elif op_type == "Delete":
                self.delete_item(table_name, key, **common)
            elif op_type == "Update":
                self.update_item(table_name, key, update_expression=op["UpdateExpression"], **common)
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            undo.rollback()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
        except Exception as e:  # moto's own catch-all: the error is reported per item
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]
    if any(code is not None for code, _, _ in errors):
        undo.rollback()
        raise TransactionCanceledException(errors)
