"""The API wired to moto (server mode) and a `responses`-mocked upstream."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses
from botocore.exceptions import ClientError
from starlette.testclient import TestClient

from llm_gateway.runtime import build_services
from llm_gateway.security.api_keys import ApiKeyStore
from llm_gateway.security.provider_keys import encrypt_key
from llm_gateway.settings import Settings
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy

UPSTREAM = "http://upstream.test/v1"
CANARY_KEY = "sk-canary-PROVIDERKEY-7f3a9c"  # must never appear in a log line or error body
TENANT_KEY = "sk-gw-test-tenant-a"
OTHER_KEY = "sk-gw-test-tenant-b"


@dataclass
class Gateway:
    client: TestClient
    services: Any
    upstream: responses.RequestsMock
    sleeps: list[float] = field(default_factory=list)
    aws: Any = None
    kms: Any = None  # the KMS client the services decrypt with (hook it to count Decrypt calls)
    app: Any = None

    def headers(self, key: str = TENANT_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def post(self, path: str, body: Any = None, key: str = TENANT_KEY, **kw):
        return self.client.post(path, json=body, headers=self.headers(key), **kw)

    def get(self, path: str, key: str = TENANT_KEY, **kw):
        return self.client.get(path, headers=self.headers(key), **kw)

    def upstream_calls(self) -> list[dict]:
        return [json.loads(c.request.body) for c in self.upstream.calls if c.request.url.startswith(UPSTREAM)]


def echo_reply(request) -> tuple[int, dict, str]:
    body = json.loads(request.body)
    last = body["messages"][-1].get("content")
    reply = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"echo:{last} n={len(body['messages'])}"},
            }
        ],
        "usage": {"prompt_tokens": 7 * len(body["messages"]), "completion_tokens": 3, "total_tokens": 0},
    }
    return 200, {}, json.dumps(reply)


def make_gateway(
    aws,
    *,
    sleep: Callable[[float], None] | None = None,
    budget: RetryBudget | None = None,
    ciphertext: str | None = None,
    upstream_url: str = UPSTREAM,
    keys: Any = None,
    kms: Any = None,
    sqs: Any = None,
    **overrides,
) -> Gateway:
    """The app over moto. Retry sleeps are recorded in ``Gateway.sleeps`` (and, when ``sleep`` is
    given, also really slept through it); ``ciphertext`` replaces the default provider key's;
    ``keys`` (a KeyProvider) and ``kms`` / ``sqs`` (clients) replace the ones the services would build."""
    kms = kms or aws.client("kms")
    if ciphertext is None:
        ciphertext = encrypt_key(CANARY_KEY, "default", aws.res.kms_key_id, kms)
    settings = Settings(
        table_name=aws.res.table_name,
        openai_base_url=upstream_url,
        provider_key_ciphertext=ciphertext,
        default_model="gpt-test",
        jobs_queue_url=aws.res.jobs_queue_url,
        **overrides,
    )
    sleeps: list[float] = []

    def record(seconds: float) -> None:
        sleeps.append(seconds)
        if sleep is not None:
            sleep(seconds)

    policy = RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_base=0.01,
        backoff_max=0.05,
        budget=budget or RetryBudget(1.0, 100.0),
        sleep=record,
    )
    dynamodb = aws.client("dynamodb")
    sqs = sqs or aws.client("sqs")
    services = build_services(settings, dynamodb=dynamodb, kms=kms, sqs=sqs, policy=policy, keys=keys)
    keys = ApiKeyStore(settings.table_name, client=dynamodb)
    for tenant, key in (("tenant-a", TENANT_KEY), ("tenant-b", OTHER_KEY)):
        with contextlib.suppress(ClientError):  # a second gateway over the same table reuses them
            keys.create(tenant, "test", key=key)
    from app import create_app

    app = create_app(services)
    client = TestClient(app, raise_server_exceptions=False)
    return Gateway(client, services, None, sleeps, aws, kms, app)


def regateway(gateway: Gateway, **overrides) -> Gateway:
    """Another gateway (other settings) over the same table, tenants and mocked upstream."""
    other = make_gateway(gateway.aws, **overrides)
    other.upstream = gateway.upstream
    return other


@contextlib.contextmanager
def mocked_upstream() -> Iterator[responses.RequestsMock]:
    """`responses` answering the upstream with :func:`echo_reply`; loopback (moto, uvicorn) passes."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru("http://127.0.0.1")
        mock.add_callback(responses.POST, f"{UPSTREAM}/chat/completions", callback=echo_reply)
        yield mock


