"""The whole local stack (`python -m local.stack`, what `make dev` runs) on ephemeral ports."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.resources import free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sk-e2e-tenant-key"


@dataclass
class Stack:
    base_url: str
    api_key: str
    upstream_url: str  # the fake upstream's base URL ("…/v1"); its control API is beside it
    proc: subprocess.Popen
    ports: tuple[int, ...]
    log: Path  # everything the stack printed: its JSON log lines
    state: Path | None = None  # the stack's state file (local/state.py), LOCAL_STACK_STATE

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines

    def control(self, path: str, body: dict | None = None) -> dict:
        root = self.upstream_url.removesuffix("/v1")
        data = json.dumps(body or {}).encode() if body is not None else None
        req = urllib.request.Request(
            root + path,
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read() or b"{}")

    def script(self, *faults: dict) -> None:
        self.control("/_control/script", {"faults": list(faults)})

    def upstream_requests(self) -> list[dict]:
        return self.control("/_control/requests")["requests"]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text() if log else (proc.stdout.read() if proc.stdout else "")
            raise RuntimeError(f"local stack exited with {proc.returncode}:\n{output[-5000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("local stack did not become healthy in time")


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stack_env(api_port: int, moto_port: int, upstream_port: int) -> dict[str, str]:
    """The environment `make dev` would run with, on the given ports, with no real upstream or AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AWS_"))}
    env.update(
        PORT=str(api_port),
        MOTO_PORT=str(moto_port),
        FAKE_UPSTREAM_PORT=str(upstream_port),
        GATEWAY_API_KEY=API_KEY,
        PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("layers/common", "functions/api", "functions/worker", ".")),
        # fast, bounded retries so fault tests take little time
        BACKOFF_BASE_SECONDS="0.05",
        BACKOFF_MAX_SECONDS="0.2",
        REQUEST_DEADLINE_SECONDS="10",
        PYTHONUNBUFFERED="1",  # log lines reach the log file as they are written
    )
    return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    api_port, moto_port, upstream_port = free_port(), free_port(), free_port()
    env = stack_env(api_port, moto_port, upstream_port)
    # Output goes to a file, not a pipe nobody reads (a full pipe would stall the stack).
    folder = tmp_path_factory.mktemp("stack")
    log = folder / "stack.log"
    env["LOCAL_STACK_STATE"] = str(folder / "stack.json")  # not the checkout's .local-stack/
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.stack"], cwd=ROOT, env=env, text=True, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_healthy(base, proc, 60, log)
        yield Stack(
            base + "/v1",
            API_KEY,
            f"http://127.0.0.1:{upstream_port}/v1",
            proc,
            (api_port, moto_port, upstream_port),
            log,
            folder / "stack.json",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert proc.returncode == 0, "Ctrl-C should stop the stack cleanly"
    # Nothing left behind: the stack and its children are gone, every port is free again.
    for port in (api_port, moto_port, upstream_port):
        assert not port_in_use(port), f"port {port} still held after the stack stopped"


@pytest.fixture
def client(stack):
    from openai import OpenAI

    return OpenAI(base_url=stack.base_url, api_key=stack.api_key, max_retries=0, timeout=30)


@pytest.fixture
def fresh_upstream(stack):
    stack.control("/_control/reset", {})
    yield stack
    stack.control("/_control/reset", {})
