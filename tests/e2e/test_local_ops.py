"""Operating the local stack as printed: the banner's examples, the admin command, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from local.resources import free_port
from tests.e2e.conftest import ROOT, stack_env, wait_healthy


def banner_commands(log: str) -> tuple[str, str]:
    """The banner's curl and Python examples, exactly as printed."""
    curl = re.search(r"^  (curl .*?)\n\n", log, re.S | re.M).group(1)
    python = re.search(r"^  (\.venv/bin/python -c '.*?')\n", log, re.S | re.M).group(1)
    return curl, python


def test_banner_examples_run_as_printed(stack):
    curl, python = banner_commands(stack.log.read_text())
    for command in (curl, python):
        out = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Echo: Hello" in out.stdout


def test_readme_example_runs(stack):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Try it.*?```python\n(.*?)```", readme, re.S).group(1)
    assert "http://127.0.0.1:3000/v1" in example and "sk-local-dev" in example
    code = example.replace("http://127.0.0.1:3000/v1", stack.base_url).replace("sk-local-dev", stack.api_key)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Echo: Hi")


def admin(*args: str, env: dict[str, str], command: str = "bin/llm-gateway-admin", cwd=ROOT):
    return subprocess.run([str(ROOT / command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def bare_env(**extra: str) -> dict[str, str]:
    """An operator's shell: no AWS settings, no table."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TABLE_NAME", "LOCAL_STACK_STATE"))}
    return {**env, **extra}


@pytest.mark.parametrize("command", ["bin/llm-gateway-admin", ".venv/bin/llm-gateway-admin"])
def test_admin_command_finds_the_running_stack(stack, command, tmp_path):
    """The checkout's script, and the console script of the venv install run from another folder."""
    tenant = "acme" if command.startswith("bin") else "acme-installed"
    run = {"command": command, "cwd": ROOT if command.startswith("bin") else tmp_path}
    env = bare_env(LOCAL_STACK_STATE=str(stack.state))
    made = admin("keys", "create", "--tenant", tenant, env=env, **run)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    assert json.loads(made.stdout)["tenant"] == tenant
    reply = httpx.get(stack.base_url + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert reply.status_code == 200
    listed = admin("keys", "list", "--tenant", tenant, env=env, **run)
    assert [k["tenant"] for k in json.loads(listed.stdout)] == [tenant]


def test_admin_errors_are_one_line(stack, tmp_path):
    state = json.loads(stack.state.read_text())
    missing_table = admin("keys", "list", env=bare_env(**state["aws"], TABLE_NAME="no-such-table"))
    no_stack = admin("keys", "list", env=bare_env(LOCAL_STACK_STATE=str(tmp_path / "none.json")))
    moto_port = free_port()  # nothing listens there
    unreachable = admin(
        "keys", "list", env=bare_env(**{**state["aws"], "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}"})
    )
    for out, says in (
        (missing_table, "table 'no-such-table' does not exist"),
        (unreachable, f"cannot reach http://127.0.0.1:{moto_port}"),
        (no_stack, "error: "),
    ):
        assert out.returncode == 1
        assert "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert says in out.stderr


def test_ctrl_c_with_streams_in_flight_stops_cleanly(tmp_path):
    api, moto, upstream = free_port(), free_port(), free_port()
    env = stack_env(api, moto, upstream)
    env["LOCAL_STACK_STATE"] = str(tmp_path / "stack.json")
    log = tmp_path / "stack.log"
    with log.open("w") as out:
        # Its own process group, signalled as a terminal's Ctrl-C signals a foreground job: all of it.
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.stack"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{api}"
    try:
        wait_healthy(base, proc, 60, log)
        assert (tmp_path / "stack.json").exists()
        control = f"http://127.0.0.1:{upstream}/_control/script"
        slow = {"delay_between_chunks": 0.5}
        httpx.post(control, json={"faults": [slow, slow, slow]}, timeout=5).raise_for_status()
        seen: list[list[str]] = [[], [], []]
        started = threading.Barrier(4)

        def client(i: int) -> None:
            body = {
                "model": "default",
                "stream": True,
                "messages": [{"role": "user", "content": "a reply long enough to still be streaming " * 3}],
            }
            headers = {"Authorization": f"Bearer {env['GATEWAY_API_KEY']}"}
            with httpx.stream("POST", base + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
                first = True
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        seen[i].append(line[6:])
                        if first:
                            first = False
                            started.wait(10)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        started.wait(20)  # every stream has its first chunk
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        for t in threads:
            t.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    printed = log.read_text()
    assert proc.returncode == 0, printed[-3000:]
    assert "Traceback" not in printed and "poll failed" not in printed, printed[-3000:]
    for events in seen:
        last = events[-1]
        if last != "[DONE]":
            assert json.loads(last)["error"]["code"] == "server_shutting_down", events
    assert any(events[-1] != "[DONE]" for events in seen), "the streams should have been in flight"
    assert not (tmp_path / "stack.json").exists()
    time.sleep(0.1)


def test_sixteen_concurrent_requests_log_their_own_correlation_ids(fresh_upstream):
    stack = fresh_upstream
    # Slow streams, so all 16 are in flight at once while each logs its lines.
    stack.script(*[{"delay_between_chunks": 0.1}] * 16)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    body = {"model": "default", "stream": True, "messages": [{"role": "user", "content": "one two three four"}]}
    ids: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def one() -> None:
        barrier.wait(10)
        with httpx.stream("POST", stack.base_url + "/chat/completions", json=body, headers=headers, timeout=60) as r:
            assert r.status_code == 200
            assert [line for line in r.iter_lines() if line][-1] == "data: [DONE]"
            with lock:
                ids.append(r.headers["x-request-id"])

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(set(ids)) == 16

    def ours(message: str) -> list[dict]:
        return [
            line for line in stack.log_lines() if line.get("message") == message and line.get("correlation_id") in ids
        ]

    deadline = time.monotonic() + 10
    while len(ours("request")) < 16:  # access lines are written just after the response ends
        assert time.monotonic() < deadline, f"{len(ours('request'))} of 16 access lines"
        time.sleep(0.05)
    for message in ("request", "stream"):
        lines = ours(message)
        # one line per request, each with its own request's id (a process-wide id repeats instead)
        assert sorted(line["correlation_id"] for line in lines) == sorted(ids), message
        assert not any("function_name" in line for line in lines)
