"""The app served over real HTTP in this process: uvicorn in a thread, moto server, the fake upstream.

In-process (unlike tests/e2e's local stack) so a test can look inside: the app's threads and
sockets, the services' store, and the fake upstream's counters.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llm_gateway.runtime import Services, build_services
from llm_gateway.security.api_keys import ApiKeyStore
from llm_gateway.security.provider_keys import encrypt_key
from llm_gateway.settings import Settings
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy
from local.fake_upstream import FakeUpstream

PROVIDER_KEY = "sk-live-provider-key-4c1d"
TENANT_KEY = "sk-gw-live-tenant"


@dataclass
class Live:
    base_url: str  # the gateway's OpenAI base URL (…/v1)
    services: Services
    upstream: FakeUpstream
    api_key: str = TENANT_KEY

    def openai(self, **kw: Any):
        from openai import OpenAI

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20)
        return OpenAI(base_url=self.base_url, api_key=self.api_key, **kw)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@contextlib.contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """uvicorn on an ephemeral loopback port, in a thread; yields http://127.0.0.1:<port>."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    ready = threading.Event()
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets)
        ready.set()

    server.startup = startup
    thread = threading.Thread(target=server.run, name="live-uvicorn", daemon=True)
    thread.start()
    if not ready.wait(10) or not server.servers:
        raise RuntimeError("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def live_gateway(aws: Any, *, dynamodb: Any = None, **overrides: Any) -> Iterator[Live]:
    """``dynamodb``: the client the services use (default: moto's, direct)."""
    with FakeUpstream(api_key=PROVIDER_KEY) as upstream:
        kms = aws.client("kms")
        settings = Settings(
            table_name=aws.res.table_name,
            openai_base_url=upstream.url,
            default_model="fake-model",
            provider_key_ciphertext=encrypt_key(PROVIDER_KEY, "default", aws.res.kms_key_id, kms),
            **overrides,
        )
        policy = RetryPolicy(
            max_attempts=settings.max_attempts, backoff_base=0.01, backoff_max=0.05, budget=RetryBudget(1.0, 100.0)
        )
        dynamodb = dynamodb or aws.client("dynamodb")
        services = build_services(settings, dynamodb=dynamodb, kms=kms, policy=policy)
        ApiKeyStore(settings.table_name, client=dynamodb).create("tenant-live", "test", key=TENANT_KEY)
        from app import create_app

        with serve_app(create_app(services)) as base:
            yield Live(base + "/v1", services, upstream)
