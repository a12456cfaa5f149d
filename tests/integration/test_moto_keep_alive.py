"""The local moto server keeps DynamoDB connections alive (local/moto_atomic.py), as DynamoDB does:
a client's calls share one connection, and each answer is the one werkzeug's own path gives (the
path every other request, and a request asking ``Connection: close``, still takes)."""

from __future__ import annotations

import socket
import uuid

import pytest
import urllib3.connection
from botocore.config import Config
from botocore.exceptions import ClientError

from local.resources import boto_session


def dynamodb(moto_server, *, close: bool = False):
    client = boto_session().client(
        "dynamodb",
        endpoint_url=moto_server.endpoint,
        config=Config(retries={"mode": "standard"}),
    )
    if close:  # every request asks the server to close: werkzeug's own path in moto_atomic

        def ask_close(request, **_):
            request.headers["Connection"] = "close"

        client.meta.events.register("before-send.dynamodb", ask_close)
    return client


@pytest.fixture
def connects(monkeypatch) -> list[str]:
    """Every new HTTP connection a client opens (its host:port)."""
    opened: list[str] = []
    connect = urllib3.connection.HTTPConnection.connect

    def counted(self):
        opened.append(f"{self.host}:{self.port}")
        return connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counted)
    return opened


def calls(client, table: str) -> list[tuple[int, dict, dict]]:
    """A mix of calls (writes, reads, a conditional failure, a cancelled transaction): each one's
    status, response headers (without Date) and body as botocore parsed it."""
    out = []

    def record(http_response, parsed, **_):
        headers = {k.lower(): v for k, v in http_response.headers.items() if k.lower() not in ("date", "connection")}
        body = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
        out.append((http_response.status_code, headers, body))

    client.meta.events.register("after-call.dynamodb", record)
    key = {"PK": {"S": "conv#1"}, "SK": {"S": "META"}}
    client.put_item(TableName=table, Item={**key, "n": {"N": "1"}, "text": {"S": "é" * 300}})
    client.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET n = n + :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="ALL_NEW",
    )
    client.get_item(TableName=table, Key=key, ConsistentRead=True)
    with pytest.raises(ClientError):
        client.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(PK)")
    with pytest.raises(ClientError):
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": key, "ConditionExpression": "attribute_not_exists(PK)"}}
            ]
        )
    client.query(
        TableName=table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": "conv#1"}},
    )
    client.meta.events.unregister("after-call.dynamodb", record)
    return out


def fresh_table(moto_server) -> str:
    name = f"t{uuid.uuid4().hex[:10]}"
    dynamodb(moto_server).create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def test_dynamodb_calls_share_one_connection(moto_server, connects):
    table = fresh_table(moto_server)
    client = dynamodb(moto_server)
    connects.clear()
    answers = calls(client, table)
    assert len(answers) == 6 and connects == [f"127.0.0.1:{moto_server.port}"]


def test_answers_equal_werkzeugs_own(moto_server, connects):
    kept_table, closed_table = fresh_table(moto_server), fresh_table(moto_server)
    kept, closed = calls(dynamodb(moto_server), kept_table), calls(dynamodb(moto_server, close=True), closed_table)
    assert len(connects) >= 6  # the closing client: one connection per call (and the tables' creation)

    def same(answers, table):
        # request ids are random; the CRC covers the body, which names its table (botocore checks it)
        masked = {"x-amzn-requestid": "-", "x-amz-crc32": "-"}
        return [(s, {**h, **masked}, repr(b).replace(table, "T")) for s, h, b in answers]

    assert same(kept, kept_table) == same(closed, closed_table)
    assert [s for s, _, _ in kept] == [200, 200, 200, 400, 400, 200]


def test_a_request_asking_close_is_closed(moto_server):
    """Raw HTTP/1.1: a keep-alive DynamoDB request leaves the socket open for the next one; a
    request with ``Connection: close`` gets its answer and then the end of the stream."""
    client = dynamodb(moto_server)
    prepared = []

    def capture(request, **_):
        prepared.append(request)

    client.meta.events.register_first("before-send.dynamodb", capture)
    client.list_tables()
    request = prepared[0]
    head = "".join(f"{k}: {v.decode() if isinstance(v, bytes) else v}\r\n" for k, v in request.headers.items())
    body = request.body if isinstance(request.body, bytes) else request.body.encode()

    def raw(connection: str) -> bytes:
        return f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Connection: {connection}\r\n\r\n".encode() + body

    with socket.create_connection(("127.0.0.1", moto_server.port), timeout=5) as sock:
        reader = sock.makefile("rb")

        def answer() -> bytes:
            status = reader.readline()
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            return status

        sock.sendall(raw("keep-alive"))
        assert answer().startswith(b"HTTP/1.1 200")
        sock.sendall(raw("close"))  # the same socket: it was kept
        assert answer().startswith(b"HTTP/1.1 200")
        assert reader.read() == b""  # then closed by the server
