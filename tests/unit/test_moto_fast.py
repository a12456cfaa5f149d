"""local/moto_fast.py answers exactly as moto does: Query results and failed transactions.

Random tables (string and number sort keys, several partitions, items of random size), random
key conditions, directions, limits, start keys, filter and projection expressions: every page
of the fast path equals moto's own ``Table.query`` on the same request, parsed by moto's own
request handler. Transactions run on two identical tables, one through moto's own
``transact_write_items`` (table copies) and one through the undo log: same errors, same items,
and a failed transaction leaves the table exactly as before.
"""

from __future__ import annotations

import random
import string

import boto3
import pytest
from moto import mock_aws

from local import moto_fast

SEED_COUNT = 4


@pytest.fixture
def ddb():
    moto_fast.install()
    try:
        with mock_aws():
            yield boto3.client("dynamodb", region_name="us-east-1")
    finally:
        moto_fast.uninstall()


def make_table(ddb, name: str, sort_type: str) -> None:
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": sort_type},
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )


def sort_value(rng: random.Random, sort_type: str):
    if sort_type == "N":
        return {"N": str(rng.choice([rng.randint(-50, 50), round(rng.uniform(-50, 50), 2)]))}
    prefix = rng.choice(["M#", "M#0", "META", "A", "Z#", "m", "M#00"])
    return {"S": prefix + "".join(rng.choices(string.ascii_letters + string.digits + "#~", k=rng.randint(0, 5)))}


def attribute(rng: random.Random, depth: int = 0) -> dict:
    """A random attribute value of any type: the fast projection copies plain ones and leaves sets
    and binary to moto; numbers are written in forms moto's projection normalises ("1e2", "0.50")."""
    kinds = ["S", "N", "BOOL", "NULL", "SS", "NS", "B"] + (["M", "L"] if depth < 2 else [])
    kind = rng.choice(kinds)
    if kind == "S":
        return {"S": rng.choice(["", "a", "naïve ✓", "x" * 40])}
    if kind == "N":
        return {"N": rng.choice(["0", "7", "-3", "0.50", "1e2", "12.3400", "-0", "5E-3"])}
    if kind == "BOOL":
        return {"BOOL": rng.random() < 0.5}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "SS":
        return {"SS": rng.sample(["a", "b", "c", "d"], rng.randint(1, 4))}
    if kind == "NS":
        return {"NS": rng.sample(["1", "2.5", "30"], rng.randint(1, 3))}
    if kind == "B":
        return {"B": bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))}
    if kind == "M":
        return {"M": {f"k{i}": attribute(rng, depth + 1) for i in range(rng.randint(0, 3))}}
    return {"L": [attribute(rng, depth + 1) for _ in range(rng.randint(0, 3))]}


def fill(ddb, rng: random.Random, name: str, sort_type: str) -> list[dict]:
    items = {}
    for _ in range(rng.randint(40, 160)):
        sk = sort_value(rng, sort_type)
        pk = rng.choice(["p0", "p1", "p2", "T#x#C#y"])
        items[(pk, str(sk))] = {
            "PK": {"S": pk},
            "SK": sk,
            "n": {"N": str(rng.randint(0, 9))},
            "body": {"S": "x" * rng.choice([1, 10, 100, 3000])},
        }
        if rng.random() < 0.5:
            items[(pk, str(sk))]["x"] = attribute(rng)
        if rng.random() < 0.3:  # a document for nested paths (moto's own projection fails on a non-map)
            doc = {"a": attribute(rng), "l": {"L": [attribute(rng, 1) for _ in range(rng.randint(1, 3))]}}
            items[(pk, str(sk))]["doc"] = {"M": doc}
    for item in items.values():
        ddb.put_item(TableName=name, Item=item)
    return list(items.values())


