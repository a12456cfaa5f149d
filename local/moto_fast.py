"""moto's DynamoDB at DynamoDB's cost: Query O(limit), TransactWriteItems O(items written).

moto 5 answers a Query by sorting every item of the table and walking the partition from its
start, and backs up every table a transaction touches with ``copy.deepcopy`` before it writes.
Both grow with the table, so on the local stack a turn got slower as conversations and the table
grew, while on DynamoDB it stays flat. ``install()`` patches moto's models in the moto server
process (``moto_atomic.py`` calls it):

* every partition of a table with a sort key is a ``SortedDict`` (a ``dict``, so all of moto's
  own code keeps working on it), and a Query on the table's partition key — with an optional
  sort-key condition (=, <, <=, >, >=, BETWEEN, begins_with), ``ScanIndexForward``, ``Limit``,
  ``ExclusiveStartKey``, filter and projection expressions — reads only the items it returns.
  Anything else (index queries, legacy ``QueryFilter``, odd start keys, binary sort keys) goes
  to moto's own ``Table.query`` unchanged;
* a transaction keeps an undo log (the prior version of each item it touches) instead of a copy
  of the tables, and a failed transaction restores exactly those items;
* a projection of top-level attributes (``ProjectionExpression: "SK, msg, tokens"``) copies those
  attributes (:func:`project`); moto's own ``Item.project`` turns the whole item into plain Python
  and back (a deep copy, a boto3 deserialise and serialise of every attribute, ~0.3 ms a message
  item), which was 90% of a 200-message history Query;
* no model instance is kept for moto's dashboard: moto appends every object it makes (each
  ``Item`` a write, an update or a projection builds, each SQS message) to a class-level list
  that is never trimmed, so the server's memory grew with the requests it had served, not
  with its data (about 200 items a 200-message history read);
* read responses (Query on a table or an index, Scan, GetItem, BatchGetItem, TransactGetItems)
  write their items with ``json.dumps`` instead of moto's model-driven serializer, ~3 ms per item
  (``local/moto_serialize.py``): the same bytes.

Results, ``LastEvaluatedKey`` and ``ScannedCount`` are moto's own, item for item (see
tests/unit/test_moto_fast.py, which compares both paths on random tables).
"""

from __future__ import annotations

from typing import Any

from sortedcontainers import SortedDict

_RANGE_OPS = {"=", "EQ", "<", "LT", "<=", "LE", ">", "GT", ">=", "GE", "BETWEEN", "BEGINS_WITH"}
_MAX_ITEM_BYTES = 400 * 1024
_originals: dict[str, Any] = {}


def _prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: no bound)."""
    while prefix and ord(prefix[-1]) == 0x10FFFF:
        prefix = prefix[:-1]
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else None


def _bounds(op: str | None, values: list) -> tuple[Any, Any, bool, bool]:
    """(minimum, maximum, min inclusive, max inclusive) of the sort keys matching ``op``."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if op is None:
        return None, None, True, True
    if op in ("=", "EQ"):
        return values[0], values[0], True, True
    if op in ("<", "LT"):
        return None, values[0], True, False
    if op in ("<=", "LE"):
        return None, values[0], True, True
    if op in (">", "GT"):
        return values[0], None, False, True
    if op in (">=", "GE"):
        return values[0], None, True, True
    if op == "BETWEEN":
        return values[0], values[1], True, True
    upper = _prefix_successor(values[0].value)  # BEGINS_WITH, strings only
    return values[0], (DynamoType({"S": upper}) if upper is not None else None), True, False


