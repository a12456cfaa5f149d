"""The request path against a bare FastAPI + requests pass-through, in the same run (issue 16).

Everything against the local stack (moto server, the instant fake upstream). The gateway and the
bare pass-through each run in a process of their own under uvicorn (bench/_serve.py: the options
of functions/api/run.sh), so the CPU, memory and GC counters are that server's alone — not the
client's, the fake upstream's, or moto's. One client at a time (c=1), cases interleaved round
after round, both servers fresh (the first ~2,000 requests of a process are what a Lambda
container serves). Printed as ratios; nothing is asserted.

1. Latency at p50/p95/p99 for: direct to the upstream, bare, gateway stateless, gateway on a
   conversation; added latency at pXX = pXX(case) − p50(direct) (the direct path's own tail is
   the machine's noise, not something a server adds); CPU per request (the server
   process's own ``time.process_time()``); for the conversation turn, DynamoDB requests per turn
   and botocore's client-side time per turn (moto's own time excluded).
2. Streams: time to first byte at p50/p95/p99, added over direct, gateway vs bare.
3. Where a slow request's time went: GC pauses (``gc.callbacks``) during the slowest requests.
4. RSS of each server after the load, and the gateway's once it has served 2,000 requests.
5. Cold start, app alone: process start (functions/api/run.sh, as Lambda runs it) → first
   completion, and ``import app`` + building its services vs ``import boto3``.
6. With ``--tracemalloc``: a third gateway process under tracemalloc, its top allocations.

    make bench            # or: .venv/bin/python bench/request_path.py [--quick] [--tracemalloc]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests
from _harness import ROOT, pct  # noqa: I001

from local.resources import free_port
from local.stack import FAKE_UPSTREAM_KEY

QUICK = "--quick" in sys.argv
UPSTREAM_AUTH = {"Authorization": f"Bearer {FAKE_UPSTREAM_KEY}"}
AUTH = {"Authorization": "Bearer sk-local-dev"}
BODY = {"model": "default", "messages": [{"role": "user", "content": "Say something short."}]}
SERVE = os.path.join(ROOT, "bench", "_serve.py")
MEMORY_AFTER_REQUESTS = 2_000  # section 4: the gateway's RSS once it has served this many
PYPATH = os.pathsep.join(os.path.join(ROOT, p) for p in ("layers/common", "functions/api", "functions/worker", "."))


class Server:
    """A bench/_serve.py process: its URL, its counters (GET /__bench)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, SERVE, args[0], str(self.port), *args[1:]],
            env={**os.environ, **(env or {}), "PYTHONPATH": PYPATH},
            stdout=subprocess.DEVNULL,  # the gateway's JSON logs and EMF lines: written, not shown
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/__bench", timeout=30).raise_for_status()
                break
            except (requests.ConnectionError, requests.Timeout):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args[0]} did not start: {self.proc.stderr.read()}") from None
                time.sleep(0.05)
        assert self.proc.stderr is not None
        self.server_info = json.loads(self.proc.stderr.readline())

    def stats(self) -> dict:
        return requests.get(self.url + "/__bench", timeout=60).json()  # a tracemalloc snapshot takes a while

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def quantiles(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), pct(values, 0.95), pct(values, 0.99)


def ms(values: tuple[float, ...]) -> str:
    return "  ".join(f"{v * 1000:7.2f}" for v in values)


class Case:
    def __init__(self, name: str, run: Callable[[], float], server: Server | None) -> None:
        self.name, self.run, self.server = name, run, server
        self.samples: list[float] = []
        self.cpu = 0.0
        self.ddb_calls: dict[str, int] = {}
        self.ddb_seconds = self.ddb_send = 0.0
        self.count = 0