def random_query(rng: random.Random, name: str, items: list[dict], sort_type: str) -> dict:
    pk = rng.choice(["p0", "p1", "p2", "T#x#C#y", "absent"])
    values: dict = {":pk": {"S": pk}}
    existing = [i["SK"] for i in items if i["PK"]["S"] == pk]

    def value():
        return rng.choice(existing) if existing and rng.random() < 0.6 else sort_value(rng, sort_type)

    ops = ["none", "=", "<", "<=", ">", ">=", "between"] + (["begins_with"] if sort_type == "S" else [])
    op = rng.choice(ops)
    key = "PK = :pk"
    if op == "between":
        a, b = sorted([value(), value()], key=lambda v: float(v["N"]) if sort_type == "N" else v["S"])
        values.update({":a": a, ":b": b})
        key += " AND SK BETWEEN :a AND :b"
    elif op == "begins_with":
        values[":a"] = {"S": rng.choice(["M#", "M#0", "ME", "", "Z#", "M#00", "q"])[: rng.randint(1, 4)] or "M"}
        key += " AND begins_with(SK, :a)"
    elif op != "none":
        values[":a"] = value()
        key += f" AND SK {op} :a"
    params: dict = {"TableName": name, "KeyConditionExpression": key, "ExpressionAttributeValues": values}
    if rng.random() < 0.5:
        params["ScanIndexForward"] = rng.random() < 0.5
    if rng.random() < 0.7:
        params["Limit"] = rng.choice([1, 2, 3, 7, 50])
    if rng.random() < 0.3:
        params["FilterExpression"] = "n > :n"
        values[":n"] = {"N": str(rng.randint(0, 9))}
    if rng.random() < 0.4:
        # top-level names (the fast projection), absent ones, and nested paths (moto's)
        projection = rng.choice(["SK, n", "x, SK", "n, body, x, doc", "#x, absent", "doc.a, SK", "doc.l[0], n"])
        params["ProjectionExpression"] = projection
        if "#x" in projection:
            params["ExpressionAttributeNames"] = {"#x": "x"}
    if existing and rng.random() < 0.3:
        params["ExclusiveStartKey"] = {"PK": {"S": pk}, "SK": value()}
    return params


def pages(ddb, params: dict, max_pages: int = 25) -> list[dict]:
    out, params = [], dict(params)
    for _ in range(max_pages):
        page = ddb.query(**params)
        page.pop("ResponseMetadata", None)
        out.append(page)
        if "LastEvaluatedKey" not in page:
            break
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return out


@pytest.mark.parametrize("sort_type", ["S", "N"])
@pytest.mark.parametrize("seed", range(SEED_COUNT))
def test_query_pages_equal_motos_own(ddb, monkeypatch, seed, sort_type):
    from moto.dynamodb.models.table import Table

    rng = random.Random(f"{seed}-{sort_type}")
    make_table(ddb, "t", sort_type)
    items = fill(ddb, rng, "t", sort_type)
    queries = [random_query(rng, "t", items, sort_type) for _ in range(40)]
    fast = [pages(ddb, q) for q in queries]
    with monkeypatch.context() as m:
        m.setattr(Table, "query", moto_fast.moto_path("query"))
        moto = [pages(ddb, q) for q in queries]
    assert sum(len(p.get("Items", [])) for run in fast for p in run) > 0
    for query, got, want in zip(queries, fast, moto, strict=True):
        assert got == want, query


def test_query_reads_only_the_page(ddb):
    """The fast path touches the items it returns, not the partition or the table."""
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import Item

    make_table(ddb, "t", "S")
    for i in range(500):
        ddb.put_item(TableName="t", Item={"PK": {"S": "c"}, "SK": {"S": f"M#{i:08d}"}})
    sized = []
    original = Item.size
    Item.size = lambda self: sized.append(1) or original(self)  # count items moto's page logic reads
    try:
        page = ddb.query(
            TableName="t",
            KeyConditionExpression="PK = :p AND begins_with(SK, :m)",
            ExpressionAttributeValues={":p": {"S": "c"}, ":m": {"S": "M#"}},
            ScanIndexForward=False,
            Limit=5,
        )
    finally:
        Item.size = original
    assert [i["SK"]["S"] for i in page["Items"]] == [f"M#{i:08d}" for i in range(499, 494, -1)]
    assert len(sized) <= 12
    assert dynamodb_backends["123456789012"]["us-east-1"].tables["t"].items  # the table is really there


