"""What the quota check adds to a request: latency and DynamoDB requests, next to the turn's own.

Against moto in server mode and the fake upstream, in this process and run, interleaved:

* ``direct``      — the client calling the fake upstream itself (the upstream's own time);
* ``no quotas``   — a stateless chat completion through the gateway with the quota hook off;
* ``unlimited``   — the hook on, a key without limits (its day counters still move, for usage);
* ``limited``     — a key with rpm, tpm, USD per day and month, and a concurrency limit;

and, for a conversation turn, ``conv, no quotas`` vs ``conv, limited``. Printed: p50/p95, the
added latency as a ratio of the no-quota request, and DynamoDB requests per request by operation.

    .venv/bin/python bench/quota_overhead.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
from collections import Counter

from _harness import ThreadedUvicorn, interleaved, quiet_stdout, summary  # noqa: I001

QUICK = "--quick" in sys.argv
BODY = {"model": "default", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 20}


def main() -> None:
    import requests

    from app import create_app
    from llm_gateway.quotas.limits import Limits
    from llm_gateway.runtime import build_services
    from llm_gateway.security.api_keys import ApiKeyStore
    from llm_gateway.settings import Settings
    from local.fake_upstream import FakeUpstream
    from local.resources import MotoServer, boto_session, provision

    with MotoServer() as moto, FakeUpstream() as fake:
        session = boto_session()
        res = provision(session, moto.endpoint, prefix="bench-quota")
        dynamodb = session.client("dynamodb", endpoint_url=moto.endpoint)
        settings = Settings(
            table_name=res.table_name,
            openai_base_url=fake.url,
            default_input_price_per_1m=1.0,
            default_output_price_per_1m=2.0,
        )
        services = build_services(settings, dynamodb=dynamodb, kms=session.client("kms", endpoint_url=moto.endpoint))
        quotas = services.chat.quotas
        keys = ApiKeyStore(res.table_name, client=dynamodb)
        keys.create("bench", "free", key="sk-bench-free")
        _, limited = keys.create("bench", "limited", key="sk-bench-limited")
        big = Limits(rpm=10**8, tpm=10**10, usd_per_day=10**6, usd_per_month=10**7, max_concurrent=100)
        services.quotas.limits.put_key("bench", limited.key_id, big)

        calls: dict[str, Counter] = {}
        current = {"case": ""}

        def count(model, **_):
            calls.setdefault(current["case"], Counter())[model.name] += 1

        dynamodb.meta.events.register("before-call.dynamodb.*", count)
        s = requests.Session()
        with ThreadedUvicorn(create_app(services)) as gw:
            convs = {
                k: s.post(gw.url + "/v1/conversations", json={}, headers=auth(k)).json()["id"]
                for k in ("sk-bench-free", "sk-bench-limited")
            }

            def through(case: str, key: str, on: bool, conversation: bool = False):
                def run() -> None:
                    current["case"] = case
                    services.chat.quotas = quotas if on else None
                    body = {**BODY, "conversation_id": convs[key]} if conversation else BODY
                    s.post(gw.url + "/v1/chat/completions", json=body, headers=auth(key)).raise_for_status()

                return run

            cases = {
                "direct": lambda: s.post(fake.url + "/chat/completions", json=BODY).raise_for_status(),
                "no quotas": through("no quotas", "sk-bench-free", False),
                "unlimited": through("unlimited", "sk-bench-free", True),
                "limited": through("limited", "sk-bench-limited", True),
                "conv, no quotas": through("conv, no quotas", "sk-bench-free", False, True),
                "conv, limited": through("conv, limited", "sk-bench-limited", True, True),
            }
            rounds, per_round = (3, 10) if QUICK else (8, 30)
            with quiet_stdout():
                calls.clear()
                samples = interleaved(cases, rounds, per_round, warmup=10)
            n = rounds * per_round + 10
        base = statistics.median(samples["no quotas"])
        conv_base = statistics.median(samples["conv, no quotas"])
        print(f"quota check overhead ({rounds}x{per_round} requests per case, moto server, fake upstream)")
        for name, values in samples.items():
            ref = conv_base if name.startswith("conv") else base
            added = (statistics.median(values) - ref) / ref if name != "direct" else float("nan")
            ops = calls.get(name, Counter())
            per_request = ", ".join(f"{op} {c / n:.2f}" for op, c in sorted(ops.items())) or "-"
            print(
                f"  {name:16s} {summary(values)}   added vs no quotas {added:+6.1%}   DynamoDB/request: {per_request}"
            )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


if __name__ == "__main__":
    main()