def _fast_path_applies(table, hash_key, range_comparison, range_objs, index_name, filter_kwargs, kwargs) -> bool:
    if index_name or filter_kwargs or hash_key is None or table.range_key_attr is None:
        return False
    if table.range_key_type not in ("S", "N") or hash_key.type != table.hash_key_type:
        return False
    hash_conditions = kwargs.get("hash_key_conditions") or []
    range_conditions = kwargs.get("range_key_conditions") or []
    if len(hash_conditions) > 1 or len(range_conditions) > 1:
        return False
    if range_conditions and range_conditions[0][0] != table.range_key_attr:
        return False
    if range_comparison is not None:
        if range_comparison not in _RANGE_OPS or any(v.type != table.range_key_type for v in range_objs):
            return False
        if range_comparison == "BEGINS_WITH" and table.range_key_type != "S":
            return False
    return True


def _start_key(table, hash_key, exclusive_start_key):
    """The start key's sort key, or False when moto's own path must handle the start key."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if exclusive_start_key is None:
        return None
    try:
        esk_hash = DynamoType(exclusive_start_key[table.hash_key_attr])
        esk_range = DynamoType(exclusive_start_key[table.range_key_attr])
    except (KeyError, TypeError, IndexError, AttributeError):
        return False
    if esk_hash != hash_key or esk_range.type != table.range_key_type:
        return False
    return esk_range


def partition(table, hash_key) -> SortedDict | None:
    """The table's partition as a SortedDict (converted once if moto made a plain dict)."""
    part = table.items.get(hash_key)
    if part is None or isinstance(part, SortedDict):
        return part
    part = table.items[hash_key] = SortedDict(part)
    return part


def fast_query(table, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
               projection_expressions, filter_expression=None):  # fmt: skip
    """moto's ``Table.query`` for a table (not index) query, reading O(limit) items."""
    forward = scan_index_forward is not False
    esk = _start_key(table, hash_key, exclusive_start_key)
    lo, hi, lo_inc, hi_inc = _bounds(range_comparison, range_objs)
    if esk is not None:  # moto skips every item up to and including the start key
        if forward and (lo is None or not esk < lo):
            lo, lo_inc = esk, False
        elif not forward and (hi is None or not hi < esk):
            hi, hi_inc = esk, False
    results, last_evaluated_key = page(table, partition(table, hash_key), None, limit, forward, lo, hi, lo_inc, hi_inc)
    scanned_count = len(results)
    # No copy.deepcopy of the page (moto's own query makes one): nothing downstream mutates it — a
    # filter only reads, a projection builds new items, the handler's result converts to new dicts.
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [project(r, projection_expressions) for r in results]
    return results, scanned_count, last_evaluated_key


class _NotPlain(Exception):
    """A value whose round trip through moto's projection is not a plain copy: moto projects it."""


def _number(text: str) -> str:
    """A number as moto's projection writes it back (boto3's deserialiser, then its serialiser)."""
    from boto3.dynamodb.types import DYNAMODB_CONTEXT

    return str(DYNAMODB_CONTEXT.create_decimal(text))


def _nested(value: Any) -> dict[str, Any]:
    from moto.dynamodb.models.dynamo_type import DynamoType

    if type(value) is not DynamoType:
        raise _NotPlain
    return {value.type: _copied(value.type, value.value)}


def _copied(kind: str, value: Any) -> Any:
    """A stored attribute value (``DynamoType.value``) as moto's projection rebuilds it, or ``_NotPlain``:
    strings, booleans and null as they are, numbers normalised, maps and lists element by element;
    sets (rebuilt in another order) and binary (re-encoded) are left to moto."""
    if kind == "S" and type(value) is str or kind == "BOOL" and type(value) is bool:
        return value
    if kind == "NULL":
        return True
    if kind == "N" and type(value) is str:
        return _number(value)
    if kind == "M" and type(value) is dict:
        return {k: _nested(v) for k, v in value.items()}
    if kind == "L" and type(value) is list:
        return [_nested(v) for v in value]
    raise _NotPlain


