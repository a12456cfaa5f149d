"""DynamoDB plumbing every store shares: the attribute codec, ID patterns, bounded batch retries.

Stores talk to the low-level client (typed attribute values). The codec is boto3's own
``TypeSerializer``/``TypeDeserializer``; :func:`attr` also takes floats (as ``Decimal``) and
:func:`plain` gives integral numbers back as ``int``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

# Public ids (conversation, job, response ids) and tenant ids, checked before they reach a key.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)
TENANT_RE = re.compile(TENANT_PATTERN)

BATCH_GET_MAX = 100  # BatchGetItem keys per call
BATCH_WRITE_MAX = 25  # BatchWriteItem requests per call
TRANSACT_MAX_ITEMS = 100  # TransactWriteItems actions per call
UNPROCESSED_ATTEMPTS = 8  # calls per batch before giving up on what DynamoDB keeps unprocessed
UNPROCESSED_BACKOFF_BASE = 0.05  # seconds; full-jitter exponential, capped below
UNPROCESSED_BACKOFF_MAX = 1.0

CONDITIONAL_CHECK_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELED = "TransactionCanceledException"
# A single-item write to an item that an ongoing TransactWriteItems includes is rejected with
# this (botocore does not retry it).
TRANSACTION_CONFLICT = "TransactionConflictException"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class UnprocessedItems(RuntimeError):
    """DynamoDB kept part of a batch unprocessed through every bounded attempt."""


def attr(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value (floats go through ``Decimal``)."""
    encoded: dict[str, Any] = dict(_serializer.serialize(_decimals(value)))
    return encoded


def plain(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value as Python (integral numbers as ``int``, others as ``float``)."""
    encoded: Any = dict(value)
    return _numbers(_deserializer.deserialize(encoded))


def s(value: str) -> dict[str, Any]:
    return {"S": value}


def n(value: int | float) -> dict[str, Any]:
    return attr(value)


def num(item: Mapping[str, Any], name: str, default: int = 0) -> int:
    value = item.get(name)
    return int(value["N"]) if value else default


def text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return value["S"] if value else None


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decimals(v) for v in value]
    return value


def _numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def retry_unprocessed(
    call: Callable[[dict[str, Any]], dict[str, Any]],
    request: dict[str, Any],
    unprocessed: str,
    *,
    what: str,
    attempts: int = UNPROCESSED_ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Send a batch, then re-send what DynamoDB returns under ``unprocessed`` (``UnprocessedKeys`` or
    ``UnprocessedItems``) with full-jitter exponential backoff, at most ``attempts`` calls in all.

    Returns every response (so a BatchGetItem caller reads each one's ``Responses``); raises
    :class:`UnprocessedItems` naming ``what`` when something is still unprocessed at the end."""
    responses: list[dict[str, Any]] = []
    for attempt in range(attempts):
        resp = call(request)
        responses.append(resp)
        request = resp.get(unprocessed) or {}
        if not request:
            return responses
        if attempt + 1 < attempts:
            (sleep or time.sleep)(
                random.uniform(0, min(UNPROCESSED_BACKOFF_MAX, UNPROCESSED_BACKOFF_BASE * 2**attempt))
            )
    raise UnprocessedItems(f"DynamoDB kept {unprocessed} after {attempts} attempts while {what}")


def batch_get(
    client: Any,
    table: str,
    keys: list[dict[str, Any]],
    *,
    what: str,
    projection: str | None = None,
    sleep: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Every item of ``keys`` that exists (consistent reads), in chunks of 100, unprocessed keys re-asked."""
    items: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_MAX):
        request: dict[str, Any] = {"Keys": keys[start : start + BATCH_GET_MAX], "ConsistentRead": True}
        if projection:
            request["ProjectionExpression"] = projection
        for resp in retry_unprocessed(
            lambda r: client.batch_get_item(RequestItems=r), {table: request}, "UnprocessedKeys", what=what, sleep=sleep
        ):
            items += resp.get("Responses", {}).get(table, [])
    return items


def batch_delete(
    client: Any, table: str, keys: list[dict[str, Any]], *, what: str, sleep: Callable[[float], None] | None = None
) -> None:
    """Delete ``keys`` in chunks of 25, unprocessed requests re-sent."""
    for start in range(0, len(keys), BATCH_WRITE_MAX):
        requests = {table: [{"DeleteRequest": {"Key": k}} for k in keys[start : start + BATCH_WRITE_MAX]]}
        retry_unprocessed(
            lambda r: client.batch_write_item(RequestItems=r), requests, "UnprocessedItems", what=what, sleep=sleep
        )
