"""Background responses and resumable streams through the local stack, with the official openai SDK
(issue 14, items 4 and 5: Must show). The stack's poller runs the worker, as ``make dev`` does."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import openai
import pytest
from openai import OpenAI

from local.resources import free_port
from tests.e2e.conftest import ROOT, stack_env, wait_healthy
from tests.e2e.test_responses import required_fields_sent

WORDS = " ".join(f"w{i}" for i in range(191))  # 191 deltas: with the 9 other events, 200 events


def until(predicate, timeout: float = 30.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


def settled(client: OpenAI, response_id: str):
    return until(lambda: (r := client.responses.retrieve(response_id)).status not in ("queued", "in_progress") and r)


def test_background_create_polls_to_completed_with_the_output_of_a_foreground_response(client, fresh_upstream):
    foreground = client.responses.create(model="default", input="the same input")
    queued = client.responses.create(model="default", input="the same input", background=True)
    required_fields_sent(queued)
    assert queued.status == "queued" and queued.background is True and queued.output == []
    done = settled(client, queued.id)
    required_fields_sent(done)
    assert done.status == "completed" and done.background is True
    assert done.output_text == foreground.output_text == "Echo: the same input (messages seen: 1)"
    assert [(i.type, i.role, i.status) for i in done.output] == [(i.type, i.role, i.status) for i in foreground.output]
    assert done.usage == foreground.usage
    # a background response continues a chain like any stored one
    follow = client.responses.create(model="default", input="next", previous_response_id=done.id)
    assert follow.output_text == "Echo: next (messages seen: 3)"


def test_an_idempotency_key_gives_the_same_background_response(client, fresh_upstream):
    key = {"Idempotency-Key": f"bg-{time.time_ns()}"}
    first = client.responses.create(model="default", input="once", background=True, extra_headers=key)
    again = client.responses.create(model="default", input="once", background=True, extra_headers=key)
    assert again.id == first.id
    with pytest.raises(openai.UnprocessableEntityError):
        client.responses.create(model="default", input="another body", background=True, extra_headers=key)
    settled(client, first.id)
    assert fresh_upstream.control("/_control/stats")["chat_calls"] == 1


def test_cancel_a_queued_response_it_never_runs(client, fresh_upstream):
    conversation = client.conversations.create()
    fresh_upstream.script({"delay_first_byte": 1.5})
    ahead = client.responses.create(model="default", input="ahead", conversation=conversation.id, background=True)
    behind = client.responses.create(model="default", input="behind", conversation=conversation.id, background=True)
    cancelled = client.responses.cancel(behind.id)
    assert cancelled.id == behind.id and cancelled.status == "cancelled"
    assert client.responses.cancel(behind.id).status == "cancelled"  # again: the same answer
    assert settled(client, ahead.id).status == "completed"
    time.sleep(0.5)  # the worker had its chance at the cancelled one
    assert client.responses.retrieve(behind.id).status == "cancelled"
    sent = [r["body"]["messages"][-1]["content"] for r in fresh_upstream.upstream_requests()]
    assert sent == ["ahead"]
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [i.content[0].text for i in items][0] == "ahead" and len(items) == 2


def test_cancel_a_running_response_stops_it_and_nothing_is_stored_as_completed(client, fresh_upstream):
    fresh_upstream.script({"reply": WORDS, "delay_between_chunks": 0.03})
    queued = client.responses.create(model="default", input="long", background=True)
    until(lambda: client.responses.retrieve(queued.id).status == "in_progress")
    until(lambda: fresh_upstream.control("/_control/stats")["open_streams"] == 1)
    assert client.responses.cancel(queued.id).status == "cancelled"
    until(lambda: fresh_upstream.control("/_control/stats")["open_streams"] == 0, timeout=10)
    stats = fresh_upstream.control("/_control/stats")
    assert stats["disconnects"] == 1  # the worker closed the upstream connection mid-stream
    final = client.responses.retrieve(queued.id)
    assert final.status == "cancelled" and final.output == []
    events = list(client.responses.retrieve(queued.id, stream=True))  # what ran, then the end
    assert events and events[-1].type != "response.completed"


def test_cancel_of_a_finished_response_is_409_and_of_a_foreground_one_400(client, fresh_upstream):
    done = settled(client, client.responses.create(model="default", input="x", background=True).id)
    with pytest.raises(openai.ConflictError):
        client.responses.cancel(done.id)
    foreground = client.responses.create(model="default", input="y")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(foreground.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_unknown")


@pytest.fixture
def second_gateway(stack):
    """Another API process on the same stack (the same moto server): ``python -m local.api``."""
    port = free_port()
    env = stack_env(port, 0, 0)
    env["LOCAL_STACK_STATE"] = str(stack.state)
    log = stack.log.with_name("second-api.log")
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.api", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 30, log)
        yield OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=stack.api_key, max_retries=0, timeout=30)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_dropped_background_stream_resumes_on_another_gateway_process_exactly_once(
    client, fresh_upstream, second_gateway
):
    fresh_upstream.script({"reply": WORDS, "delay_between_chunks": 0.01})
    first: list = []
    stream = client.responses.create(model="default", input="resume me", background=True, stream=True)
    for event in stream:
        first.append(event)
        if event.sequence_number == 50:
            break
    stream.close()  # the client drops the connection; the response runs on
    response_id = first[0].response.id
    assert [e.sequence_number for e in first] == list(range(51))
    assert [e.type for e in first[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert first[0].response.status == "queued"

    rest = list(second_gateway.responses.retrieve(response_id, stream=True, starting_after=50))
    assert [e.sequence_number for e in rest] == list(range(51, 200))
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    stored = second_gateway.responses.retrieve(response_id)
    assert stored.status == "completed" and text == stored.output_text == WORDS
    assert rest[-1].response == stored


def test_the_local_api_command_refuses_without_a_stack(tmp_path):
    env = {**os.environ, "LOCAL_STACK_STATE": str(tmp_path / "none.json")}
    env["PYTHONPATH"] = os.pathsep.join(str(ROOT / p) for p in ("layers/common", "functions/api", "."))
    out = subprocess.run(
        [sys.executable, "-m", "local.api", "--port", "1"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode != 0 and "no local stack is running" in out.stderr


def test_cancel_cuts_a_running_response_whose_upstream_is_silent(client, fresh_upstream):
    fresh_upstream.script({"reply": WORDS, "block_after": 5})  # 5 chunks, then the upstream holds
    queued = client.responses.create(model="default", input="held", background=True)
    until(lambda: fresh_upstream.control("/_control/stats")["blocked"] == 1)
    assert client.responses.cancel(queued.id).status == "cancelled"

    def worker_stopped() -> bool:  # its run ended while the upstream still holds the reply
        return any(
            line.get("job_id") == queued.id and line.get("status") == "cancelled" for line in fresh_upstream.log_lines()
        )

    until(worker_stopped, timeout=10)
    assert fresh_upstream.control("/_control/stats")["blocked"] == 1
    fresh_upstream.control("/_control/release", {})
    # the held handler writes again and finds the connection the worker closed
    until(lambda: fresh_upstream.control("/_control/stats")["disconnects"] >= 1, timeout=10)
    final = client.responses.retrieve(queued.id)
    assert final.status == "cancelled" and final.output == []


def test_the_readme_background_example_runs(stack):
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"Background responses:.*?```python\n(.*?)```", readme, re.S).group(1)
    code = example.replace("http://127.0.0.1:3000/v1", stack.base_url).replace("sk-local-dev", stack.api_key)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "completed Echo: Summarise the plan (messages seen: 1)",
        "Echo: Stream it (messages seen: 1)",
    ]


def test_the_sdk_stream_helper_follows_a_background_response_by_id(client, fresh_upstream):
    queued = client.responses.create(model="default", input="helper", background=True)
    with client.responses.stream(response_id=queued.id) as stream:
        final = stream.get_final_response()
    assert final.id == queued.id and final.status == "completed"
    assert final.output_text == "Echo: helper (messages seen: 1)"
