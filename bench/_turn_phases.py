"""Where a stateful turn's time goes, per phase, for bench/local_turn_cost.py.

Phases are measured from outside the gateway, so they survive refactors of the turn: every
DynamoDB call through the conversation store's client by operation (botocore's before-call /
after-call events), botocore's own response parsing inside them (before-parse /
response-received), the upstream call (the router's ``complete``: request encoding, HTTP, the
reply's parsing) and, inside it, the fake upstream's own handler time (it runs in this process,
so it competes with the gateway for the GIL). What is left of a turn is the gateway's own Python
work (validation, decoding the history items, assembling the prompt, metering).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict

PARSE = "  botocore parse (in the calls above)"
UPSTREAM = "upstream call (encode, HTTP, parse reply)"
FAKE = "  fake upstream handler (in the call above)"
REST = "gateway Python (the rest of the turn)"


class Phases:
    def __init__(self, services) -> None:
        from local.fake_upstream import chat_seconds

        self.totals: dict[str, float] = defaultdict(float)
        self.chat_seconds = chat_seconds
        self.watch(services.conversations.client)
        router = services.chat.router
        complete = router.complete

        def timed_complete(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return complete(*args, **kwargs)
            finally:
                self.totals[UPSTREAM] += time.perf_counter() - t0

        router.complete = timed_complete

    def watch(self, client) -> None:
        """Time the DynamoDB calls of ``client`` (by operation) and botocore's parsing inside them."""
        started: dict[tuple[int, str], float] = {}

        def before_call(model, **_):
            started[(threading.get_ident(), model.name)] = time.perf_counter()

        def after_call(model, **_):
            t0 = started.pop((threading.get_ident(), model.name), None)
            if t0 is not None:
                self.totals[f"DynamoDB {model.name}"] += time.perf_counter() - t0

        def before_parse(**_):
            started[(threading.get_ident(), "parse")] = time.perf_counter()

        def after_parse(**_):
            t0 = started.pop((threading.get_ident(), "parse"), None)
            if t0 is not None:
                self.totals[PARSE] += time.perf_counter() - t0

        client.meta.events.register("before-call.dynamodb.*", before_call)
        client.meta.events.register("after-call.dynamodb.*", after_call)
        client.meta.events.register("before-parse.dynamodb.*", before_parse)
        client.meta.events.register("response-received.dynamodb.*", after_parse)

    def snapshot(self) -> dict[str, float]:
        return {**self.totals, FAKE: self.chat_seconds()}

    @staticmethod
    def turn(before: dict[str, float], after: dict[str, float], latency: float) -> dict[str, float]:
        """One turn's phases (seconds); REST is the latency not inside a DynamoDB or upstream call."""
        spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
        outer = sum(v for k, v in spent.items() if not k.startswith("  "))
        return {**spent, REST: latency - outer}


def median_phases(turns: list[dict[str, float]]) -> dict[str, float]:
    """Each phase's median over the turns (robust to the load spikes of a shared machine; the rows
    then add up to about, not exactly, the median turn)."""
    keys = {k for t in turns for k in t}
    return {k: statistics.median(t.get(k, 0.0) for t in turns) for k in keys}


def order(name: str) -> tuple[int, str]:
    rank = 0 if name.startswith("DynamoDB") else 1 if name == PARSE else 2 if name == UPSTREAM else 3
    return (4 if name == REST else rank, name)


def print_breakdown(short_label: str, short: dict[str, float], long_label: str, long: dict[str, float]) -> None:
    """Both cases' median per phase and where the difference goes (indented rows are inside the row above)."""
    names = sorted((n for n in set(short) | set(long) if max(short.get(n, 0), long.get(n, 0)) > 5e-6), key=order)
    outer = [n for n in names if not n.startswith("  ")]
    total_a, total_b = (sum(case.get(n, 0.0) for n in outer) * 1000 for case in (short, long))
    print(f"  {'median ms per turn':44s} {short_label[:14]:>14s} {long_label[:14]:>14s}   difference")
    for name in names:
        a, b = short.get(name, 0.0) * 1000, long.get(name, 0.0) * 1000
        share = f"({(b - a) / (total_b - total_a) * 100:4.0f}% of it)" if total_b > total_a else ""
        print(f"  {name:44s} {a:14.2f} {b:14.2f}   {b - a:+7.2f} ms  {share}")
    print(f"  {'= sum of the rows':44s} {total_a:14.2f} {total_b:14.2f}   {total_b - total_a:+7.2f} ms")