def project(item, projection_expressions: list[list[str]]):
    """``item.project(projection_expressions)``, the same new ``Item``, without the round trip when
    every expression names a top-level attribute (no ``a.b``, no ``a[0]``) and every attribute
    copied is a plain value (:func:`_copied`); otherwise moto's own."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    if any(len(path) != 1 or "[" in path[0] for path in projection_expressions):
        return item.project(projection_expressions)
    attrs = LimitedSizeDict()
    try:
        for (name,) in projection_expressions:
            value = item.attrs.get(name)
            if value is not None and name not in attrs:
                # dict's own __setitem__: LimitedSizeDict's re-sums every value set so far, for a size
                # check a subset of a stored item cannot fail (moto's own Item() spent 75% there)
                dict.__setitem__(attrs, name, DynamoType({value.type: _copied(value.type, value.value)}))
    except _NotPlain:
        return item.project(projection_expressions)
    projected = Item.__new__(Item)
    projected.hash_key, projected.range_key, projected.attrs = item.hash_key, item.range_key, attrs
    return projected


_SIZE = "_local_size"


def item_size_of(item) -> int:
    """``Item.size()`` (a walk over all its values, ~10 us for a message), remembered on the item.
    Only the Query paths here read it, never in the middle of a write (requests are serialised);
    ``Table.put_item`` and the undo log store new items, and ``DynamoDBBackend.update_item`` — the one
    write that changes a stored item in place — forgets it (see ``install``)."""
    size = item.__dict__.get(_SIZE)
    if size is None:
        size = item.__dict__[_SIZE] = item.size()
    return size


def stored_item(table, key):
    """The item stored under a request's ``key``, or None (also for a malformed key)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    try:
        hash_value = DynamoType(key[table.hash_key_attr])
        range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr is not None else None
    except (KeyError, TypeError, IndexError, AttributeError):
        return None
    part = table.items.get(hash_value)
    if range_value is None or part is None:
        return part if range_value is None else None
    return part.get(range_value)


def page(table, part, index_name, limit, forward, lo, hi, lo_inc, hi_inc) -> tuple[list, dict | None]:
    """moto's page of a sorted partition (a table's, or a GSI's in ``local/moto_gsi.py``) between the
    bounds, and its LastEvaluatedKey: ``Limit`` items or moto's 1 MB of them, whichever comes first."""
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT

    results: list = []
    size = 0
    if not part:
        return results, None
    for key in part.irange(lo, hi, (lo_inc, hi_inc), reverse=not forward):
        item = part[key]
        if len(results) == limit:
            return results, table._get_last_evaluated_key(results[-1], index_name)
        item_size = item_size_of(item)
        if size + item_size > RESULT_SIZE_LIMIT:
            return results, table._get_last_evaluated_key(results[-1], index_name)
        results.append(item)
        size += item_size
    return results, _trailing_key(table, part, results, size, limit, forward, lo, hi, lo_inc, hi_inc, index_name)


def _trailing_key(table, part, results, size, limit, forward, lo, hi, lo_inc, hi_inc, index_name):
    """moto's LastEvaluatedKey when the matching items ran out: moto still meets the partition's
    later items (which fail the key condition) and stops at the first one if the page is full."""
    from moto.dynamodb.models.table import RESULT_SIZE_LIMIT

    if not results:
        return None
    if forward:
        if hi is None:
            return None
        start = part.bisect_right(hi) if hi_inc else part.bisect_left(hi)
        trailing = range(start, len(part))
    else:
        if lo is None:
            return None
        end = part.bisect_left(lo) if lo_inc else part.bisect_right(lo)
        trailing = range(end - 1, -1, -1)
    if not trailing:
        return None
    if len(results) == limit:
        return table._get_last_evaluated_key(results[-1], index_name)
    if size + _MAX_ITEM_BYTES > RESULT_SIZE_LIMIT:  # near moto's 1 MB page: check like moto does
        keys = part.keys()
        for i in trailing:
            if size + item_size_of(part[keys[i]]) > RESULT_SIZE_LIMIT:
                return table._get_last_evaluated_key(results[-1], index_name)
    return None


