"""Shared pieces of the benchmarks: servers in threads, timing, and ratio printing.

Benchmarks print ratios against a baseline measured in the same process and run
(machines here are noisy); they assert nothing.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ("layers/common", "functions/api", "functions/worker", "."):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)


class ThreadedUvicorn:
    """An ASGI app under uvicorn in a daemon thread on an ephemeral loopback port."""

    def __init__(self, app, port: int = 0) -> None:
        import uvicorn

        from local.resources import free_port

        self.port = port or free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedUvicorn:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send the gateway's JSON logs and EMF lines to /dev/null while timing (they still cost their write)."""
    saved = sys.stdout
    with open(os.devnull, "w") as devnull:
        sys.stdout = devnull
        try:
            yield
        finally:
            sys.stdout = saved


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved(cases: dict[str, Callable[[], object]], rounds: int, per_round: int, warmup: int = 20) -> dict:
    """Run every case in turn, round after round, so drift in machine speed hits all alike."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name] += timed(fn, per_round)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:7.3f} ms   p95 {pct(samples, 0.95) * 1000:7.3f} ms"


def dynamodb_timer(client) -> list[float]:
    """Accumulate the wall time of every DynamoDB call made through ``client`` (index 0)."""
    total = [0.0]
    started: dict[int, float] = {}

    def before(**kw):
        started[threading.get_ident()] = time.perf_counter()

    def after(**kw):
        total[0] += time.perf_counter() - started.pop(threading.get_ident(), time.perf_counter())

    client.meta.events.register("before-call.dynamodb.*", before)
    client.meta.events.register("after-call.dynamodb.*", after)
    return total
