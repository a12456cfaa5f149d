"""moto's DynamoDB read responses at json.dumps speed: O(items) with a small constant.

moto 5 turns every response into JSON with its generic, model-driven serializer
(``moto/core/serialize.py``): for each attribute value it resolves the botocore shape, tries the
possible key spellings and recurses, about 3 ms per returned item on the local stack. A turn that
reads the 200 newest messages of a conversation spent most of its time there, so on ``make dev``
a turn at message 10,000 cost ~3.6x a turn at message 10 although both read O(limit) items.

The items a read returns are already DynamoDB-JSON typed dicts (``{"S": "..."}``, ``{"N": "1"}``,
``{"M": {...}}``, binary as raw bytes) once moto's handler has built its result, so this writes
the item-bearing member of a Query, Scan, GetItem, BatchGetItem and TransactGetItems response
(table and index queries alike: both answer through the same handler) directly, and leaves the
small rest of the response (counts, keys, consumed capacity, unprocessed keys) to moto's own
serializer. Members are laid out in the operation's output-shape order, as moto does, so the
body is byte for byte moto's own (tests/unit/test_moto_serialize.py compares them on random
tables, conditions, projections, directions, limits, start keys and every attribute type).
Errors, other operations and ``PRETTIFY_RESPONSES`` keep moto's serializer. Installed by
``local.moto_fast.install()``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models.dynamo_type import DynamoType

_SCALARS = frozenset({"S", "N"})
_FLAGS = frozenset({"BOOL", "NULL"})
_STRING_SETS = frozenset({"SS", "NS"})
DEFERRED = frozenset({"Items", "Item", "Responses"})  # the members that hold items, kept as moto's objects


class _NotPlain(Exception):
    """A value this module does not write exactly as moto does: moto's serializer writes it."""


def _b64(value: bytes | str) -> str:
    """moto's binary round trip: stored base64 (or raw bytes) -> raw bytes -> base64."""
    raw = value if isinstance(value, bytes) else base64.b64decode(value)
    return base64.b64encode(raw).strip().decode("utf-8")


def attribute_value(value: Any) -> dict[str, Any]:
    """One stored ``DynamoType`` as moto's serializer writes it."""
    if type(value) is not DynamoType:
        raise _NotPlain
    kind, inner = value.type, value.value
    if kind in _SCALARS:
        if type(inner) is not str:
            raise _NotPlain
        return {kind: inner}
    if kind == "M":
        return {"M": {k: attribute_value(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [attribute_value(v) for v in inner]}
    if kind in _FLAGS and type(inner) is bool:
        return {kind: inner}
    if kind in _STRING_SETS and all(type(v) is str for v in inner):
        return {kind: list(inner)}
    if kind == "B":
        return {"B": _b64(inner)}
    if kind == "BS":
        return {"BS": [_b64(v) for v in inner]}
    raise _NotPlain


def attribute_map(item: dict[str, Any]) -> dict[str, Any]:
    return {name: attribute_value(value) for name, value in item.items()}


def _item_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [attribute_map(item) for item in items]


def _table_item_lists(responses: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {table: _item_list(items) for table, items in responses.items()}


def _item_responses(responses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"Item": attribute_map(r["Item"])} if r.get("Item") is not None else {} for r in responses]


# operation -> (the member holding items, how to write it)
FAST_MEMBERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "Query": ("Items", _item_list),
    "Scan": ("Items", _item_list),
    "GetItem": ("Item", attribute_map),
    "BatchGetItem": ("Responses", _table_item_lists),
    "TransactGetItems": ("Responses", _item_responses),
}


def shallow(result: Any) -> Any:
    """What ``DynamoResult`` keeps: moto's plain conversion of everything but the item members."""
    from moto.dynamodb.models.utilities import dynamo_to_dict

    if not isinstance(result, dict):
        return dynamo_to_dict(result)
    return {k: v if k in DEFERRED else dynamo_to_dict(v) for k, v in result.items()}


def plain(result: Any) -> Any:
    """The result exactly as moto's ``DynamoResult`` holds it (every member converted)."""
    from moto.dynamodb.models.utilities import dynamo_to_dict

    return dynamo_to_dict(result)


def fast_body(context: Any, result: Any, moto_execute: Callable[[Any, Any], Any]) -> tuple[int, dict, str] | None:
    """The response for ``result`` of ``context``'s operation, or None when moto's serializer must write it."""
    from moto import settings
    from moto.core.serialize import BaseJSONSerializer

    operation = context.operation_model.name
    if operation not in FAST_MEMBERS or not isinstance(result, dict) or settings.PRETTIFY_RESPONSES:
        return None
    if not issubclass(context.serializer_class, BaseJSONSerializer):
        return None
    member, write = FAST_MEMBERS[operation]
    if result.get(member) is None:
        return None  # nothing to speed up
    try:
        items = write(result[member])
    except (_NotPlain, AttributeError, TypeError, ValueError, KeyError):
        return None
    from moto.core.responses import ActionResult

    rest = {k: v for k, v in result.items() if k != member}
    status, headers, rest_body = moto_execute(ActionResult(plain(rest)), context)
    serialized_rest = json.loads(rest_body) if rest_body else {}
    body: dict[str, Any] = {}
    for name in context.operation_model.output_shape.members:
        if name == member:
            body[name] = items
        elif name in serialized_rest:
            body[name] = serialized_rest[name]
    return status, headers, json.dumps(body)


def enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
    """moto's ``BaseResponse._enrich_response`` for a JSON body: it runs a regex for an XML
    ``<RequestId>`` over the whole body (~1 ms per 64 KB page of items); a body without one comes
    back unchanged from it, so only the request id header is added, as moto does."""
    from moto.core.responses import BaseResponse
    from moto.utilities.aws_headers import gen_amzn_requestid_long

    if not isinstance(body, str) or "<RequestId>" in body:
        return BaseResponse._enrich_response(headers, body)
    if "status" in headers:
        headers["status"] = str(headers["status"])
    gen_amzn_requestid_long(headers)
    return headers, body


def install() -> Callable[[], None]:
    """Route moto's DynamoDB results through ``fast_body``; returns the function that undoes it."""
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler, DynamoResult

    def __init__(self: Any, result: object) -> None:
        ActionResult.__init__(self, shallow(result))  # item members converted only if moto must write them

    def execute_result(self: Any, context: Any) -> Any:
        fast = fast_body(context, self.result, ActionResult.execute_result)
        return fast if fast is not None else ActionResult.execute_result(ActionResult(plain(self.result)), context)

    original_init = DynamoResult.__init__
    DynamoResult.__init__ = __init__  # type: ignore[method-assign]
    DynamoResult.execute_result = execute_result  # type: ignore[method-assign]
    DynamoHandler._enrich_response = staticmethod(enrich_response)  # type: ignore[method-assign,assignment]

    def uninstall() -> None:
        DynamoResult.__init__ = original_init  # type: ignore[method-assign]
        if "execute_result" in DynamoResult.__dict__:
            del DynamoResult.execute_result
        if "_enrich_response" in DynamoHandler.__dict__:
            del DynamoHandler._enrich_response

    return uninstall
