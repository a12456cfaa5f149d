"""The API wired to moto (server mode) and a `responses`-mocked upstream."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
import responses
from starlette.testclient import TestClient

from llm_gateway.auth import ApiKeyStore
from llm_gateway.keys import encrypt_key
from llm_gateway.retry import RetryBudget, RetryPolicy
from llm_gateway.runtime import build_services
from llm_gateway.settings import Settings

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
        "id": "chatcmpl-test", "object": "chat.completion", "created": 1, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": f"echo:{last} n={len(body['messages'])}"}}],
        "usage": {"prompt_tokens": 7 * len(body["messages"]), "completion_tokens": 3, "total_tokens": 0},
    }
    return 200, {}, json.dumps(reply)


def make_gateway(aws, **overrides) -> Gateway:
    kms = aws.client("kms")
    ciphertext = encrypt_key(CANARY_KEY, "default", aws.res.kms_key_id, kms)
    settings = Settings(
        table_name=aws.res.table_name, openai_base_url=UPSTREAM, provider_key_ciphertext=ciphertext,
        default_model="gpt-test", jobs_queue_url=aws.res.jobs_queue_url, **overrides,
    )
    sleeps: list[float] = []
    policy = RetryPolicy(max_attempts=settings.max_attempts, backoff_base=0.01, backoff_max=0.05,
                         budget=RetryBudget(1.0, 100.0), sleep=sleeps.append)
    dynamodb = aws.client("dynamodb")
    services = build_services(settings, dynamodb=dynamodb, kms=kms, sqs=aws.client("sqs"), policy=policy)
    keys = ApiKeyStore(settings.table_name, client=dynamodb)
    keys.create("tenant-a", "test", key=TENANT_KEY)
    keys.create("tenant-b", "test", key=OTHER_KEY)
    from app import create_app

    client = TestClient(create_app(lambda: services), raise_server_exceptions=False)
    return Gateway(client, services, None, sleeps, aws)


@pytest.fixture
def gateway(aws):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru("http://127.0.0.1")
        mock.add_callback(responses.POST, f"{UPSTREAM}/chat/completions", callback=echo_reply)
        gw = make_gateway(aws)
        gw.upstream = mock
        yield gw