def install() -> None:
    """Patch moto's DynamoDB models in this process (idempotent; ``uninstall()`` undoes it)."""
    if _originals:
        return
    from collections import defaultdict

    from moto.core.common_models import BaseModel
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    from local import moto_gsi, moto_serialize
    from local.moto_txn import transact_write_items

    original_init, original_query = Table.__init__, Table.query
    original_put, original_delete, original_update = Table.put_item, Table.delete_item, DynamoDBBackend.update_item

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if self.range_key_attr is not None and not self.items:
            self.items = defaultdict(SortedDict)

    def query(self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
              projection_expressions, index_name=None, consistent_read=False, filter_expression=None,
              **kwargs):  # fmt: skip
        hash_conditions = {k: kwargs.pop(k) for k in ("hash_key_conditions", "range_key_conditions") if k in kwargs}
        if index_name:
            planned = moto_gsi.plan(
                self, index_name, hash_key, range_comparison, range_objs, exclusive_start_key, consistent_read,
                kwargs, hash_conditions,
            )  # fmt: skip
            if planned is not None:
                return moto_gsi.gsi_query(
                    self, index_name, planned, hash_key, range_comparison, range_objs, limit, scan_index_forward,
                    projection_expressions, filter_expression,
                )  # fmt: skip
        if _fast_path_applies(self, hash_key, range_comparison, range_objs, index_name, kwargs, hash_conditions) and (
            _start_key(self, hash_key, exclusive_start_key) is not False
        ):
            return fast_query(
                self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
                projection_expressions, filter_expression,
            )  # fmt: skip
        return original_query(
            self, hash_key, range_comparison, range_objs, limit, exclusive_start_key, scan_index_forward,
            projection_expressions, index_name, consistent_read, filter_expression, **hash_conditions, **kwargs,
        )  # fmt: skip

    # every write reindexes the item it touched in the table's GSI index (a no-op until one is queried)
    def put_item(self, item_attrs, *args: Any, **kwargs: Any):
        try:
            return original_put(self, item_attrs, *args, **kwargs)
        finally:
            moto_gsi.touched_key(self, item_attrs)

    def delete_item(self, hash_key, range_key):
        try:
            return original_delete(self, hash_key, range_key)
        finally:
            moto_gsi.touched(self, hash_key, range_key)

    def update_item(self, table_name, key, *args: Any, **kwargs: Any):
        try:
            return original_update(self, table_name, key, *args, **kwargs)
        finally:
            table = self.tables.get(table_name)
            if table is not None:
                item = stored_item(table, key)
                if item is not None:
                    item.__dict__.pop(_SIZE, None)  # changed in place: its size is walked again
                moto_gsi.touched_key(table, key)

    _originals.update(init=original_init, query=original_query, txn=DynamoDBBackend.transact_write_items)
    _originals.update(put=original_put, delete=original_delete, update=original_update)
    _originals["serializer"] = moto_serialize.install()
    _originals["new"] = BaseModel.__dict__["__new__"]
    BaseModel.__new__ = _untracked  # type: ignore[method-assign,assignment]
    Table.__init__ = __init__
    Table.query = query
    Table.put_item, Table.delete_item, DynamoDBBackend.update_item = put_item, delete_item, update_item
    DynamoDBBackend.transact_write_items = transact_write_items


def _untracked(cls, *args: Any, **kwargs: Any) -> Any:
    """``BaseModel.__new__`` without appending the instance to ``cls.instances_tracked``."""
    return object.__new__(cls)


def uninstall() -> None:
    from moto.core.common_models import BaseModel
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if _originals:
        BaseModel.__new__ = _originals["new"]
        Table.__init__, Table.query = _originals["init"], _originals["query"]
        DynamoDBBackend.transact_write_items = _originals["txn"]
        Table.put_item, Table.delete_item = _originals["put"], _originals["delete"]
        DynamoDBBackend.update_item = _originals["update"]
        _originals["serializer"]()  # undoes moto_serialize.install()
        _originals.clear()


def moto_path(name: str) -> Any:
    """moto's own ``query`` or ``txn`` while installed, for the comparison test."""
    return _originals[name]