def test_projection_copies_plain_attributes_and_moto_keeps_no_instances(ddb, monkeypatch):
    """A history read's projection (top-level names, plain values) never takes moto's round trip
    through Python values; a set or a nested path does. And the server no longer keeps every
    ``Item`` it ever built (moto's dashboard list grew with every write and projected read)."""
    from moto.dynamodb.models.dynamo_type import Item

    make_table(ddb, "t", "S")
    for i in range(30):
        item = {"PK": {"S": "c"}, "SK": {"S": f"M#{i:03d}"}, "msg": {"S": "hi"}, "tokens": {"N": "30"}}
        ddb.put_item(TableName="t", Item={**item, "meta": {"M": {"a": {"L": [{"N": "1.50"}, {"NULL": True}]}}}})
    ddb.put_item(TableName="t", Item={"PK": {"S": "c"}, "SK": {"S": "M#999"}, "tags": {"SS": ["a", "b"]}})
    rounds = []
    original = Item.project
    monkeypatch.setattr(Item, "project", lambda self, exprs: rounds.append(exprs) or original(self, exprs))

    def query(projection: str) -> list[dict]:
        return ddb.query(
            TableName="t",
            KeyConditionExpression="PK = :p AND begins_with(SK, :m)",
            ExpressionAttributeValues={":p": {"S": "c"}, ":m": {"S": "M#0"}},
            ProjectionExpression=projection,
        )["Items"]

    items = query("SK, msg, meta, absent")  # what read_history asks for, less its ttl
    assert rounds == [] and len(items) == 30
    assert items[0] == {
        "SK": {"S": "M#000"},
        "msg": {"S": "hi"},
        "meta": {"M": {"a": {"L": [{"N": "1.50"}, {"NULL": True}]}}},
    }
    query("meta.a, SK")
    assert len(rounds) == 30  # a nested path: moto's own projection
    rounds.clear()
    ddb.query(
        TableName="t",
        KeyConditionExpression="PK = :p AND SK = :k",
        ExpressionAttributeValues={":p": {"S": "c"}, ":k": {"S": "M#999"}},
        ProjectionExpression="tags",
    )
    assert len(rounds) == 1  # a set: moto's own
    assert Item.instances_tracked == []


def table_state(backend, name: str) -> list[dict]:
    return [item.to_json() for item in backend.tables[name].all_items()]


def random_transaction(rng: random.Random, name: str, keys: list[str]) -> list[dict]:
    ops, used = [], set()
    for _ in range(rng.randint(1, 6)):
        sk = rng.choice(keys + [f"new{rng.randint(0, 20)}"])
        if sk in used:
            continue
        used.add(sk)
        key = {"PK": {"S": "p"}, "SK": {"S": sk}}
        kind = rng.choice(["put", "put_new", "update", "update_cond", "delete", "check"])
        if kind == "put":
            ops.append({"Put": {"TableName": name, "Item": {**key, "v": {"N": str(rng.randint(0, 5))}}}})
        elif kind == "put_new":
            put = {"TableName": name, "Item": {**key, "v": {"N": "1"}}}
            ops.append({"Put": {**put, "ConditionExpression": "attribute_not_exists(PK)"}})
        elif kind in ("update", "update_cond"):
            update = {"TableName": name, "Key": key, "UpdateExpression": "ADD v :one"}
            update["ExpressionAttributeValues"] = {":one": {"N": "1"}}
            if kind == "update_cond":
                update["ConditionExpression"] = "v < :lim"
                update["ExpressionAttributeValues"][":lim"] = {"N": str(rng.randint(0, 6))}
            ops.append({"Update": update})
        elif kind == "delete":
            ops.append({"Delete": {"TableName": name, "Key": key}})
        else:
            ops.append(
                {"ConditionCheck": {"TableName": name, "Key": key, "ConditionExpression": "attribute_exists(PK)"}}
            )
    return ops


