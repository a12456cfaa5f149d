#!/usr/bin/env python3
"""What the gateway adds to a streamed completion: time to first byte and total stream duration.

One run, one machine: moto server (DynamoDB/KMS), the fake upstream with a fixed
``delay_first_byte`` and ``delay_between_chunks``, and the app under uvicorn on loopback.
Each round streams the same request twice, interleaved: straight to the fake upstream (the
direct path, which is also the upstream's own TTFB / duration) and through the gateway —
stateless, and on a conversation (lease, history read, commit before ``[DONE]``).

Printed per path, at p50 and p95: the gateway's overhead (gateway minus direct) and that
overhead as a ratio of the direct path. No assertions: this reports, CI does not gate on it.

    make bench
    .venv/bin/python bench/stream_overhead.py   # sets its own sys.path
    ROUNDS=200 python bench/stream_overhead.py
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for sub in ("layers/common", "functions/api", "."):
    if str(ROOT / sub) not in sys.path:
        sys.path.insert(0, str(ROOT / sub))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "LlmGatewayBench")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no EMF lines on stdout

import requests  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "60"))
WARMUP = 5
FAULT = {"delay_first_byte": 0.03, "delay_between_chunks": 0.005}
PROVIDER_KEY = "sk-bench-provider"
TENANT_KEY = "sk-bench-tenant"
PROMPT = "stream overhead benchmark " + " ".join(f"w{i}" for i in range(30))


def timed_stream(session: requests.Session, url: str, body: dict, headers: dict) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the end of the stream) for one streamed request."""
    started = time.perf_counter()
    with session.post(url, json=body, headers=headers, stream=True, timeout=(5, 30)) as resp:
        resp.raise_for_status()
        first = None
        tail = b""
        while True:
            data = resp.raw.read1(65536, decode_content=True)
            if not data:
                break
            if first is None:
                first = time.perf_counter() - started
            tail = (tail + data)[-64:]
        total = time.perf_counter() - started
    if b"[DONE]" not in tail:
        raise RuntimeError("stream did not end with [DONE]")
    return first, total


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    import uvicorn

    from llm_gateway.runtime import build_services
    from llm_gateway.security.api_keys import ApiKeyStore
    from llm_gateway.security.provider_keys import encrypt_key
    from llm_gateway.settings import Settings
    from local.fake_upstream import FakeUpstream
    from local.resources import MotoServer, boto_session, provision

    with MotoServer() as moto, FakeUpstream(api_key=PROVIDER_KEY) as fake:
        session = boto_session()
        res = provision(session, moto.endpoint, prefix="bench")
        kms = session.client("kms", endpoint_url=moto.endpoint)
        dynamodb = session.client("dynamodb", endpoint_url=moto.endpoint)
        settings = Settings(
            table_name=res.table_name,
            openai_base_url=fake.url,
            default_model="fake-model",
            provider_key_ciphertext=encrypt_key(PROVIDER_KEY, "default", res.kms_key_id, kms),
        )
        services = build_services(settings, dynamodb=dynamodb, kms=kms)
        ApiKeyStore(res.table_name, client=dynamodb).create("bench", "bench", key=TENANT_KEY)
        from app import create_app

        server = uvicorn.Server(
            uvicorn.Config(
                create_app(services),
                host="127.0.0.1",
                port=0,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        gateway = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"

        client = requests.Session()
        auth = {"Authorization": f"Bearer {TENANT_KEY}"}
        body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        conv = client.post(f"{gateway}/conversations", json={}, headers=auth, timeout=10).json()["id"]

        direct_auth = {"Authorization": f"Bearer {PROVIDER_KEY}"}
        paths = {
            "direct": lambda: timed_stream(
                client, f"{fake.url}/chat/completions", {**body, "model": "fake-model"}, direct_auth
            ),
            "gateway": lambda: timed_stream(client, f"{gateway}/chat/completions", body, auth),
            "gateway+conversation": lambda: timed_stream(
                client, f"{gateway}/chat/completions", {**body, "conversation_id": conv}, auth
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for i in range(WARMUP + ROUNDS):
            for name, run in paths.items():
                fake.script(FAULT)
                sample = run()
                if i >= WARMUP:
                    results[name].append(sample)
        server.should_exit = True
        thread.join(10)

    direct = results["direct"]
    print(
        f"stream overhead: {ROUNDS} rounds, fake upstream delay_first_byte={FAULT['delay_first_byte']}s "
        f"delay_between_chunks={FAULT['delay_between_chunks']}s"
    )
    for label, idx in (("TTFB", 0), ("stream duration", 1)):
        d = [s[idx] for s in direct]
        print(f"\n{label}: direct p50 {pct(d, 50) * 1000:.1f} ms, p95 {pct(d, 95) * 1000:.1f} ms")
        for name in ("gateway", "gateway+conversation"):
            g = [s[idx] for s in results[name]]
            over = [gs - ds for gs, ds in zip(g, d, strict=True)]
            for p in (50, 95):
                ratio = pct(over, p) / pct(d, p)
                print(
                    f"  {name:22s} p{p}: {pct(g, p) * 1000:7.1f} ms, overhead {pct(over, p) * 1000:6.1f} ms, "
                    f"overhead/direct = {ratio:.3f}"
                )
    print(f"\n(mean direct TTFB {statistics.mean(s[0] for s in direct) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