def interleave(cases: list[Case], rounds: int, per_round: int, warmup: int) -> None:
    for case in cases:
        for _ in range(warmup):
            case.run()
    for _ in range(rounds):
        for case in cases:
            before = case.server.stats() if case.server else None
            case.samples += [case.run() for _ in range(per_round)]
            if case.server and before:
                after = case.server.stats()
                case.cpu += after["cpu"] - before["cpu"]
                case.count += per_round
                case.ddb_seconds += after["ddb_seconds"] - before["ddb_seconds"]
                case.ddb_send += after["ddb_send_seconds"] - before["ddb_send_seconds"]
                for op, n in after["ddb_calls"].items():
                    case.ddb_calls[op] = case.ddb_calls.get(op, 0) + n - before["ddb_calls"].get(op, 0)


def post_timer(session: requests.Session, url: str, body: dict, headers: dict) -> Callable[[], float]:
    def run() -> float:
        t = time.perf_counter()
        session.post(url, json=body, headers=headers, timeout=30).raise_for_status()
        return time.perf_counter() - t

    return run


def ttfb_timer(session: requests.Session, url: str, body: dict, headers: dict) -> Callable[[], float]:
    """Seconds to the first body byte of a stream (the stream is then read to its end)."""

    def run() -> float:
        t = time.perf_counter()
        with session.post(url, json={**body, "stream": True}, headers=headers, stream=True, timeout=30) as resp:
            resp.raise_for_status()
            first = None
            while resp.raw.read1(65536):
                if first is None:
                    first = time.perf_counter() - t
        return first or 0.0

    return run


def report(cases: list[Case], direct: Case, title: str) -> dict[str, tuple[float, float, float]]:
    base = statistics.median(direct.samples)
    print(f"\n== {title}")
    print(f"  {'':22s} {'p50':>7s}  {'p95':>7s}  {'p99':>7s} ms   added p50/p95/p99 ms       CPU/request")
    added: dict[str, tuple[float, float, float]] = {}
    for case in cases:
        q = quantiles(case.samples)
        add = tuple(v - base for v in q)
        added[case.name] = add  # type: ignore[assignment]
        cpu = f"{case.cpu / case.count * 1000:6.3f} ms" if case.count else ""
        calls = f"   DynamoDB/request {sum(case.ddb_calls.values()) / case.count:.2f}" if case.ddb_calls else ""
        extra = "" if case is direct else f"   {ms(add)}   {cpu}{calls}"
        print(f"  {case.name:22s} {ms(q)}{extra}")
    return added


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b > 0 else "  n/a"