@pytest.fixture
def gateway(aws):
    with mocked_upstream() as mock:
        gw = make_gateway(aws)
        gw.upstream = mock
        yield gw


# --------------------------------------------------------------------------- helpers

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


@dataclass
class CallCounter:
    """Counts a botocore client's calls per operation, through its event hooks.

    ``attempted`` counts every call made; ``succeeded`` only those AWS accepted (a failed
    conditional write is attempted but changes nothing).
    """

    attempted: dict[str, int] = field(default_factory=dict)
    succeeded: dict[str, int] = field(default_factory=dict)
    scanned: int = 0  # items Query calls read (ScannedCount)

    def total(self, ops: tuple[str, ...] = DYNAMODB_WRITES, *, ok_only: bool = False) -> int:
        counts = self.succeeded if ok_only else self.attempted
        return sum(counts.get(op, 0) for op in ops)


def count_calls(client: Any, operations: tuple[str, ...]) -> CallCounter:
    counter = CallCounter()
    service = client.meta.service_model.endpoint_prefix

    def before(model, **_):
        counter.attempted[model.name] = counter.attempted.get(model.name, 0) + 1

    def after(model, http_response, parsed, **_):
        if http_response.status_code < 300:
            counter.succeeded[model.name] = counter.succeeded.get(model.name, 0) + 1
            if model.name == "Query":
                counter.scanned += parsed.get("ScannedCount", 0)

    for op in operations:
        client.meta.events.register(f"before-call.{service}.{op}", before)
        client.meta.events.register(f"after-call.{service}.{op}", after)
    return counter


def table_snapshot(client: Any, table: str, *, usage: bool = True) -> list[dict]:
    """Every item in the table, in a stable order (for "nothing was written" checks). ``usage=False``
    leaves out the quota counters (``T#<tenant>#Q...``), which every admitted request moves."""
    items: list[dict] = []
    params: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        resp = client.scan(**params)
        items += resp.get("Items", [])
        if "LastEvaluatedKey" not in resp:
            break
        params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
    if not usage:
        items = [i for i in items if not re.match(r"^T#[^#]+#Q(#|$)", i["PK"]["S"])]
    return sorted(items, key=lambda i: (i["PK"]["S"], i["SK"]["S"]))


def set_upstream(gateway: Gateway, callback: Callable) -> None:
    """Replace the upstream's behaviour (a ``responses`` callback: request -> (status, headers, body))."""
    gateway.upstream.remove(responses.POST, f"{UPSTREAM}/chat/completions")
    gateway.upstream.add_callback(responses.POST, f"{UPSTREAM}/chat/completions", callback=callback)


def scripted(*steps: tuple[int, dict, Any]) -> Callable:
    """A callback answering each step in turn ((status, headers, body)), then echoing."""
    queue = list(steps)
    lock = threading.Lock()

    def callback(request):
        with lock:
            step = queue.pop(0) if queue else None
        if step is None:
            return echo_reply(request)
        status, headers, body = step
        if isinstance(body, BaseException):
            raise body
        return status, headers, body if isinstance(body, str) else json.dumps(body)

    return callback


def openai_error(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def chat(content: str, conversation_id: str | None = None, **extra) -> dict:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": content}], **extra}
    if conversation_id:
        body["conversation_id"] = conversation_id
    return body


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run the ASGI app under uvicorn in a thread on an ephemeral loopback port; yields its base URL.

    The socket is bound and listening before the server thread starts, so no readiness
    polling is needed: connections wait in the backlog until uvicorn accepts them.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def conversation_messages(gateway: Gateway, conversation_id: str, key: str = TENANT_KEY) -> list[dict]:
    """A conversation's items, oldest first over every page of the Conversations API, as the chat
    messages they are (the other view of the same store)."""
    from llm_gateway.conversations.items import items_to_messages, parse_items

    items: list[dict] = []
    after = None
    while True:
        params = {"order": "asc", "limit": 100} | ({"after": after} if after else {})
        r = gateway.get(f"/v1/conversations/{conversation_id}/items", key=key, params=params)
        assert r.status_code == 200, r.text
        items += r.json()["data"]
        if not r.json()["has_more"]:
            break
        after = r.json()["last_id"]
    return [m.body for m in items_to_messages(parse_items(items, max_items=None))]