def error_codes(ddb, ops: list[dict]):
    try:
        ddb.transact_write_items(TransactItems=ops)
    except ddb.exceptions.TransactionCanceledException as e:
        return [r.get("Code") for r in e.response.get("CancellationReasons", [])]
    except ddb.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return None


def rename(ops: list[dict], name: str) -> list[dict]:
    return [{kind: {**op, "TableName": name}} for entry in ops for kind, op in entry.items()]


@pytest.mark.parametrize("seed", range(SEED_COUNT))
def test_transactions_equal_motos_own_and_failures_change_nothing(ddb, monkeypatch, seed):
    from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends

    rng = random.Random(seed)
    backend = dynamodb_backends["123456789012"]["us-east-1"]
    keys = [f"k{i}" for i in range(12)]
    for name in ("fast", "moto"):
        make_table(ddb, name, "S")
        for sk in keys[::2]:
            ddb.put_item(TableName=name, Item={"PK": {"S": "p"}, "SK": {"S": sk}, "v": {"N": "2"}})
    failures = 0
    for _ in range(50):
        ops = random_transaction(rng, "fast", keys)
        before = table_state(backend, "fast")
        got = error_codes(ddb, ops)
        if got is not None:
            failures += 1
            assert table_state(backend, "fast") == before, ops
        with monkeypatch.context() as m:
            m.setattr(DynamoDBBackend, "transact_write_items", moto_fast.moto_path("txn"))
            want = error_codes(ddb, rename(ops, "moto"))
        assert got == want, ops
        assert table_state(backend, "fast") == table_state(backend, "moto"), ops
    assert failures > 5


def test_pages_cut_at_motos_1mb_follow_in_place_updates(ddb, monkeypatch):
    """Item sizes decide where moto's 1 MB pages end; an update that grows or shrinks a stored item in
    place moves the cut exactly as on moto's own path (the fast path remembers sizes per item)."""
    from moto.dynamodb.models.table import Table

    rng = random.Random(7)
    make_table(ddb, "t", "S")
    for i in range(14):
        item = {"PK": {"S": "p"}, "SK": {"S": f"M#{i:02d}"}, "body": {"S": "x" * rng.randint(60_000, 160_000)}}
        ddb.put_item(TableName="t", Item=item)
    for round_ in range(12):
        queries = [
            {
                "TableName": "t",
                "KeyConditionExpression": "PK = :p AND SK BETWEEN :a AND :b",
                "ExpressionAttributeValues": {":p": {"S": "p"}, ":a": {"S": "M#00"}, ":b": {"S": f"M#{hi:02d}"}},
                "ScanIndexForward": forward,
            }
            for hi in (5, 9, 13)
            for forward in (True, False)
        ]
        fast = [pages(ddb, q) for q in queries]
        with monkeypatch.context() as m:
            m.setattr(Table, "query", moto_fast.moto_path("query"))
            moto = [pages(ddb, q) for q in queries]
        assert fast == moto, round_
        assert any(len(run) > 1 for run in fast)  # some pages were cut by size
        ddb.update_item(  # moto refuses the update when old + new body exceed 405,000 bytes: stay under
            TableName="t",
            Key={"PK": {"S": "p"}, "SK": {"S": f"M#{rng.randint(0, 13):02d}"}},
            UpdateExpression="SET body = :b",
            ExpressionAttributeValues={":b": {"S": "y" * rng.choice([10, 30_000, 120_000, 240_000])}},
        )
