"""local/moto_gsi.py answers a GSI Query exactly as moto does, and its index follows every write.

Random tables (string and number index sort keys, several index partitions, items that share an
index sort key so the table key breaks the tie, items without the index's attributes), then
rounds of random writes — puts over existing items, updates that move an item to another index
partition or sort key or out of the index, deletes, batch writes, transactions that commit and
transactions that fail — each round followed by random index queries (key conditions,
directions, limits, start keys, filter and projection expressions): every page of the indexed
path equals moto's own ``Table.query`` on the same request.
"""

from __future__ import annotations

import random

import boto3
import pytest
from moto import mock_aws

from local import moto_fast

SEED_COUNT = 4
TENANTS = ["t0", "t1", "t2"]


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
            {"AttributeName": "SK", "AttributeType": "S"},
            {"AttributeName": "G1", "AttributeType": "S"},
            {"AttributeName": "G1S", "AttributeType": sort_type},
            {"AttributeName": "G2", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [{"AttributeName": "G1", "KeyType": "HASH"}, {"AttributeName": "G1S", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["n"]},
            },
            {  # the table's sort key as the index's: ties on G2 never happen, ALL projection
                "IndexName": "GSI2",
                "KeySchema": [{"AttributeName": "G2", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def index_sort(rng: random.Random, sort_type: str) -> dict:
    if sort_type == "N":
        return {"N": str(rng.choice([rng.randint(0, 12), round(rng.uniform(0, 12), 1)]))}
    return {"S": rng.choice(["2026-01-0", "2026-01-1", "2026-02-0", "A", "Z"]) + str(rng.randint(0, 3))}


def random_item(rng: random.Random, sort_type: str) -> dict:
    item = {
        "PK": {"S": rng.choice(["p0", "p1", "T#a#C#b"])},
        "SK": {"S": rng.choice(["META", "K#", "M#"]) + str(rng.randint(0, 30))},
        "n": {"N": str(rng.randint(0, 9))},
        "body": {"S": "x" * rng.choice([1, 10, 100, 2000])},
    }
    if rng.random() < 0.8:
        item["G1"] = {"S": rng.choice(TENANTS)}
    if rng.random() < 0.8:
        item["G1S"] = index_sort(rng, sort_type)
    if rng.random() < 0.4:
        item["G2"] = {"S": rng.choice(TENANTS)}
    return item


def key_of(item: dict) -> dict:
    return {"PK": item["PK"], "SK": item["SK"]}


def random_update(rng: random.Random, name: str, key: dict, sort_type: str) -> dict:
    kind = rng.choice(["sort", "tenant", "remove", "count", "g2"])
    update: dict = {"TableName": name, "Key": key}
    if kind == "sort":
        update.update(UpdateExpression="SET G1S = :v", ExpressionAttributeValues={":v": index_sort(rng, sort_type)})
    elif kind == "tenant":
        update.update(UpdateExpression="SET G1 = :v", ExpressionAttributeValues={":v": {"S": rng.choice(TENANTS)}})
    elif kind == "remove":
        update["UpdateExpression"] = rng.choice(["REMOVE G1S", "REMOVE G1", "REMOVE G2"])
    elif kind == "count":
        update.update(UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}})
    else:
        update.update(UpdateExpression="SET G2 = :v", ExpressionAttributeValues={":v": {"S": rng.choice(TENANTS)}})
    return update


def random_write(ddb, rng: random.Random, name: str, known: list[dict], sort_type: str) -> None:
    kind = rng.choice(["put", "put", "update", "update", "delete", "batch", "txn", "txn_fail"])
    key = key_of(rng.choice(known)) if known and rng.random() < 0.8 else key_of(random_item(rng, sort_type))
    if kind == "put":
        item = {**random_item(rng, sort_type), **key}
        ddb.put_item(TableName=name, Item=item)
        known.append(item)
    elif kind == "update":
        ddb.update_item(**random_update(rng, name, key, sort_type))
    elif kind == "delete":
        ddb.delete_item(TableName=name, Key=key)
    elif kind == "batch":
        writes, seen = [], set()
        for _ in range(rng.randint(1, 6)):
            item = random_item(rng, sort_type)
            if str(key_of(item)) in seen:
                continue
            seen.add(str(key_of(item)))
            known.append(item)
            write = {"PutRequest": {"Item": item}} if rng.random() < 0.7 else {"DeleteRequest": {"Key": key_of(item)}}
            writes.append(write)
        ddb.batch_write_item(RequestItems={name: writes})
    else:
        ops, seen = [], set()
        for _ in range(rng.randint(1, 4)):
            op_key = key_of(rng.choice(known)) if known else key
            if str(op_key) in seen:
                continue
            seen.add(str(op_key))
            choice = rng.choice(["put", "update", "delete"])
            if choice == "put":
                ops.append({"Put": {"TableName": name, "Item": {**random_item(rng, sort_type), **op_key}}})
            elif choice == "update":
                ops.append({"Update": random_update(rng, name, op_key, sort_type)})
            else:
                ops.append({"Delete": {"TableName": name, "Key": op_key}})
        if kind == "txn_fail":  # the last write's condition fails: nothing of the transaction stays
            fail_key = {"PK": {"S": "nowhere"}, "SK": {"S": str(rng.random())}}
            check = {"TableName": name, "Key": fail_key, "ConditionExpression": "attribute_exists(PK)"}
            ops.append({"ConditionCheck": check})
        try:
            ddb.transact_write_items(TransactItems=ops)
        except ddb.exceptions.TransactionCanceledException:
            assert kind == "txn_fail"


def index_items(ddb, name: str) -> list[dict]:
    return [i for page in ddb.get_paginator("scan").paginate(TableName=name) for i in page["Items"]]


def random_query(rng: random.Random, name: str, items: list[dict], sort_type: str) -> dict:
    index = rng.choice(["GSI1", "GSI1", "GSI2"])
    hash_attr, sort_attr = ("G1", "G1S") if index == "GSI1" else ("G2", "SK")
    tenant = rng.choice([*TENANTS, "absent"])
    values: dict = {":t": {"S": tenant}}
    members = [i for i in items if i.get(hash_attr, {}).get("S") == tenant and sort_attr in i]
    kind = sort_type if index == "GSI1" else "S"

    def value():
        if members and rng.random() < 0.6:
            return rng.choice(members)[sort_attr]
        return index_sort(rng, kind) if index == "GSI1" else {"S": rng.choice(["META", "K#1", "M#2", "M#"])}

    ops = ["none", "=", "<", "<=", ">", ">=", "between"] + (["begins_with"] if kind == "S" else [])
    op = rng.choice(ops)
    condition = f"{hash_attr} = :t"
    if op == "between":
        a, b = sorted([value(), value()], key=lambda v: float(v["N"]) if "N" in v else v["S"])
        values.update({":a": a, ":b": b})
        condition += f" AND {sort_attr} BETWEEN :a AND :b"
    elif op == "begins_with":
        values[":a"] = {"S": rng.choice(["2026-01", "2026-0", "A", "M#", "K", "Q"])}
        condition += f" AND begins_with({sort_attr}, :a)"
    elif op != "none":
        values[":a"] = value()
        condition += f" AND {sort_attr} {op} :a"
    params: dict = {"TableName": name, "IndexName": index, "KeyConditionExpression": condition}
    if rng.random() < 0.5:
        params["ScanIndexForward"] = rng.random() < 0.5
    if rng.random() < 0.7:
        params["Limit"] = rng.choice([1, 2, 3, 5, 50])
    if rng.random() < 0.3:
        params["FilterExpression"] = "n > :n"
        values[":n"] = {"N": str(rng.randint(0, 9))}
    if rng.random() < 0.2:
        params["ProjectionExpression"] = "PK, n"
    if members and rng.random() < 0.3:
        start = rng.choice(members)
        params["ExclusiveStartKey"] = {"PK": start["PK"], "SK": start["SK"], hash_attr: start[hash_attr]}
        params["ExclusiveStartKey"][sort_attr] = start[sort_attr] if rng.random() < 0.7 else value()
    params["ExpressionAttributeValues"] = values
    return params


def pages(ddb, params: dict, max_pages: int = 30) -> list[dict]:
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
def test_index_pages_equal_motos_own_through_writes(ddb, monkeypatch, seed, sort_type):
    from moto.dynamodb.models.table import Table

    rng = random.Random(f"gsi-{seed}-{sort_type}")
    make_table(ddb, "t", sort_type)
    known: list[dict] = []
    for _ in range(rng.randint(30, 90)):
        item = random_item(rng, sort_type)
        ddb.put_item(TableName="t", Item=item)
        known.append(item)
    walks = []
    original_all_items = Table.all_items
    returned = 0
    for _ in range(5):
        items = index_items(ddb, "t")
        queries = [random_query(rng, "t", items, sort_type) for _ in range(15)]
        with monkeypatch.context() as m:  # the indexed path never walks the table
            m.setattr(Table, "all_items", lambda self: walks.append(1) or original_all_items(self))
            fast = [pages(ddb, q) for q in queries]
        with monkeypatch.context() as m:
            m.setattr(Table, "query", moto_fast.moto_path("query"))
            moto = [pages(ddb, q) for q in queries]
        for query, got, want in zip(queries, fast, moto, strict=True):
            assert got == want, query
        returned += sum(len(p.get("Items", [])) for run in fast for p in run)
        for _ in range(rng.randint(10, 40)):
            random_write(ddb, rng, "t", known, sort_type)
    assert walks == []
    assert returned > 0


def test_a_mistyped_index_key_goes_to_motos_own_query(ddb):
    """moto stores an index key of the wrong type (DynamoDB rejects the write): moto's path answers."""
    from moto.dynamodb.models.table import Table

    make_table(ddb, "t", "S")
    ddb.put_item(TableName="t", Item={"PK": {"S": "a"}, "SK": {"S": "1"}, "G1": {"S": "t0"}, "G1S": {"S": "x"}})
    query = {
        "TableName": "t",
        "IndexName": "GSI1",
        "KeyConditionExpression": "G1 = :t",
        "ExpressionAttributeValues": {":t": {"S": "t0"}},
    }
    walks = []
    original = Table.all_items
    Table.all_items = lambda self: walks.append(1) or original(self)
    try:
        assert [i["SK"]["S"] for i in ddb.query(**query)["Items"]] == ["1"]
        assert walks == []
        ddb.put_item(TableName="t", Item={"PK": {"S": "b"}, "SK": {"S": "1"}, "G1": {"S": "t1"}, "G1S": {"N": "1"}})
        assert [i["SK"]["S"] for i in ddb.query(**query)["Items"]] == ["1"]
        assert walks  # moto's own path answered
        ddb.delete_item(TableName="t", Key={"PK": {"S": "b"}, "SK": {"S": "1"}})
        walks.clear()
        assert [i["SK"]["S"] for i in ddb.query(**query)["Items"]] == ["1"]
        assert walks == []  # the mistyped item is gone: the index answers again
    finally:
        Table.all_items = original


def test_an_index_page_reads_only_the_page(ddb):
    """A conversation list's page touches the items it returns, not the index partition or the table."""
    from moto.dynamodb.models.dynamo_type import Item

    make_table(ddb, "t", "S")
    for i in range(400):
        item = {"PK": {"S": f"c{i}"}, "SK": {"S": "META"}, "G1": {"S": "t0"}, "G1S": {"S": f"2026-{i:05d}"}}
        ddb.put_item(TableName="t", Item=item)
    query = {
        "TableName": "t",
        "IndexName": "GSI1",
        "KeyConditionExpression": "G1 = :t",
        "ExpressionAttributeValues": {":t": {"S": "t0"}},
        "ScanIndexForward": False,
        "Limit": 5,
    }
    ddb.query(**query)  # builds the index (once per table)
    sized = []
    original = Item.size
    Item.size = lambda self: sized.append(1) or original(self)
    try:
        page = ddb.query(**query)
    finally:
        Item.size = original
    assert [i["PK"]["S"] for i in page["Items"]] == [f"c{i}" for i in range(399, 394, -1)]
    assert page["LastEvaluatedKey"]["PK"] == {"S": "c395"}
    assert len(sized) <= 12
