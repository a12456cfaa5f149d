"""AWS calls bounded by the time left (aws/bounded.py), without sockets: the tier sessions are
replaced by doubles that answer or time out as told."""

from __future__ import annotations

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from llm_gateway.aws import bounded as bounded_aws
from llm_gateway.aws.bounded import TIERS, Tier, bound, tier_for
from llm_gateway.deadline import Deadline, bounded
from llm_gateway.errors import StoreUnavailable, to_http


class Raw:
    def stream(self, **_):
        return iter([b"{}"])


class SilentSession:
    """A tier session whose every send times out (the peer is black-holed); records the tiers used."""

    def __init__(self, tier: Tier, log: list[Tier], answer: bool = False) -> None:
        self.tier, self.log, self.answer = tier, log, answer

    def send(self, request):
        self.log.append(self.tier)
        if self.answer:
            return AWSResponse(request.url, 200, {}, Raw())
        raise ReadTimeoutError(endpoint_url=request.url)


@pytest.fixture
def client(monkeypatch):
    log: list[Tier] = []
    answering = {"value": False}
    monkeypatch.setattr(bounded_aws._Sessions, "get", lambda self, tier: SilentSession(tier, log, answering["value"]))
    c = bound(
        boto3.client(
            "dynamodb",
            region_name="us-east-1",
            endpoint_url="http://dynamodb.invalid",
            config=boto3.session.Config(retries={"mode": "standard", "max_attempts": 3}),
        )
    )
    c.log, c.answering = log, answering
    return c


def test_tiers_fit_the_time_left():
    assert tier_for(100) == TIERS[-1]
    assert tier_for(1.9).worst <= 1.9
    assert tier_for(0.1) == TIERS[0]  # less than the smallest: the smallest (a release at the deadline)
    assert [t.worst for t in TIERS] == sorted(t.worst for t in TIERS)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pytest-socket refusing the client's own connection
def test_outside_a_scope_the_client_is_untouched(client):
    assert bound(client) is client  # idempotent
    client.answering["value"] = True
    with pytest.raises(Exception) as err:  # the client's own session: no such host
        client.get_item(TableName="t", Key={"PK": {"S": "x"}})
    assert not isinstance(err.value, StoreUnavailable)
    assert client.log == []


def test_a_silent_store_is_store_unavailable_within_the_time_left_then_fails_fast(client):
    with bounded(Deadline.after(1.9)) as scope:
        with pytest.raises(StoreUnavailable) as err:
            client.get_item(TableName="t", Key={"PK": {"S": "x"}})
        assert scope.unavailable == {"dynamodb"}
        # botocore's own attempts (max_attempts 3 = 3 retries: 4 sends), each with a tier that fits the time left
        assert len(client.log) == 4 and all(t.worst <= 1.9 for t in client.log)
        tried = len(client.log)
        with pytest.raises(StoreUnavailable):
            client.put_item(TableName="t", Item={"PK": {"S": "x"}})
        assert len(client.log) == tried  # failed at once: nothing sent
    http = to_http(err.value)
    assert http.status == 503 and http.headers["Retry-After"] == "1"
    assert http.body["error"]["code"] == "store_unavailable"


def test_no_retry_starts_without_time_for_it(client):
    # less than the smallest tier: one short try, no retry
    with bounded(Deadline.after(0.3)) as scope, pytest.raises(StoreUnavailable):
        client.get_item(TableName="t", Key={"PK": {"S": "x"}})
    assert client.log == [TIERS[0]] and scope.unavailable == {"dynamodb"}


def test_an_answering_store_is_sent_through_the_tier_that_fits(client):
    client.answering["value"] = True
    with bounded(Deadline.after(30)):
        client.get_item(TableName="t", Key={"PK": {"S": "x"}})
    with bounded(Deadline.after(0.6)):
        client.get_item(TableName="t", Key={"PK": {"S": "x"}})
    assert client.log == [TIERS[-1], TIERS[0]]


def test_a_nested_scope_with_the_same_deadline_shares_what_it_learnt():
    deadline = Deadline.after(5)
    with bounded(deadline) as outer:
        outer.unavailable.add("kms")
        with bounded(deadline) as inner:
            assert inner is outer
        with bounded(Deadline.after(1)) as other:
            assert other.unavailable == set()


@pytest.mark.parametrize(
    ("status", "code"), [(400, "ProvisionedThroughputExceededException"), (400, "ThrottlingException"), (500, "X")]
)
def test_a_throttled_or_failing_store_is_store_unavailable_not_a_client_error(monkeypatch, status, code):
    import json

    class Busy:
        def send(self, request):
            body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "slow down"}).encode()

            class Raw:
                def stream(self, **_):
                    return iter([body])

            return AWSResponse(request.url, status, {"x-amzn-ErrorType": code}, Raw())

    monkeypatch.setattr(bounded_aws._Sessions, "get", lambda self, tier: Busy())
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)
    c = bound(boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://dynamodb.invalid"))
    with bounded(Deadline.after(10)), pytest.raises(StoreUnavailable) as err:
        c.get_item(TableName="t", Key={"PK": {"S": "x"}})
    assert to_http(err.value).headers["Retry-After"] == "1"


def test_a_conditional_check_failure_stays_a_client_error(monkeypatch):
    import json

    from botocore.exceptions import ClientError

    class Refused:
        def send(self, request):
            body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}).encode()

            class Raw:
                def stream(self, **_):
                    return iter([body])

            return AWSResponse(request.url, 400, {}, Raw())

    monkeypatch.setattr(bounded_aws._Sessions, "get", lambda self, tier: Refused())
    c = bound(boto3.client("dynamodb", region_name="us-east-1", endpoint_url="http://dynamodb.invalid"))
    with bounded(Deadline.after(10)), pytest.raises(ClientError):
        c.put_item(TableName="t", Item={"PK": {"S": "x"}}, ConditionExpression="attribute_not_exists(PK)")
