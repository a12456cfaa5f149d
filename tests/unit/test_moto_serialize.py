"""local/moto_serialize.py writes moto's own response bodies, byte for byte.

Random tables (string and number sort keys, a global and a local secondary index, items holding
every attribute type nested at random, binary included), random reads of every kind the fast
writer serves — Query on the table and on each index with random key conditions, directions,
limits, start keys, filters, projections and consumed-capacity modes, Scan, GetItem,
BatchGetItem and TransactGetItems — and for every response the fast body is compared with the
body moto's own serializer writes for the same result: same status, headers and bytes.
"""

from __future__ import annotations

import base64
import random
import string

import boto3
import pytest
from moto import mock_aws

from local import moto_fast, moto_serialize

SEED_COUNT = 4
PKS = ["p0", "p1", "T#x#C#y"]


@pytest.fixture
def ddb():
    moto_fast.install()
    try:
        with mock_aws():
            yield boto3.client("dynamodb", region_name="us-east-1")
    finally:
        moto_fast.uninstall()


@pytest.fixture
def compared(monkeypatch):
    """Every fast body next to moto's own for the same result: {operation: responses compared}."""
    from moto.core.responses import ActionResult

    seen: dict[str, int] = {}
    real = moto_serialize.fast_body

    def spy(context, result, moto_execute):
        fast = real(context, result, moto_execute)
        if fast is not None:
            want = ActionResult.execute_result(ActionResult(moto_serialize.plain(result)), context)
            assert fast == want, context.operation_model.name
            seen[context.operation_model.name] = seen.get(context.operation_model.name, 0) + 1
        return fast

    monkeypatch.setattr(moto_serialize, "fast_body", spy)
    return seen


