"""Gateway overhead per turn, cost at message 10,000 vs 10, cold start and memory.

Everything runs in this process and this run, against the fake upstream and moto in
server mode (the local stack), and is printed as ratios:

1. Overhead per turn: (gateway − direct) / (bare FastAPI + requests pass-through − direct),
   stateless and with a conversation. The bar is ≤ 3× for the stateless path.
2. A turn at message 10,000 vs message 10: latency ratio and DynamoDB items read. Target ≤ 1.2×.
3. Cold start: importing the API module and building its clients, as a ratio to `import boto3`
   (target ≤ 2.5×); process start → first completion (bar: < 1 s); peak RSS (bar: < 120 MiB);
   and what dominates the import (python -X importtime).

    make bench            # or: .venv/bin/python bench/gateway_overhead.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from _harness import ROOT, ThreadedUvicorn, dynamodb_timer, interleaved, quiet_stdout, summary  # noqa: I001

from local.stack import FAKE_UPSTREAM_KEY

QUICK = "--quick" in sys.argv
UPSTREAM_AUTH = {"Authorization": f"Bearer {FAKE_UPSTREAM_KEY}"}
BODY = {"model": "default", "messages": [{"role": "user", "content": "Say something short."}]}


def bare_passthrough(upstream_url: str):
    """The baseline: a bare FastAPI app forwarding the body with requests."""
    import requests
    from fastapi import FastAPI

    app = FastAPI()
    session = requests.Session()

    @app.post("/v1/chat/completions")
    def forward(body: dict) -> dict:
        return session.post(
            upstream_url + "/chat/completions", json=body, headers=UPSTREAM_AUTH, timeout=(3, 30)
        ).json()

    return app


def overhead(env: dict[str, str]) -> None:
    import requests

    from app import app, default_services

    upstream = env["OPENAI_BASE_URL"]
    auth = {"Authorization": "Bearer sk-local-dev"}
    rounds, per_round, warmup, turns_per_conv = (5, 20, 20, 5) if QUICK else (10, 50, 20, 5)
    ddb_time = dynamodb_timer(default_services().conversations.client)
    with ThreadedUvicorn(app) as gw, ThreadedUvicorn(bare_passthrough(upstream)) as bare:
        s = requests.Session()
        # Conversations of a few turns each, so the upstream's own work (it counts every prompt
        # token it receives) stays the same as the stateless cases'; the history read still runs.
        convs = [
            s.post(gw.url + "/v1/conversations", json={}, headers=auth).json()["id"]
            for _ in range((warmup + rounds * per_round) // turns_per_conv + 1)
        ]
        conv_turns = {"n": 0, "ddb": []}

        def conversation_turn():
            before = ddb_time[0]
            cid = convs[conv_turns["n"] // turns_per_conv]
            conv_turns["n"] += 1
            s.post(
                gw.url + "/v1/chat/completions", json={**BODY, "conversation_id": cid}, headers=auth
            ).raise_for_status()
            conv_turns["ddb"].append(ddb_time[0] - before)

        cases = {
            "direct": lambda: s.post(
                upstream + "/chat/completions", json=BODY, headers=UPSTREAM_AUTH
            ).raise_for_status(),
            "bare": lambda: s.post(bare.url + "/v1/chat/completions", json=BODY).raise_for_status(),
            "gateway": lambda: s.post(gw.url + "/v1/chat/completions", json=BODY, headers=auth).raise_for_status(),
            "gateway+conv": conversation_turn,
        }
        with quiet_stdout():
            samples = interleaved(cases, rounds=rounds, per_round=per_round, warmup=warmup)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print("\n== 1. overhead per turn (fake upstream, loopback HTTP, moto server)")
    for name, values in samples.items():
        print(f"  {name:13s} {summary(values)}")
    bare_over = med["bare"] - med["direct"]
    for name in ("gateway", "gateway+conv"):
        over = med[name] - med["direct"]
        print(
            f"  {name:13s} overhead {over * 1000:6.3f} ms = {over / bare_over:5.2f}x the bare pass-through's "
            f"{bare_over * 1000:.3f} ms   (bar: <= 3x)"
        )
    ddb = statistics.median(conv_turns["ddb"])
    own = med["gateway+conv"] - med["direct"] - ddb
    print(
        f"  gateway+conv  of which DynamoDB {ddb * 1000:.3f} ms (3 calls against moto: lease, history query, "
        "commit transaction)"
    )
    print(
        f"                the gateway's own work {own * 1000:.3f} ms = {own / bare_over:.2f}x the bare pass-through's"
    )


def length(env: dict[str, str]) -> None:
    """A turn on a 10-message vs a 10,000-message conversation, through ChatService."""
    import boto3

    from app import default_services
    from llm_gateway.chat.models import ChatCompletionRequest
    from llm_gateway.chat.service import TurnReport
    from llm_gateway.conversations.store import conversation_pk, message_sk
    from llm_gateway.deadline import Deadline

    services = default_services()
    store = services.conversations
    ddb = boto3.client("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"])

    def seed(count: int) -> str:
        conv = store.create("local-dev")
        pk = conversation_pk("local-dev", conv.id)
        items = []
        for seq in range(count):
            role = "user" if seq % 2 == 0 else "assistant"
            msg = json.dumps({"role": role, "content": f"message number {seq} " + "lorem ipsum " * 8})
            items.append(
                {
                    "PutRequest": {
                        "Item": {
                            "PK": {"S": pk},
                            "SK": {"S": message_sk(seq)},
                            "msg": {"S": msg},
                            "tokens": {"N": "30"},
                            "created_at": {"N": "0"},
                        }
                    }
                }
            )
        for i in range(0, len(items), 25):
            ddb.batch_write_item(RequestItems={store.table: items[i : i + 25]})
        ddb.update_item(
            TableName=store.table,
            Key={"PK": {"S": pk}, "SK": {"S": "META"}},
            UpdateExpression="SET message_count = :c",
            ExpressionAttributeValues={":c": {"N": str(count)}},
        )
        return conv.id

    big = 2_000 if QUICK else 10_000
    sizes = [10, 400, big]  # 400: past the default budget of 200 messages
    t = time.perf_counter()
    ids = {n: seed(n) for n in sizes}
    print(f"\n== 2. cost at message {big:,} vs message 10   (seeded in {time.perf_counter() - t:.1f} s)")
    reports: dict[int, list[TurnReport]] = {n: [] for n in sizes}

    def turn(n: int):
        def run():
            report = TurnReport()
            req = ChatCompletionRequest(
                model="default", messages=[{"role": "user", "content": "next"}], conversation_id=ids[n]
            )
            services.chat.complete("local-dev", req, Deadline.after(30), report)
            reports[n].append(report)

        return run

    with quiet_stdout():
        samples = interleaved({n: turn(n) for n in sizes}, rounds=3 if QUICK else 5, per_round=10, warmup=3)
    med = {n: statistics.median(v) for n, v in samples.items()}
    for n, values in samples.items():
        items = statistics.median(r.history_items_read for r in reports[n])
        sent = statistics.median(r.history_messages for r in reports[n])
        print(f"  at {n:>6,} messages  {summary(values)}   items read {items:4.0f}   history sent {sent:4.0f}")
    print(f"  latency ratio {big:,} / 400 = {med[big] / med[400]:.2f}x   (flat once past the budget; target <= 1.2x)")
    print(
        f"  latency ratio {big:,} / 10  = {med[big] / med[10]:.2f}x   (the short conversation sends all it has, "
        "the long one its 200-message budget)"
    )
    print("  note: moto's Query scans the whole table in Python, so every turn here slows as the table grows;")
    print("        items read is the figure DynamoDB bills and its latency follows.")


def cold_start() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            os.path.join(ROOT, p) for p in ("layers/common", "functions/api", "functions/worker", ".")
        ),
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }
    probe = "import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"
    runs = 3 if QUICK else 7

    def measure(stmt: str) -> float:
        values = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", probe.format(stmt=stmt)], env=env, capture_output=True, text=True, check=True
            )
            values.append(float(out.stdout.strip().splitlines()[-1]))
        return statistics.median(values)

    boto = measure("import boto3")
    app = measure("import app; app.default_services()")
    print("\n== 3. cold start")
    print(f"  import boto3                      {boto * 1000:7.1f} ms")
    print(
        f"  import app + build its clients    {app * 1000:7.1f} ms   = {app / boto:.2f}x import boto3 (target <= 2.5x)"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"], env=env, capture_output=True, text=True
    )
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            if depth == 1:  # what the app module itself imports
                rows.append((int(parts[1]), name.strip()))
    print("  dominant imports under `import app` (cumulative, python -X importtime):")
    for us, name in sorted(rows, reverse=True)[:8]:
        print(f"    {us / 1000:7.1f} ms  {name}")


def first_completion() -> None:
    """Process start -> first completion, and peak RSS, in a fresh process against the running stack."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            os.path.join(ROOT, p) for p in ("layers/common", "functions/api", "functions/worker", ".")
        ),
    }
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "_cold_process.py")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = statistics.median(r["seconds"] for r in runs)
    rss = max(r["max_rss_mib"] for r in runs)
    print(
        f"  process start -> first completion {seconds * 1000:7.1f} ms   (bar: < 1000 ms; interpreter start, "
        "imports, clients, first KMS decrypt and auth read)"
    )
    print(f"  peak RSS after first completion   {rss:7.1f} MiB  (bar: < 120 MiB)")


def main() -> None:
    from local.stack import StackConfig, local_stack

    os.environ["SHOW_METRICS"] = "1"  # measure the gateway as deployed: EMF metrics on
    config = StackConfig.from_env({"PORT": "0"})
    with local_stack(config) as env:
        overhead(env)
        length(env)
        cold_start()
        first_completion()


if __name__ == "__main__":
    main()
