"""Responses API: its overhead next to Chat Completions, and chain cost at depth 1,000 vs 10.

Everything runs in this process and this run, against the fake upstream and moto in
server mode (the local stack), and is printed as ratios (nothing is asserted):

1. Overhead per request over HTTP: ``POST /v1/responses`` (store=false, store=true, and a
   follow-up with ``previous_response_id``) next to ``POST /v1/chat/completions``, each as
   (case − direct upstream) / (chat completions − direct upstream).
2. A follow-up at chain depth 1,000 vs depth 10: DynamoDB items read for the context and
   latency, through ResponseService. With a history budget that depth 10 already fills
   (20 messages) the two must cost the same (target ≤ 1.2×); with the default budget
   (200 messages = 100 turns) depth 1,000 is compared with depth 150, past the budget.

    .venv/bin/python bench/responses_overhead.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from _harness import ThreadedUvicorn, dynamodb_timer, interleaved, quiet_stdout, summary  # noqa: I001

from local.stack import FAKE_UPSTREAM_KEY

QUICK = "--quick" in sys.argv
UPSTREAM_AUTH = {"Authorization": f"Bearer {FAKE_UPSTREAM_KEY}"}
AUTH = {"Authorization": "Bearer sk-local-dev"}
PROMPT = "Say something short."


def overhead(env: dict[str, str]) -> None:
    import requests

    from app import app, default_services

    upstream = env["OPENAI_BASE_URL"]
    ddb_time = dynamodb_timer(default_services().conversations.client)
    ddb: dict[str, list[float]] = {}
    rounds, per_round, warmup = (4, 15, 10) if QUICK else (10, 40, 20)
    with ThreadedUvicorn(app) as gw:
        s = requests.Session()
        chat_body = {"model": "default", "messages": [{"role": "user", "content": PROMPT}]}
        parent = s.post(gw.url + "/v1/responses", json={"model": "default", "input": PROMPT}, headers=AUTH).json()

        def responses(name: str, **extra):
            body = {"model": "default", "input": PROMPT, **extra}
            ddb[name] = []

            def run() -> None:
                before = ddb_time[0]
                s.post(gw.url + "/v1/responses", json=body, headers=AUTH).raise_for_status()
                ddb[name].append(ddb_time[0] - before)

            return run

        cases = {
            "direct": lambda: s.post(
                upstream + "/chat/completions", json=chat_body, headers=UPSTREAM_AUTH
            ).raise_for_status(),
            "chat": lambda: s.post(gw.url + "/v1/chat/completions", json=chat_body, headers=AUTH).raise_for_status(),
            "resp store=false": responses("resp store=false", store=False),
            "resp store=true": responses("resp store=true"),
            # a fork of one parent each time: the same history, so the same upstream work
            "resp follow-up": responses("resp follow-up", previous_response_id=parent["id"]),
        }
        with quiet_stdout():
            samples = interleaved(cases, rounds=rounds, per_round=per_round, warmup=warmup)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print("\n== 1. Responses overhead next to Chat Completions (fake upstream, loopback HTTP, moto server)")
    for name, values in samples.items():
        print(f"  {name:17s} {summary(values)}")
    chat_over = med["chat"] - med["direct"]
    print(f"  chat completions  overhead {chat_over * 1000:6.3f} ms over the direct upstream call")
    for name in ("resp store=false", "resp store=true", "resp follow-up"):
        over = med[name] - med["direct"]
        in_ddb = statistics.median(ddb[name])
        own = over - in_ddb
        print(
            f"  {name:17s} overhead {over * 1000:6.3f} ms = {over / chat_over:5.2f}x chat completions'; of which "
            f"DynamoDB {in_ddb * 1000:6.3f} ms, the rest {own * 1000:6.3f} ms = {own / chat_over:5.2f}x"
        )
    print("  (store=true adds one PutItem; a follow-up one GetItem + one BatchGetItem + the PutItem, against moto)")


def chains(env: dict[str, str]) -> None:
    from app import default_services
    from llm_gateway.chat.service import ChatService, TurnReport
    from llm_gateway.deadline import Deadline
    from llm_gateway.responses.models import CreateResponse
    from llm_gateway.responses.service import ResponseService
    from llm_gateway.upstream.aliases import Routing

    services = default_services()
    depth_max = 300 if QUICK else 1_000

    def service(max_messages: int) -> ResponseService:
        aliases = {
            name: alias.model_copy(update={"history_max_messages": max_messages})
            for name, alias in services.routing.aliases.items()
        }
        chat = ChatService(services.conversations, Routing(aliases), services.chat.router, services.settings)
        return ResponseService(chat, services.responses.store)

    def create(svc: ResponseService, previous: str | None, report: TurnReport | None = None) -> str:
        request = CreateResponse(model="default", input="next " * 8, previous_response_id=previous)
        return svc.create("local-dev", request, Deadline.after(30), report or TurnReport())["id"]

    for max_messages, depths in ((20, (10, depth_max)), (200, (10, 150, depth_max))):
        chain_case(service(max_messages), create, max_messages, depths, depth_max)


def chain_case(svc, create, max_messages: int, depths: tuple[int, ...], depth_max: int) -> None:
    from llm_gateway.chat.service import TurnReport

    t = time.perf_counter()
    leaf: dict[int, str] = {}
    previous: str | None = None
    with quiet_stdout():
        for depth in range(1, depth_max + 1):
            previous = create(svc, previous)
            if depth in depths:
                leaf[depth] = previous
    seeded = time.perf_counter() - t
    reports: dict[int, list[TurnReport]] = {d: [] for d in depths}

    def follow(depth: int):
        def run() -> None:
            report = TurnReport()
            create(svc, leaf[depth], report)
            reports[depth].append(report)

        return run

    with quiet_stdout():
        samples = interleaved({d: follow(d) for d in depths}, rounds=3 if QUICK else 6, per_round=10, warmup=3)
    med = {d: statistics.median(v) for d, v in samples.items()}
    print(
        f"\n== 2. a follow-up at chain depth {depth_max:,} vs 10, history budget {max_messages} messages "
        f"(chain built through the service in {seeded:.1f} s)"
    )
    for depth, values in samples.items():
        items = statistics.median(r.history_items_read for r in reports[depth])
        sent = statistics.median(r.history_messages for r in reports[depth])
        print(f"  depth {depth:>5,}  {summary(values)}   items read {items:4.0f}   history sent {sent:4.0f}")
    base = 10 if max_messages == 20 else 150
    items_ratio = statistics.median(r.history_items_read for r in reports[depth_max]) / statistics.median(
        r.history_items_read for r in reports[base]
    )
    print(
        f"  depth {depth_max:,} / {base}: latency {med[depth_max] / med[base]:.2f}x, items read {items_ratio:.2f}x"
        "   (target <= 1.2x: the budget, not the depth, bounds the read)"
    )
    if max_messages == 200:
        print(
            f"  depth {depth_max:,} / 10: latency {med[depth_max] / med[10]:.2f}x (depth 10 sends all 20 messages"
            " it has, the deep chain its 200-message budget; the upstream's work grows with what it is sent)"
        )


def main() -> None:
    from local.stack import StackConfig, local_stack

    os.environ["SHOW_METRICS"] = "1"  # measure the gateway as deployed: EMF metrics on
    config = StackConfig.from_env({"PORT": "0"})
    with local_stack(config) as env:
        overhead(env)
        chains(env)


if __name__ == "__main__":
    main()
