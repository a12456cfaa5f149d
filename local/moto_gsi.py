"""moto's Query on a global secondary index at O(limit): a sorted index per GSI partition.

moto 5 answers an index Query by walking every item of the table, sorting the matches by
(index hash, index range, table hash, table range) and skipping up to the start key. The
gateway's two GSI1 queries (a tenant's conversations, newest first; the admin's key list) so
grew with the table on the local stack. This keeps, per table and per GSI, a ``SortedDict`` per
index partition keyed by that same order, and answers a Query on the index's partition key —
with an optional sort-key condition, ``ScanIndexForward``, ``Limit``, ``ExclusiveStartKey``,
filter and projection expressions — reading only the items it returns (``local/moto_fast.py``
routes it here). Results, ``LastEvaluatedKey`` and ``ScannedCount`` are moto's own, item for
item (tests/unit/test_moto_gsi.py compares them on random tables and writes).

The index of a table is built from its items on the first index Query (O(table), once) and kept
in step afterwards by the write paths, each reindexing the one item it touched (O(log n)):
moto's ``Table.put_item`` and ``Table.delete_item`` (PutItem, DeleteItem, BatchWriteItem,
PartiQL and transactions go through them), ``DynamoDBBackend.update_item`` (which changes the
stored item in place), the transaction undo log (``moto_txn.py``) and the data folder's journal
(``moto_persist.py``). moto has no TTL expiry, so nothing else removes items. A table whose
GSIs change (UpdateTable) is reindexed; a copied table (backups) gets its own index. Anything
this does not answer exactly as moto does goes to moto's own query: LSIs, ``ConsistentRead``,
``QueryFilter``, multi-attribute keys, start keys that are not a full index key of the queried
partition, binary keys, and an index holding an item whose key has the wrong type (DynamoDB
rejects those writes, moto does not).
"""

from __future__ import annotations

import weakref
from typing import Any

from sortedcontainers import SortedDict


class _Top:
    """Greater than any key value: ``(v, TOP)`` bounds every index key whose sort key is ``v``."""

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return other is not self

    def __le__(self, other: object) -> bool:
        return other is self

    def __ge__(self, other: object) -> bool:
        return True


TOP = _Top()
_KEY_TYPES = ("S", "N")


class GsiIndex:
    """One GSI's items: ``parts[index hash][(range, table hash, table range)] -> Item``."""

    def __init__(self, hash_attr: str, hash_type: str, range_attr: str, range_type: str) -> None:
        self.hash_attr, self.hash_type, self.range_attr, self.range_type = hash_attr, hash_type, range_attr, range_type
        self.parts: dict[Any, SortedDict] = {}
        self.where: dict[tuple[Any, Any], tuple[Any, tuple]] = {}  # table key -> (index hash, sort key)
        self.odd: set[tuple[Any, Any]] = set()  # table keys whose index key has the wrong type

    def reindex(self, key: tuple[Any, Any], item: Any) -> None:
        """Put the item stored under table key ``key`` (None: deleted) where it belongs now."""
        old = self.where.pop(key, None)
        if old is not None:
            part = self.parts[old[0]]
            del part[old[1]]
            if not part:
                del self.parts[old[0]]
        self.odd.discard(key)
        if item is None:
            return
        hash_value, range_value = item.attrs.get(self.hash_attr), item.attrs.get(self.range_attr)
        if hash_value is None or range_value is None:
            return  # moto's index query never returns it: it is not in the index
        if hash_value.type != self.hash_type or range_value.type != self.range_type:
            self.odd.add(key)
            return
        sort_key = (range_value.cast_value, key[0].cast_value, key[1].cast_value)
        self.parts.setdefault(hash_value, SortedDict())[sort_key] = item
        self.where[key] = (hash_value, sort_key)


class TableIndexes:
    def __init__(self, table: Any) -> None:
        self.signature = _signature(table)
        types = {a["AttributeName"]: a["AttributeType"] for a in table.attr}
        self.indexes: dict[str, GsiIndex] = {}
        for index in table.global_indexes:
            schema = [(k["AttributeName"], k["KeyType"]) for k in index.schema]
            if [kind for _, kind in schema] == ["HASH", "RANGE"] and types.get(schema[1][0]) in _KEY_TYPES:
                (hash_attr, _), (range_attr, _) = schema
                self.indexes[index.name] = GsiIndex(hash_attr, types.get(hash_attr, ""), range_attr, types[range_attr])
        if self.indexes:
            for hash_value, part in table.items.items():
                for range_value, item in part.items():
                    self.reindex((hash_value, range_value), item)

    def reindex(self, key: tuple[Any, Any], item: Any) -> None:
        for index in self.indexes.values():
            index.reindex(key, item)


def _signature(table: Any) -> tuple:
    return tuple((i.name, repr(i.schema)) for i in table.global_indexes), repr(table.attr)


_tables: weakref.WeakKeyDictionary[Any, TableIndexes] = weakref.WeakKeyDictionary()


