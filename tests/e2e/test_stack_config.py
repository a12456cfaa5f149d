"""`make dev`'s contract beyond the default stack: a real upstream via OPENAI_BASE_URL, and ports in use."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import openai

from local.fake_upstream import FakeUpstream
from local.resources import free_port
from tests.e2e.conftest import ROOT, port_in_use, stack_env, wait_healthy

REAL_KEY = "sk-real-upstream-key-e2e"


def test_openai_base_url_routes_default_to_that_server():
    # Any OpenAI-compatible server: here a second fake, with its own key and its own reply.
    with FakeUpstream(api_key=REAL_KEY) as real:
        real.script({"reply": "from the configured upstream"})
        api_port = free_port()
        env = stack_env(api_port, free_port(), free_port())
        env.update(OPENAI_BASE_URL=real.url, OPENAI_API_KEY=REAL_KEY, DEFAULT_MODEL="my-model")
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.stack"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{api_port}"
            wait_healthy(base, proc, 60)
            client = openai.OpenAI(base_url=base + "/v1", api_key=env["GATEWAY_API_KEY"], max_retries=0)
            r = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        assert r.choices[0].message.content == "from the configured upstream"
        seen = real.requests
        assert len(seen) == 1
        assert seen[0]["auth_ok"] is True  # the key reached it, through KMS
        assert seen[0]["body"]["model"] == "my-model"
        assert REAL_KEY not in out  # the plaintext key is never printed
        assert proc.returncode == 0
        assert not port_in_use(api_port)


def test_port_in_use_is_reported_and_nothing_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        moto_port = free_port()
        env = stack_env(port, moto_port, free_port())
        result = subprocess.run(
            [sys.executable, "-m", "local.stack"], cwd=ROOT, env=env, text=True, capture_output=True, timeout=30
        )
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr
    assert not port_in_use(moto_port)  # it never half-started: no moto, no upstream