def load(env: dict[str, str]) -> None:
    upstream = env["OPENAI_BASE_URL"]
    bare = Server("bare", upstream, FAKE_UPSTREAM_KEY)
    gateway = Server("gateway")
    # the same gateway without its history cache: every conversation turn reads its history, as the first
    # turn a process serves on a conversation does (a cold container, or another process served the last)
    uncached = Server("gateway", env={"HISTORY_CACHE_BYTES": "0"})
    try:
        print(f"servers: uvicorn loop={gateway.server_info['loop']} http={gateway.server_info['http']}")
        s = requests.Session()
        rounds, per_round, warmup = (4, 40, 10) if QUICK else (10, 60, 10)
        turns_per_conv = 5  # a few turns each: the upstream's own work stays close to the stateless case's

        def conversation_turns(server: Server) -> Callable[[], float]:
            convs = iter(
                [
                    s.post(server.url + "/v1/conversations", json={}, headers=AUTH).json()["id"]
                    for _ in range((warmup + rounds * per_round) // turns_per_conv + 2)
                ]
            )
            current = {"id": next(convs), "turns": 0}

            def conversation_body() -> dict:
                if current["turns"] == turns_per_conv:  # the pre-made ones (made outside the timed cases), then new
                    made = (
                        next(convs, None)
                        or s.post(server.url + "/v1/conversations", json={}, headers=AUTH).json()["id"]
                    )
                    current.update(id=made, turns=0)
                current["turns"] += 1
                return {**BODY, "conversation_id": current["id"]}

            def conv_turn() -> float:
                return post_timer(s, server.url + "/v1/chat/completions", conversation_body(), AUTH)()

            return conv_turn

        conv_turn = conversation_turns(gateway)

        url = "/v1/chat/completions"
        direct = Case("direct", post_timer(s, upstream + "/chat/completions", BODY, UPSTREAM_AUTH), None)
        cases = [
            direct,
            Case("bare pass-through", post_timer(s, bare.url + url, BODY, {}), bare),
            Case("gateway stateless", post_timer(s, gateway.url + url, BODY, AUTH), gateway),
            Case("gateway conversation", conv_turn, gateway),
            Case("gateway conv. no cache", conversation_turns(uncached), uncached),
        ]
        interleave(cases, rounds, per_round, warmup)
        added = report(cases, direct, f"1. request latency at c=1 ({rounds}x{per_round} per case, fresh servers)")
        bare_case, stateless, conv, conv_miss = cases[1], cases[2], cases[3], cases[4]
        b, g = added[bare_case.name], added[stateless.name]
        cpu = {c.name: c.cpu / c.count for c in cases[1:]}
        print(f"  gateway p50 added / bare p50 added    = {ratio(g[0], b[0])}   (must: <= 1.5x)")
        print(f"  gateway p99 added / gateway p50 added = {ratio(g[2], g[0])}   (must: <= 3x)")
        print(f"  gateway p99 added / bare p99 added    = {ratio(g[2], b[2])}   (must: <= 3x)")
        print(
            f"  gateway CPU / bare CPU per request    = {ratio(cpu[stateless.name], cpu[bare_case.name])}"
            "   (must: <= 1.5x)"
        )
        for case, what in (
            (conv, "conversation turn (5 per conversation, all served by this process: history cache hits)"),
            (conv_miss, "the same without the history cache (every turn reads its history: a cache miss)"),
        ):
            turns = case.count
            calls = sum(case.ddb_calls.values()) / turns
            client_side = (case.ddb_seconds - case.ddb_send) / turns
            extra = cpu[case.name] - cpu[stateless.name]
            print(f"  {what}:")
            print(
                f"                     DynamoDB requests/turn {calls:.2f} "
                f"({', '.join(f'{op} {n / turns:.2f}' for op, n in sorted(case.ddb_calls.items()) if n)})"
            )
            print(
                f"                     botocore client-side {client_side * 1000:.3f} ms/turn "
                f"({client_side / calls * 1000 if calls else 0:.3f} ms/call), HTTP to moto "
                f"{case.ddb_send / turns * 1000:.3f} ms/turn"
            )
            must = "   (must: <= +2 ms)" if case is conv else ""
            print(f"                     gateway CPU over stateless {extra * 1000:+.3f} ms/turn{must}")

        stream_cases = [
            Case("direct", ttfb_timer(s, upstream + "/chat/completions", BODY, UPSTREAM_AUTH), None),
            Case("bare pass-through", ttfb_timer(s, bare.url + url, BODY, {}), bare),
            Case("gateway stateless", ttfb_timer(s, gateway.url + url, BODY, AUTH), gateway),
        ]
        srounds = rounds // 2
        interleave(stream_cases, srounds, per_round, warmup)
        sadded = report(stream_cases, stream_cases[0], f"2. stream time to first byte ({srounds}x{per_round} per case)")
        sb, sg = sadded["bare pass-through"], sadded["gateway stateless"]
        print(f"  gateway TTFB p50 added / bare = {ratio(sg[0], sb[0])}   (must: <= 1.5x)")

        stats, bare_stats = gateway.stats(), bare.stats()
        print("\n== 3. the slowest gateway requests and the GC pauses inside them")
        pauses = stats["gc_pauses"]
        slow = sorted(stats["server_seconds"], key=lambda r: -r[1])[:8]
        for started, seconds, path, phases in slow:
            inside = [p for p in pauses if started <= p[0] <= started + seconds + 0.001]
            gc_ms = sum(p[1] for p in inside) * 1000
            spent = " ".join(f"{k} {v * 1000:.1f}" for k, v in sorted(phases.items()))
            print(f"  {seconds * 1000:7.2f} ms  {path:22s} GC {gc_ms:6.2f} ms   phases (ms): {spent}")
        turns = [r for r in stats["server_seconds"] if r[2] == "/v1/chat/completions"]
        names = sorted({k for r in turns for k in r[3]})
        mean = " ".join(f"{k} {statistics.mean(r[3].get(k, 0.0) for r in turns) * 1000:.2f}" for k in names)
        print(f"  mean phases of a completion (ms): {mean}   (store/quota/auth include their DynamoDB round trips)")
        by_gen: dict[int, list[float]] = {}
        for _, seconds, gen in pauses:
            by_gen.setdefault(gen, []).append(seconds)
        for gen, values in sorted(by_gen.items()):
            print(
                f"  GC generation {gen}: {len(values):5d} collections, max {max(values) * 1000:6.2f} ms, "
                f"total {sum(values) * 1000:7.1f} ms"
            )
        print(f"  gc threshold {stats['gc_threshold']}, frozen objects {stats['gc_frozen']}")
        big = [p for p in pauses if p[1] > 0.005]
        first = stats["server_seconds"][0][0] if stats["server_seconds"] else 0.0
        for started, seconds, gen in big[:6]:
            at = sum(1 for r in stats["server_seconds"] if r[0] < started)
            print(f"  GC pause {seconds * 1000:6.2f} ms (generation {gen}) at request {at} ({started - first:+.1f} s)")

        print("\n== 4. memory after the load")
        print(
            f"  gateway: {stats['requests']:,} requests, RSS {stats['rss_mib']:.1f} MiB (peak {stats['hwm_mib']:.1f})"
        )
        # the must is after 2,000 requests: top up with the same mix (stateless and conversation turns)
        stateless_turn = post_timer(s, gateway.url + url, BODY, AUTH)
        for i in range(max(0, MEMORY_AFTER_REQUESTS - stats["requests"])):
            (conv_turn if i % 2 else stateless_turn)()
        stats = gateway.stats()
        print(
            f"  gateway: {stats['requests']:,} requests, RSS {stats['rss_mib']:.1f} MiB (peak {stats['hwm_mib']:.1f})"
            "   (must: <= 100 MiB after 2,000)"
        )
        print(f"  bare:    {bare_stats['requests']:,} requests, RSS {bare_stats['rss_mib']:.1f} MiB")
        names = sorted({n.rstrip("0123456789_") for n in stats["threads"]})
        print(f"  threads in the gateway process: {len(stats['threads'])} ({', '.join(names)})")
    finally:
        gateway.stop()
        uncached.stop()
        bare.stop()


def cold_start(env: dict[str, str]) -> None:
    """Process start -> first completion, the app alone, started the way run.sh starts it.

    Bytecode is compiled first, and the token ranks pre-parsed, as the layer's build ships them
    (layers/common/Makefile; this machine sets PYTHONDONTWRITEBYTECODE, so without it every start
    would compile the package from source).
    """
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *(os.path.join(ROOT, p) for p in ("layers/common", "functions"))],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # and the token ranks pre-parsed, as layers/common/Makefile builds the layer
    subprocess.run(
        [sys.executable, "-m", "llm_gateway.chat.tokens"],
        env={**os.environ, "PYTHONPATH": PYPATH},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    runs = 3 if QUICK else 5
    times = []
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        proc = subprocess.Popen(
            ["sh", os.path.join(ROOT, "functions/api/run.sh")],  # exactly what Lambda runs (python from PATH)
            env={
                **os.environ,
                "PYTHONPATH": PYPATH,
                "LAMBDA_TASK_ROOT": os.path.join(ROOT, "functions/api"),
                "PORT": str(port),
                "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with requests.Session() as s:
                while True:
                    try:
                        r = s.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=BODY, headers=AUTH, timeout=10)
                        r.raise_for_status()
                        break
                    except requests.ConnectionError:
                        if proc.poll() is not None:
                            raise RuntimeError("the app exited") from None
                        time.sleep(0.002)
            times.append(time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(10)
    probe = "import time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t)"

    def measure(stmt: str) -> float:
        values = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", probe.format(stmt=stmt)],
                env={**os.environ, "PYTHONPATH": PYPATH},
                capture_output=True,
                text=True,
                check=True,
            )
            values.append(float(out.stdout.strip().splitlines()[-1]))
        return statistics.median(values)

    def phases() -> tuple[float, float, float]:
        """Medians of import app, building its services, and its first completion (in-process)."""
        values: list[list[float]] = [[], [], []]
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, os.path.join(ROOT, "bench/_cold_phases.py")],
                env={**os.environ, "PYTHONPATH": PYPATH},
                capture_output=True,
                text=True,
                check=True,
            )
            for column, value in zip(values, json.loads(out.stdout.strip().splitlines()[-1]), strict=True):
                column.append(value)
        imported, built, first = (statistics.median(v) for v in values)
        return imported, built, first

    boto, app = measure("import boto3"), measure("import app; app.default_services()")
    # The floor under the import part: the two libraries the app is built on and must keep (issue 16:
    # keep FastAPI, pydantic and Powertools; keep boto3), with none of the gateway's own code.
    fastapi_alone = measure("from fastapi import FastAPI")
    floor = measure(
        "from fastapi import FastAPI; import botocore.session; botocore.session.Session().create_client("
        "'dynamodb', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x')"
    )
    imported, built, first = phases()
    print("\n== 5. cold start, the app alone")
    print(
        f"  process start -> first completion {statistics.median(times) * 1000:7.1f} ms "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})   (must: <= 500 ms)"
    )
    print(f"  import boto3                      {boto * 1000:7.1f} ms")
    print(
        f"  import app + build its services   {app * 1000:7.1f} ms = {app / boto:.2f}x import boto3   (must: <= 2.5x)"
    )
    print(
        f"  floor, the libraries alone:       from fastapi import FastAPI {fastapi_alone * 1000:.1f} ms = "
        f"{fastapi_alone / boto:.2f}x import boto3; with a DynamoDB client {floor * 1000:.1f} ms = {floor / boto:.2f}x"
    )
    print(
        f"  where it goes, one process:       import app {imported * 1000:.0f} ms, "
        f"build services {built * 1000:.0f} ms, first completion {first * 1000:.0f} ms "
        "(lifespan + warm-up racing it: KMS, auth read, tokens)"
    )


