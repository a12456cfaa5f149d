"""The default clients (llm_gateway.aws): the DynamoDB one sends without botocore's client-side
parameter validation (the stores build every request; the tests' own clients validate them), the
others keep it."""

from __future__ import annotations

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ParamValidationError


class Sent:
    """A before-send handler answering every request itself (no socket), recording what was sent."""

    def __init__(self, body: bytes = b"{}") -> None:
        self.requests: list = []
        self.body = body

    def __call__(self, request, **_):
        self.requests.append(request)

        class Raw:
            def stream(self, *_a, **_k):
                yield self_body

        self_body = self.body
        return AWSResponse(request.url, 200, {"x-amzn-requestid": "r"}, Raw())


@pytest.fixture
def fresh(monkeypatch):
    from llm_gateway import aws

    monkeypatch.setattr(aws, "_clients", {})
    monkeypatch.setattr(aws, "_session", [])
    return aws


def test_the_dynamodb_client_sends_without_client_side_validation(fresh):
    client = fresh.client("dynamodb")
    sent = Sent()
    client.meta.events.register_first("before-send.dynamodb", sent)
    # a request botocore's validator refuses: GetItem without its required Key, a Limit below 1
    client.get_item(TableName="table")  # type: ignore[call-arg]
    client.query(TableName="table", Limit=0)
    assert [r.body for r in sent.requests] == [b'{"TableName": "table"}', b'{"TableName": "table", "Limit": 0}']


def test_kms_and_sqs_clients_keep_botocore_validation(fresh):
    for service, call in (("kms", "encrypt"), ("sqs", "send_message")):
        client = fresh.client(service)
        sent = Sent()
        client.meta.events.register_first(f"before-send.{service}", sent)
        with pytest.raises(ParamValidationError):
            getattr(client, call)()
        assert sent.requests == []
