"""A partition between the gateway and DynamoDB (issue 13 item 1): a loopback TCP proxy in front of
moto stops forwarding while a turn or a stream is in flight (for KMS and SQS: before the call).
The turn answers 503 store_unavailable with Retry-After (a stream ends with that error event)
within its deadline — no hang, no generic 500; nothing of the turn is stored; once the partition
heals the conversation takes a turn again as soon as the lease taken before the failure expires.

Deadlines are 2 s; the bounds asserted are the deadline + 3 s (the issue's behaviour is the
deadline + 1 s; the extra is slack for a loaded CI machine, not part of the behaviour).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import requests
from botocore.config import Config

from llm_gateway.conversations.store import conversation_pk
from local.resources import boto_session
from tests.integration.conftest import make_gateway, mocked_upstream, table_snapshot
from tests.integration.live import live_gateway
from tests.loopback import TcpProxy

DEADLINE = 2.0
SLACK = 3.0  # generous: a loaded 2-core machine must not make these flaky
GRACE = 1.0  # lease_grace_seconds: a turn's lease outlives its deadline by this
PARTITION = dict(
    request_deadline_seconds=DEADLINE,
    stream_deadline_seconds=DEADLINE,
    lease_grace_seconds=GRACE,
    stream_lease_seconds=DEADLINE,
    stream_lease_renew_seconds=DEADLINE,
)


def moto_target(aws) -> tuple[str, int]:
    parts = urlsplit(aws.endpoint)
    return parts.hostname or "127.0.0.1", parts.port or 80


def through(proxy: TcpProxy):
    return boto_session().client(
        "dynamodb", endpoint_url=proxy.url, config=Config(retries={"mode": "standard"}, max_pool_connections=64)
    )


def stored(aws, tenant: str, conv: str) -> list[dict]:
    """The conversation's items as moto holds them (read directly, not through the proxy), without the
    lease attributes (a lease taken before the partition is left to expire)."""
    pk = conversation_pk(tenant, conv)
    items = [i for i in table_snapshot(aws.client("dynamodb"), aws.res.table_name) if i["PK"]["S"] == pk]
    return [{k: v for k, v in i.items() if k not in ("lease_id", "lease_expires")} for i in items]


def chat(gw, text: str, conv: str, *, stream: bool = False) -> requests.Response:
    body = {"model": "default", "messages": [{"role": "user", "content": text}], "conversation_id": conv}
    if stream:
        body["stream"] = True
    return requests.post(gw.base_url + "/chat/completions", json=body, headers=gw.headers(), timeout=30, stream=stream)


def heal_and_take_a_turn(gw, proxy: TcpProxy, conv: str, lease_seconds: float) -> float:
    """Heal the partition; turn until one succeeds (409 while the old lease lasts). Seconds it took."""
    proxy.heal()
    healed = time.monotonic()
    while True:
        r = chat(gw, "after", conv)
        if r.status_code == 200:
            return time.monotonic() - healed
        assert r.status_code == 409, r.text  # the lease of the cut turn, until it expires
        assert time.monotonic() - healed < lease_seconds + SLACK, "the lease did not expire"
        time.sleep(0.2)


def test_dynamodb_partition_mid_turn_is_a_503_and_nothing_half_stored(aws):
    with TcpProxy(moto_target(aws)) as proxy, live_gateway(aws, dynamodb=through(proxy), **PARTITION) as gw:
        conv = requests.post(gw.base_url + "/conversations", json={}, headers=gw.headers()).json()["id"]
        assert chat(gw, "one", conv).status_code == 200  # (also caches the caller's key)
        before = stored(aws, "tenant-live", conv)

        gw.upstream.script({"hang": True})  # the upstream call is in flight when the partition starts
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(chat, gw, "two", conv)
            assert gw.upstream.wait_for_blocked(1, timeout=10)
            proxy.blackhole()
            gw.upstream.release()
            r = pending.result(timeout=30)
        elapsed = time.monotonic() - started

        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable"
        assert r.json()["error"]["type"] == "service_unavailable"
        assert r.headers["Retry-After"] == "1"
        assert elapsed < DEADLINE + SLACK, elapsed
        assert stored(aws, "tenant-live", conv) == before  # nothing of the cut turn

        waited = heal_and_take_a_turn(gw, proxy, conv, DEADLINE + GRACE)
        assert waited < DEADLINE + GRACE + SLACK
        texts = [json.loads(i["msg"]["S"]).get("content") for i in stored(aws, "tenant-live", conv) if "msg" in i]
        assert texts[0] == "one" and texts[2] == "after" and len(texts) == 4  # "two" was never stored


def test_dynamodb_partition_mid_stream_ends_with_an_error_event(aws):
    with TcpProxy(moto_target(aws)) as proxy, live_gateway(aws, dynamodb=through(proxy), **PARTITION) as gw:
        conv = requests.post(gw.base_url + "/conversations", json={}, headers=gw.headers()).json()["id"]
        assert chat(gw, "one", conv).status_code == 200
        before = stored(aws, "tenant-live", conv)

        gw.upstream.script({"block_after": 1, "reply": "a b c d"})  # the stream is flowing, then waits
        started = time.monotonic()
        with chat(gw, "two", conv, stream=True) as r:
            assert r.status_code == 200
            lines = r.iter_lines(decode_unicode=True)
            events = []
            for line in lines:
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:  # role + one content chunk have reached the client
                        break
            assert gw.upstream.wait_for_blocked(1, timeout=10)
            proxy.blackhole()
            gw.upstream.release()
            events += [line[6:] for line in lines if line.startswith("data: ")]
        elapsed = time.monotonic() - started

        assert events[-1] != "[DONE]"
        error = json.loads(events[-1])["error"]
        assert error["code"] == "store_unavailable" and error["type"] == "service_unavailable"
        assert elapsed < DEADLINE + SLACK, elapsed
        assert stored(aws, "tenant-live", conv) == before  # the reply was not stored as complete

        waited = heal_and_take_a_turn(gw, proxy, conv, DEADLINE + GRACE)
        assert waited < DEADLINE + GRACE + SLACK


def client_through(proxy: TcpProxy, service: str):
    return boto_session().client(service, endpoint_url=proxy.url, config=Config(retries={"mode": "standard"}))


def test_kms_partition_is_a_503_within_the_deadline_and_no_upstream_call(aws):
    with TcpProxy(moto_target(aws)) as proxy, mocked_upstream() as mock:
        gw = make_gateway(aws, kms=client_through(proxy, "kms"), request_deadline_seconds=DEADLINE)
        gw.upstream = mock
        proxy.blackhole()  # before the provider key's first decrypt
        started = time.monotonic()
        r = gw.post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "x"}]})
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable" and r.headers["Retry-After"] == "1"
        assert elapsed < DEADLINE + SLACK, elapsed
        assert gw.upstream_calls() == []
        proxy.heal()
        assert (
            gw.post(
                "/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "x"}]}
            ).status_code
            == 200
        )


def test_sqs_partition_is_a_503_within_the_deadline(aws):
    with TcpProxy(moto_target(aws)) as proxy, mocked_upstream() as mock:
        gw = make_gateway(aws, sqs=client_through(proxy, "sqs"), request_deadline_seconds=DEADLINE)
        gw.upstream = mock
        proxy.blackhole()
        started = time.monotonic()
        r = gw.post("/v1/jobs", {"model": "default", "messages": [{"role": "user", "content": "x"}]})
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "service_unavailable" and "Retry-After" in r.headers
        assert elapsed < DEADLINE + SLACK, elapsed