def top_allocations() -> None:
    gateway = Server("gateway", env={"BENCH_TRACEMALLOC": "1"})
    try:
        s = requests.Session()
        conv = s.post(gateway.url + "/v1/conversations", json={}, headers=AUTH).json()["id"]
        for i in range(300 if QUICK else 1000):
            body = {**BODY, "conversation_id": conv} if i % 2 else BODY
            if i % 2 and i % 10 == 9:
                conv = s.post(gateway.url + "/v1/conversations", json={}, headers=AUTH).json()["id"]
            s.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH).raise_for_status()
        stats = gateway.stats()
    finally:
        gateway.stop()
    print(f"\n== 6. tracemalloc after {stats['requests']:,} requests: {stats['tracemalloc_mib']:.1f} MiB traced")
    for name, mib in stats["tracemalloc_top"]:
        print(f"  {mib:6.2f} MiB  {name}")
    print("  top lines:")
    for line, mib in stats["tracemalloc_lines"][:10]:
        print(f"  {mib:6.2f} MiB  {line}")


@contextmanager
def stack() -> Iterator[dict[str, str]]:
    from local.stack import StackConfig, local_stack

    os.environ["SHOW_METRICS"] = "1"  # measure the gateway as deployed: EMF metrics on (to /dev/null)
    with local_stack(StackConfig.from_env({"PORT": "0"})) as env:
        yield env


def main() -> None:
    with stack() as env:
        load(env)
        cold_start(env)
        if "--tracemalloc" in sys.argv:
            top_allocations()


if __name__ == "__main__":
    main()
