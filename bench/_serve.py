"""One server process for bench/request_path.py: the gateway app, or the bare pass-through.

    python bench/_serve.py gateway PORT
    python bench/_serve.py bare PORT UPSTREAM_URL UPSTREAM_KEY

Both run under uvicorn with the options functions/api/run.sh uses (uvloop, httptools;
``BENCH_LOOP``/``BENCH_HTTP`` override, e.g. ``asyncio``/``h11``), in their own process, so CPU and memory are that
process's alone (the client, the fake upstream and moto live elsewhere). An outermost ASGI
wrapper answers ``GET /__bench`` with the process's own counters — ``time.process_time()``,
RSS, GC pauses (``gc.callbacks``), the server-side time of every request, and, for the gateway,
its DynamoDB calls by operation and botocore's client-side time (the whole ``_make_api_call``
minus the HTTP exchange, ``before-send`` → ``before-parse``). ``BENCH_TRACEMALLOC=1`` adds
tracemalloc's top allocations (that process's RSS is then not representative).
"""

from __future__ import annotations

import contextvars
import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for sub in ("layers/common", "functions/api", "functions/worker", "."):
    path = os.path.join(ROOT, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

TRACEMALLOC = os.environ.get("BENCH_TRACEMALLOC") == "1"
if TRACEMALLOC:
    import tracemalloc

    tracemalloc.start(1)


_phases: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("phases", default=None)


def phase(name: str, fn: Any) -> Any:
    """``fn``, adding its wall time to the current request's phase ``name`` (threads inherit the context)."""

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases = _phases.get()
            if phases is not None:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - started

    return timed


def watch_phases(services: Any) -> None:
    """Time the phases of a gateway request: auth, quota, store, upstream, log and metrics writes."""
    from llm_gateway import observability

    services.auth.authenticate = phase("auth", services.auth.authenticate)
    quotas = services.chat.quotas
    quotas.admit = phase("quota", quotas.admit)
    quotas.settle = phase("quota", quotas.settle)
    for name in ("acquire_lease", "read_history", "commit_turn", "release_lease"):
        setattr(services.conversations, name, phase("store", getattr(services.conversations, name)))
    services.chat.router.complete = phase("upstream", services.chat.router.complete)
    services.chat.router.stream = phase("upstream", services.chat.router.stream)
    for handler in observability.logger.handlers:
        handler.emit = phase("log", handler.emit)  # type: ignore[method-assign]
    observability.RequestMetrics.flush = phase("metrics", observability.RequestMetrics.flush)  # type: ignore[method-assign]


class Probe:
    """Counters a bench reads between cases (all cumulative since the process started)."""

    def __init__(self) -> None:
        self.requests = 0
        # (started monotonic, seconds, path, {phase: seconds})
        self.server_seconds: list[tuple[float, float, str, dict[str, float]]] = []
        self.gc_pauses: list[tuple[float, float, int]] = []  # (started monotonic, seconds, generation)
        self.ddb_calls: Counter[str] = Counter()
        self.ddb_seconds = 0.0  # the whole _make_api_call
        self.ddb_send_seconds = 0.0  # before-send -> before-parse: the HTTP exchange with moto
        self._gc_started = 0.0
        self._send_started: dict[int, float] = {}
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append((time.monotonic(), time.perf_counter() - self._gc_started, info["generation"]))

    def watch_dynamodb(self, client: Any) -> None:
        call = client._make_api_call

        def timed(operation: str, params: dict[str, Any]) -> Any:
            started = time.perf_counter()
            try:
                return call(operation, params)
            finally:
                self.ddb_seconds += time.perf_counter() - started
                self.ddb_calls[operation] += 1

        def before_send(**_: Any) -> None:
            self._send_started[threading.get_ident()] = time.perf_counter()

        def before_parse(**_: Any) -> None:
            started = self._send_started.pop(threading.get_ident(), None)
            if started is not None:
                self.ddb_send_seconds += time.perf_counter() - started

        client._make_api_call = timed
        # first: a deadline-bounded client (llm_gateway.aws.bounded) sends the request in its own handler
        client.meta.events.register_first("before-send.dynamodb.*", before_send)
        client.meta.events.register("before-parse.dynamodb.*", before_parse)

    def snapshot(self) -> dict[str, Any]:
        with open("/proc/self/status") as f:
            status = {line.split(":")[0]: line.split()[1] for line in f if line.startswith(("VmRSS", "VmHWM"))}
        out = {
            "cpu": time.process_time(),
            "rss_mib": int(status["VmRSS"]) / 1024,
            "hwm_mib": int(status["VmHWM"]) / 1024,
            "requests": self.requests,
            "server_seconds": self.server_seconds,
            "gc_pauses": self.gc_pauses,
            "gc_counts": gc.get_count(),
            "gc_threshold": gc.get_threshold(),
            "gc_frozen": gc.get_freeze_count(),
            "ddb_calls": dict(self.ddb_calls),
            "ddb_seconds": self.ddb_seconds,
            "ddb_send_seconds": self.ddb_send_seconds,
            "threads": sorted(t.name for t in threading.enumerate()),
        }
        if TRACEMALLOC:
            snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            out["tracemalloc_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
            by_package: Counter[str] = Counter()
            for stat in snap.statistics("filename"):
                name = stat.traceback[0].filename
                name = name.split("site-packages/", 1)[-1].split("/llm-gateway/")[-1]
                by_package[name.split("/")[0] if "site-packages" in stat.traceback[0].filename else name] += stat.size
            out["tracemalloc_top"] = [(n, s / 2**20) for n, s in by_package.most_common(15)]
            out["tracemalloc_lines"] = [
                (str(stat.traceback[0]), stat.size / 2**20) for stat in snap.statistics("lineno")[:15]
            ]
        return out


def probed(app: Any, probe: Probe) -> Any:
    async def wrapper(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__bench":
            body = json.dumps(probe.snapshot()).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started, at, phases = time.perf_counter(), time.monotonic(), {}
        token = _phases.set(phases)
        try:
            await app(scope, receive, send)
        finally:
            _phases.reset(token)
            probe.requests += 1
            probe.server_seconds.append((at, time.perf_counter() - started, scope["path"], phases))

    return wrapper


def bare_app(upstream: str, key: str) -> Any:
    """The baseline: a bare FastAPI app forwarding the body with requests (JSON or a relayed stream)."""
    import requests
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    session = requests.Session()
    auth = {"Authorization": f"Bearer {key}"}

    @app.post("/v1/chat/completions", response_model=None)
    def forward(body: dict) -> Any:
        if body.get("stream"):
            upstream_reply = session.post(
                upstream + "/chat/completions", json=body, headers=auth, timeout=(3, 30), stream=True
            )
            return StreamingResponse(upstream_reply.iter_content(None), media_type="text/event-stream")
        return session.post(upstream + "/chat/completions", json=body, headers=auth, timeout=(3, 30)).json()

    return app


def main() -> None:
    import uvicorn

    mode, port = sys.argv[1], int(sys.argv[2])
    probe = Probe()
    if mode == "gateway":
        import app as gateway

        app: Any = gateway.app
        probe.watch_dynamodb(gateway.default_services().conversations.client)
        watch_phases(gateway.default_services())
    else:
        app = bare_app(sys.argv[3], sys.argv[4])
    config = uvicorn.Config(
        probed(app, probe),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop=os.environ.get("BENCH_LOOP", "auto"),  # uvloop/httptools when installed, as run.sh
        http=os.environ.get("BENCH_HTTP", "auto"),
    )
    server = uvicorn.Server(config)
    config.load()
    print(
        json.dumps({"loop": config.loop, "http": getattr(config.http_protocol_class, "__name__", "?")}),
        file=sys.stderr,
        flush=True,
    )
    server.run()


if __name__ == "__main__":
    main()