def _indexable(table: Any) -> bool:
    return table.range_key_attr is not None and table.hash_key_type in _KEY_TYPES and table.range_key_type in _KEY_TYPES


def indexes_of(table: Any) -> TableIndexes | None:
    """The table's GSI index, built now if it has none or its GSIs changed (None: not indexable)."""
    if not _indexable(table) or not table.global_indexes:
        return None
    state = _tables.get(table)
    if state is None or state.signature != _signature(table):
        state = _tables[table] = TableIndexes(table)
    return state


def touched(table: Any, hash_value: Any, range_value: Any) -> None:
    """A write changed (or removed) the item under this table key: reindex it, if indexed."""
    state = _tables.get(table)
    if state is None or range_value is None:
        return
    part = table.items.get(hash_value)
    item = part.get(range_value) if part is not None else None
    state.reindex((hash_value, range_value), item)


def touched_key(table: Any, key: Any) -> None:
    """``touched`` for a key as a request spells it (``{"PK": {"S": ...}, ...}``); ignores malformed keys."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if table not in _tables or not isinstance(key, dict) or table.range_key_attr is None:
        return
    try:
        touched(table, DynamoType(key[table.hash_key_attr]), DynamoType(key[table.range_key_attr]))
    except (KeyError, TypeError, IndexError, AttributeError):
        return


def _bound(value: Any, inclusive: bool, upper: bool) -> tuple | None:
    """A sort-key bound as a bound on index keys (which always include it: inclusive)."""
    if value is None:
        return None
    return (value.cast_value, TOP) if inclusive == upper else (value.cast_value,)


def plan(table: Any, index_name: str, hash_key: Any, range_comparison: str | None, range_objs: list,
         exclusive_start_key: Any, consistent_read: bool, filter_kwargs: dict, conditions: dict):  # fmt: skip
    """The index and the partition key's sort-key range a Query reads, or None for moto's own path."""
    from local.moto_fast import _RANGE_OPS

    if consistent_read or filter_kwargs or hash_key is None:
        return None
    state = indexes_of(table)
    index = state.indexes.get(index_name) if state is not None else None
    if index is None or index.odd:
        return None
    hash_conditions = conditions.get("hash_key_conditions") or []
    range_conditions = conditions.get("range_key_conditions") or []
    if len(hash_conditions) != 1 or hash_conditions[0][0] != index.hash_attr or hash_key.type != index.hash_type:
        return None
    if len(range_conditions) > 1 or (range_conditions and range_conditions[0][0] != index.range_attr):
        return None
    if range_comparison is not None:
        if range_comparison not in _RANGE_OPS or any(v.type != index.range_type for v in range_objs):
            return None
        if range_comparison == "BEGINS_WITH" and index.range_type != "S":
            return None
    esk = _start_key(table, index, hash_key, exclusive_start_key)
    return None if esk is False else (index, esk)


def _start_key(table: Any, index: GsiIndex, hash_key: Any, exclusive_start_key: Any) -> tuple | None | bool:
    """The start key's index key, or False when moto's own path must handle it."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if exclusive_start_key is None:
        return None
    try:
        values = [
            DynamoType(exclusive_start_key[attr])
            for attr in (index.hash_attr, index.range_attr, table.hash_key_attr, table.range_key_attr)
        ]
    except (KeyError, TypeError, IndexError, AttributeError):
        return False
    types = (index.hash_type, index.range_type, table.hash_key_type, table.range_key_type)
    if any(v.type != t for v, t in zip(values, types, strict=True)) or values[0] != hash_key:
        return False
    return tuple(v.cast_value for v in values[1:])


def gsi_query(table, index_name, planned, hash_key, range_comparison, range_objs, limit, scan_index_forward,
              projection_expressions, filter_expression=None):  # fmt: skip
    """moto's ``Table.query`` on a GSI partition, reading O(limit) items."""
    from local.moto_fast import _bounds, page, project

    index, esk = planned
    forward = scan_index_forward is not False
    lo_value, hi_value, lo_inc, hi_inc = _bounds(range_comparison, range_objs)
    lo, hi = _bound(lo_value, lo_inc, upper=False), _bound(hi_value, hi_inc, upper=True)
    lo_inc = hi_inc = True
    if esk is not None:  # moto skips every item up to and including the start key
        if forward and (lo is None or not esk < lo):
            lo, lo_inc = esk, False
        elif not forward and (hi is None or not hi < esk):
            hi, hi_inc = esk, False
    part = index.parts.get(hash_key)
    results, last_evaluated_key = page(table, part, index_name, limit, forward, lo, hi, lo_inc, hi_inc)
    scanned_count = len(results)
    gsi = table.get_index(index_name)
    results = [gsi.project(r) for r in results]  # a new item unless the projection is ALL (nothing mutates it)
    if filter_expression is not None:
        results = [item for item in results if filter_expression.expr(item)]
    if projection_expressions:
        results = [project(r, projection_expressions) for r in results]
    return results, scanned_count, last_evaluated_key
