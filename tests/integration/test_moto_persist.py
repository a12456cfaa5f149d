"""moto's state on disk (local/moto_persist.py): every kind of DynamoDB write is journalled, a
SIGKILL loses only what was written after the last flush, SQS messages and the KMS key return."""

from __future__ import annotations

import contextlib
import random
import time

from local.moto_persist import FLUSH_SECONDS
from local.resources import MotoServer, boto_session, provision


def scan_all(ddb, table: str) -> list[dict]:
    items = [i for page in ddb.get_paginator("scan").paginate(TableName=table) for i in page["Items"]]
    return sorted(items, key=lambda i: (i["PK"]["S"], i["SK"]["S"]))


def random_writes(ddb, table: str, rng: random.Random, n: int) -> None:
    def key(pk=None):
        return {"PK": {"S": pk or f"p{rng.randint(0, 3)}"}, "SK": {"S": f"s{rng.randint(0, 30)}"}}

    for _ in range(n):
        kind = rng.choice(["put", "update", "delete", "batch", "txn", "txn_fail"])
        if kind == "put":
            ddb.put_item(TableName=table, Item={**key(), "v": {"N": str(rng.randint(0, 9))}})
        elif kind == "update":
            ddb.update_item(
                TableName=table, Key=key(), UpdateExpression="ADD v :o", ExpressionAttributeValues={":o": {"N": "1"}}
            )
        elif kind == "delete":
            ddb.delete_item(TableName=table, Key=key())
        elif kind == "batch":
            keys = {str(k): k for k in (key() for _ in range(5))}.values()
            writes = [
                {"PutRequest": {"Item": {**k, "b": {"S": "x"}}}}
                if rng.random() < 0.7
                else {"DeleteRequest": {"Key": k}}
                for k in keys
            ]
            ddb.batch_write_item(RequestItems={table: writes})
        else:
            k1, k2 = key("t1"), key("t2")
            cond = (
                "attribute_not_exists(PK)" if kind == "txn_fail" else "attribute_exists(PK) OR attribute_not_exists(PK)"
            )
            with contextlib.suppress(ddb.exceptions.TransactionCanceledException):
                ddb.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": table, "Item": {**k1, "t": {"S": "1"}}}},
                        {"Put": {"TableName": table, "Item": {**k2, "t": {"S": "2"}}, "ConditionExpression": cond}},
                    ]
                )


def test_every_write_kind_survives_sigkill_after_a_flush(tmp_path):
    session = boto_session()
    rng = random.Random(7)
    moto = MotoServer(data_dir=tmp_path).start()
    try:
        res = provision(session, moto.endpoint)
        ddb, sqs, kms = (session.client(s, endpoint_url=moto.endpoint) for s in ("dynamodb", "sqs", "kms"))
        random_writes(ddb, res.table_name, rng, 200)
        sqs.send_message(
            QueueUrl=res.dead_letter_queue_url, MessageBody="m", MessageGroupId="g", MessageDeduplicationId="1"
        )
        ciphertext = kms.encrypt(KeyId=res.kms_key_id, Plaintext=b"provider key")["CiphertextBlob"]
        want = scan_all(ddb, res.table_name)
        time.sleep(FLUSH_SECONDS * 2.5)
        moto._proc.kill()  # SIGKILL: no chance to flush again
        moto._proc.wait()
    finally:
        moto.stop()
    assert len(want) > 20

    with MotoServer(data_dir=tmp_path) as again:
        res2 = provision(session, again.endpoint)
        ddb, sqs, kms = (session.client(s, endpoint_url=again.endpoint) for s in ("dynamodb", "sqs", "kms"))
        assert scan_all(ddb, res2.table_name) == want
        assert kms.decrypt(CiphertextBlob=ciphertext)["Plaintext"] == b"provider key"
        assert res2.kms_key_id == res.kms_key_id
        got = sqs.receive_message(QueueUrl=res2.dead_letter_queue_url).get("Messages", [])
        assert [m["Body"] for m in got] == ["m"]
        # the restored table keeps taking writes, and they persist across a clean stop too
        random_writes(ddb, res2.table_name, rng, 50)
        want2 = scan_all(ddb, res2.table_name)
    with MotoServer(data_dir=tmp_path) as third:
        res3 = provision(session, third.endpoint)
        assert scan_all(session.client("dynamodb", endpoint_url=third.endpoint), res3.table_name) == want2


def test_without_a_data_folder_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session = boto_session()
    with MotoServer() as moto:
        res = provision(session, moto.endpoint)
        session.client("dynamodb", endpoint_url=moto.endpoint).put_item(
            TableName=res.table_name, Item={"PK": {"S": "a"}, "SK": {"S": "b"}}
        )
    assert list(tmp_path.iterdir()) == []