def make_table(ddb, name: str, sort_type: str) -> None:
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": sort_type},
            {"AttributeName": "GPK", "AttributeType": "S"},
            {"AttributeName": "GSK", "AttributeType": "N"},
            {"AttributeName": "LSK", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "GPK", "KeyType": "HASH"},
                    {"AttributeName": "GSK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["n", "m"]},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "LSI1",
                "KeySchema": [
                    {"AttributeName": "PK", "KeyType": "HASH"},
                    {"AttributeName": "LSK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def sort_value(rng: random.Random, sort_type: str) -> dict:
    if sort_type == "N":
        return {"N": str(rng.choice([rng.randint(-50, 50), round(rng.uniform(-50, 50), 2)]))}
    return {"S": rng.choice(["M#", "META", "A", "z"]) + "".join(rng.choices(string.ascii_letters + "#", k=3))}


def text(rng: random.Random) -> str:
    return "".join(rng.choices(string.printable + 'é€😀"\\', k=rng.choice([0, 1, 8, 200])))


def attribute(rng: random.Random, depth: int = 0) -> dict:
    kinds = ["S", "N", "B", "SS", "NS", "BS", "BOOL", "NULL"] + (["M", "L"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "S":
        return {"S": text(rng) or "s"}
    if kind == "N":
        return {"N": rng.choice(["0", "-1", "3.25", "1e3", "12345678901234567890", "0.000001"])}
    if kind == "B":
        return {"B": rng.randbytes(rng.choice([1, 5, 64]))}
    if kind == "SS":
        return {"SS": list({text(rng) or "x" for _ in range(rng.randint(1, 4))})}
    if kind == "NS":
        return {"NS": list({str(rng.randint(-9, 9)) for _ in range(rng.randint(1, 4))})}
    if kind == "BS":
        return {"BS": list({rng.randbytes(3) for _ in range(rng.randint(1, 3))})}
    if kind == "BOOL":
        return {"BOOL": rng.random() < 0.5}
    if kind == "NULL":
        return {"NULL": True}
    if kind == "M":
        return {"M": {rng.choice(["a", "b", "c d", "é"]): attribute(rng, depth + 1) for _ in range(rng.randint(0, 3))}}
    return {"L": [attribute(rng, depth + 1) for _ in range(rng.randint(0, 3))]}


def fill(ddb, rng: random.Random, name: str, sort_type: str) -> list[dict]:
    items = {}
    for _ in range(rng.randint(30, 90)):
        item = {"PK": {"S": rng.choice(PKS)}, "SK": sort_value(rng, sort_type), "n": {"N": str(rng.randint(0, 9))}}
        if rng.random() < 0.7:
            item.update(GPK={"S": rng.choice(["g0", "g1"])}, GSK={"N": str(rng.randint(0, 30))})
        if rng.random() < 0.5:
            item["LSK"] = {"S": rng.choice(["a", "b", "c"]) + str(rng.randint(0, 99))}
        item.update({f"a{i}": attribute(rng) for i in range(rng.randint(0, 5))})
        if rng.random() < 0.5:
            item["m"] = {"M": {"a": attribute(rng, 2), "b": {"L": [attribute(rng, 2)]}}}
        items[(item["PK"]["S"], str(item["SK"]))] = item
    for item in items.values():
        ddb.put_item(TableName=name, Item=item)
    ddb.update_item(  # numbers written by moto's own arithmetic, too
        TableName=name,
        Key={"PK": next(iter(items.values()))["PK"], "SK": next(iter(items.values()))["SK"]},
        UpdateExpression="ADD n :d SET z = :z",
        ExpressionAttributeValues={":d": {"N": "1.5"}, ":z": {"L": [{"N": "2"}, {"B": b"\x00\xff"}]}},
    )
    return list(items.values())


PROJECTIONS = ["SK, n", "#m.a, a0, a1[0]", "PK, SK, GSK, m.b[0]", "nope"]


def random_query(rng: random.Random, name: str, items: list[dict], sort_type: str) -> dict:
    index = rng.choice([None, None, "GSI1", "LSI1"])
    hash_name, range_name, hash_value = {
        None: ("PK", "SK", {"S": rng.choice(PKS)}),
        "GSI1": ("GPK", "GSK", {"S": rng.choice(["g0", "g1"])}),
        "LSI1": ("PK", "LSK", {"S": rng.choice(PKS)}),
    }[index]
    existing = [i[range_name] for i in items if i.get(hash_name) == hash_value and range_name in i]
    values: dict = {":h": hash_value}
    key = f"{hash_name} = :h"
    op = rng.choice(["none", "=", "<", ">=", "between"])
    if op != "none" and existing:
        a, b = sorted([rng.choice(existing), rng.choice(existing)], key=lambda v: float(v["N"]) if "N" in v else v["S"])
        values[":a"] = a
        key += f" AND {range_name} BETWEEN :a AND :b" if op == "between" else f" AND {range_name} {op} :a"
        if op == "between":
            values[":b"] = b
    params: dict = {"TableName": name, "KeyConditionExpression": key, "ExpressionAttributeValues": values}
    if index:
        params["IndexName"] = index
    if rng.random() < 0.5:
        params["ScanIndexForward"] = rng.random() < 0.5
    if rng.random() < 0.7:
        params["Limit"] = rng.choice([1, 2, 5, 50])
    if rng.random() < 0.3:
        params["FilterExpression"] = "n > :n"
        values[":n"] = {"N": str(rng.randint(0, 9))}
    if index != "GSI1" and rng.random() < 0.3:
        params["ProjectionExpression"] = rng.choice(PROJECTIONS)
        if "#m" in params["ProjectionExpression"]:
            params["ExpressionAttributeNames"] = {"#m": "m"}
    if rng.random() < 0.3:
        params["ReturnConsumedCapacity"] = rng.choice(["TOTAL", "INDEXES", "NONE"])
    if "ProjectionExpression" not in params and rng.random() < 0.1:
        params["Select"] = "COUNT"
    return params


def all_pages(call, params: dict, max_pages: int = 30) -> list[dict]:
    out, params = [], dict(params)
    for _ in range(max_pages):
        page = call(**params)
        out.append(page)
        if "LastEvaluatedKey" not in page:
            break
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]  # start keys of every page, index keys too
    return out


@pytest.mark.parametrize("sort_type", ["S", "N"])
@pytest.mark.parametrize("seed", range(SEED_COUNT))
def test_read_bodies_equal_motos_own(ddb, compared, seed, sort_type):
    rng = random.Random(f"{seed}-{sort_type}")
    make_table(ddb, "t", sort_type)
    items = fill(ddb, rng, "t", sort_type)
    for _ in range(30):
        all_pages(ddb.query, random_query(rng, "t", items, sort_type))
    all_pages(ddb.scan, {"TableName": "t", "Limit": rng.choice([3, 40])})
    keys = [{"PK": i["PK"], "SK": i["SK"]} for i in rng.sample(items, 12)]
    absent = {"PK": {"S": "absent"}, "SK": sort_value(rng, sort_type)}
    for key in [*keys, absent]:
        ddb.get_item(TableName="t", Key=key, ReturnConsumedCapacity="TOTAL")
        ddb.get_item(TableName="t", Key=key, ProjectionExpression="#m.a, n", ExpressionAttributeNames={"#m": "m"})
    ddb.batch_get_item(RequestItems={"t": {"Keys": [*keys, absent]}}, ReturnConsumedCapacity="TOTAL")
    ddb.batch_get_item(RequestItems={"t": {"Keys": keys[:5], "ProjectionExpression": "SK, a0"}})
    ddb.transact_get_items(
        TransactItems=[{"Get": {"TableName": "t", "Key": k}} for k in [*keys[:6], absent]],
        ReturnConsumedCapacity=rng.choice(["TOTAL", "INDEXES", "NONE"]),
    )
    assert set(compared) == {"Query", "Scan", "GetItem", "BatchGetItem", "TransactGetItems"}
    assert compared["Query"] >= 30


def test_client_sees_the_items_it_wrote(ddb, compared):
    """End to end through boto3's parser: binary, sets, nesting and unicode come back intact."""
    make_table(ddb, "t", "S")
    item = {
        "PK": {"S": "p"},
        "SK": {"S": "s"},
        "b": {"B": b"\x00\x01\xfe\xff"},
        "bs": {"BS": [b"a", b"\x00"]},
        "m": {"M": {"é": {"L": [{"NULL": True}, {"BOOL": False}, {"NS": ["1", "2.5"]}, {"SS": ["x", '"q"']}]}}},
        "s": {"S": "😀 \\ \n"},
    }
    ddb.put_item(TableName="t", Item=item)
    got = ddb.query(TableName="t", KeyConditionExpression="PK = :p", ExpressionAttributeValues={":p": {"S": "p"}})
    (returned,) = got["Items"]
    assert {k: v for k, v in returned.items() if k not in ("bs", "m")} == {
        k: v for k, v in item.items() if k not in ("bs", "m")
    }
    assert sorted(returned["bs"]["BS"]) == sorted(item["bs"]["BS"])
    assert returned["m"]["M"]["é"]["L"][:2] == [{"NULL": True}, {"BOOL": False}]
    assert ddb.get_item(TableName="t", Key={"PK": {"S": "p"}, "SK": {"S": "s"}})["Item"]["b"] == item["b"]
    assert compared == {"Query": 1, "GetItem": 1}


def test_values_it_does_not_know_are_left_to_moto():
    """A value the fast writer does not know is left to moto's serializer, never guessed."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    odd = DynamoType({"S": "a"})
    odd.value = 5  # not a string: moto's serializer would write "5"
    for value in (odd, {"S": "a"}, DynamoType({"X": "a"})):
        with pytest.raises(moto_serialize._NotPlain):
            moto_serialize.attribute_value(value)
    raw = DynamoType({"B": base64.b64encode(b"\xff").decode()})
    assert moto_serialize.attribute_value(raw) == {"B": base64.b64encode(b"\xff").decode()}
