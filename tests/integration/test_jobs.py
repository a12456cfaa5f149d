"""Async jobs end to end inside one process: the API (TestClient), moto in server mode (table,
FIFO queue + DLQ from template.yaml), the SQS poller feeding the real worker handler the way the
event source mapping does, and a `responses`-mocked upstream that counts every call.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import responses

from llm_gateway.jobs.messages import JobMessage
from llm_gateway.jobs.worker import build_worker
from local.poller import LambdaContext, SqsPoller, lambda_record

from .conftest import OTHER_KEY, UPSTREAM, conversation_messages, echo_reply, make_gateway
from .test_secrets import CANARY_PROMPT, all_logs  # noqa: F401 - all_logs is a fixture

MAX_RECEIVES = 4  # template.yaml JobsQueue RedrivePolicy.maxReceiveCount


class SimulatedCrash(BaseException):
    """The worker process dies: no except-Exception handler sees it, nothing is reported."""


def crash_once(monkeypatch, obj, name: str, why: str) -> None:
    """The first call of ``obj.name`` kills the worker (SimulatedCrash); later calls run as usual."""
    real = getattr(obj, name)
    crashes = []

    def maybe_crash(*args, **kwargs):
        if not crashes:
            crashes.append(1)
            raise SimulatedCrash(why)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, maybe_crash)


class Upstream:
    """The fake upstream's behaviour per request, keyed by markers in the last message."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()
        self.gate: threading.Event | None = None  # when set, calls block on it ...
        self.entered = threading.Event()  # ... after signalling this
        self.down = False

    def __call__(self, request) -> tuple[int, dict, str]:
        body = json.loads(request.body)
        last = str(body["messages"][-1].get("content"))
        with self.lock:
            self.calls.append(last)
        if self.gate is not None:
            self.entered.set()
            assert self.gate.wait(10), "test never released the upstream"
        if "POISON" in last or self.down:
            return 503, {}, json.dumps({"error": {"message": "overloaded", "type": "server_error"}})
        if "ECHO400" in last:  # an upstream that quotes the prompt back in its error
            return (
                400,
                {},
                json.dumps(
                    {
                        "error": {
                            "message": f"Invalid content: '{last}'",
                            "code": "invalid_value",
                            "type": "invalid_request_error",
                        }
                    }
                ),
            )
        if "REJECT" in last:
            return (
                400,
                {},
                json.dumps(
                    {
                        "error": {
                            "message": "bad parameter",
                            "type": "invalid_request_error",
                            "code": "invalid_value",
                            "param": "messages",
                        }
                    }
                ),
            )
        return echo_reply(request)

    def count(self, text: str) -> int:
        return sum(1 for c in self.calls if c == text)


@dataclass
class Jobs:
    gw: Any
    worker: Any
    poller: SqsPoller
    sqs: Any
    upstream: Upstream

    def submit(self, body: dict, key: str | None = None, api_key: str | None = None):
        headers = self.gw.headers(api_key) if api_key else self.gw.headers()
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.gw.client.post("/v1/jobs", json=body, headers=headers)

    def job(self, job_id: str, api_key: str | None = None) -> dict:
        r = self.gw.get(f"/v1/jobs/{job_id}", **({"key": api_key} if api_key else {}))
        assert r.status_code == 200, r.text
        return r.json()

    def conversation(self) -> str:
        return self.gw.post("/v1/conversations", {}).json()["id"]

    def messages(self, conversation_id: str) -> list[dict]:
        return conversation_messages(self.gw, conversation_id)

    def replies(self, conversation_id: str) -> list[dict]:
        return [m for m in self.messages(conversation_id) if m["role"] == "assistant"]

    def drain(self, until, max_polls: int = 40) -> None:
        """Run poller batches until ``until()`` holds (redeliveries wait out the visibility timeout)."""
        for _ in range(max_polls):
            if until():
                return
            self.poller.poll_once(wait_seconds=1)
        assert until(), "condition not reached"

    def queue_messages(self, url: str | None = None) -> list[dict]:
        """Every message currently visible on a queue (made visible again right away)."""
        url = url or self.gw.aws.res.jobs_queue_url
        got = self.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=0, AttributeNames=["All"]
        ).get("Messages", [])
        return got

    def job_items(self) -> list[dict]:
        ddb = self.gw.aws.client("dynamodb")
        items = ddb.scan(
            TableName=self.gw.aws.res.table_name,
            FilterExpression="SK = :j",
            ExpressionAttributeValues={":j": {"S": "JOB"}},
        )["Items"]
        return items

    def event_for(self, message: dict, receive_count: int = 1) -> dict:
        record = lambda_record(message, self.poller.queue_arn, "us-east-1")
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        return {"Records": [record]}

    def receive_one(self) -> dict:
        (message,) = self.poller.receive(wait_seconds=1)
        return message


def _jobs(aws, **overrides) -> Jobs:
    upstream = Upstream()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru("http://127.0.0.1")
        mock.add_callback(responses.POST, f"{UPSTREAM}/chat/completions", callback=upstream)
        overrides.setdefault("job_busy_wait_seconds", 0.0)
        # Redeliveries after 1-2 s (ChangeMessageVisibility), not the default 5 s .. 4 min.
        overrides.setdefault("job_redrive_base_seconds", 1.0)
        overrides.setdefault("job_redrive_max_seconds", 2.0)
        gw = make_gateway(aws, **overrides)
        gw.upstream = mock
        worker = build_worker(gw.services)
        sqs = aws.client("sqs")
        poller = SqsPoller(
            sqs, aws.res.jobs_queue_url, worker.handle, wait_seconds=1, visibility_timeout=1, function_timeout=30
        )
        yield Jobs(gw, worker, poller, sqs, upstream)


@pytest.fixture
def jobs(aws):
    yield from _jobs(aws)


def chat(content: str, conversation_id: str | None = None, **extra) -> dict:
    body = {"model": "default", "messages": [{"role": "user", "content": content}], **extra}
    if conversation_id:
        body["conversation_id"] = conversation_id
    return body


# --------------------------------------------------------------------------- happy path + API


def test_job_roundtrip_and_tenant_scope(jobs):
    conv = jobs.conversation()
    r = jobs.submit(chat("hello", conv))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["object"] == "chat.completion.job" and job["status"] == "queued" and job["id"].startswith("job_")
    assert job["conversation_id"] == conv
    assert jobs.job(job["id"])["status"] == "queued"

    outcome = jobs.poller.poll_once()
    assert outcome.failed == [] and len(outcome.deleted) == 1
    done = jobs.job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1 and done["error"] is None
    assert done["result"]["object"] == "chat.completion"
    assert done["result"]["choices"][0]["message"]["content"] == "echo:hello n=1"
    assert done["result"]["conversation_id"] == conv
    assert [m["content"] for m in jobs.messages(conv)] == ["hello", "echo:hello n=1"]

    other = jobs.gw.get(f"/v1/jobs/{job['id']}", key=OTHER_KEY)
    assert other.status_code == 404 and other.json()["error"]["type"] == "invalid_request_error"
    assert jobs.gw.get("/v1/jobs/job_doesnotexist").status_code == 404
    assert jobs.queue_messages() == []


# --------------------------------------------------------------------------- redelivery


def test_same_message_delivered_three_times_stores_one_reply_and_calls_upstream_once(jobs):
    conv = jobs.conversation()
    job = jobs.submit(chat("once", conv)).json()
    message = jobs.receive_one()
    for delivery in (1, 2, 3):
        response = jobs.worker.handle(jobs.event_for(message, delivery), LambdaContext("w", 30))
        assert response == {"batchItemFailures": []}
    assert jobs.upstream.count("once") == 1
    assert len(jobs.replies(conv)) == 1
    assert jobs.job(job["id"])["status"] == "succeeded"


def test_redelivery_after_idempotency_record_is_gone_still_stores_one_reply(jobs):
    """Beneath Powertools idempotency: the job status and the turn marker still hold."""
    conv = jobs.conversation()
    job = jobs.submit(chat("guarded", conv)).json()
    message = jobs.receive_one()
    assert jobs.worker.handle(jobs.event_for(message), LambdaContext("w", 30)) == {"batchItemFailures": []}
    ddb = jobs.gw.aws.client("dynamodb")
    (record,) = ddb.scan(  # the idempotency record expired
        TableName=jobs.gw.aws.res.table_name,
        FilterExpression="begins_with(PK, :p)",
        ExpressionAttributeValues={":p": {"S": "IDEMPOTENCY#jobs#"}},
    )["Items"]
    assert record["SK"] == {"S": "JOB"}  # one partition per job, not one for every record
    ddb.delete_item(TableName=jobs.gw.aws.res.table_name, Key={"PK": record["PK"], "SK": record["SK"]})
    assert jobs.worker.handle(jobs.event_for(message, 2), LambdaContext("w", 30)) == {"batchItemFailures": []}
    assert jobs.upstream.count("guarded") == 1 and len(jobs.replies(conv)) == 1
    assert jobs.job(job["id"])["status"] == "succeeded"


def test_two_concurrent_deliveries_store_one_reply(jobs):
    conv = jobs.conversation()
    job = jobs.submit(chat("twice", conv)).json()
    message = jobs.receive_one()
    event = jobs.event_for(message)
    jobs.upstream.gate = threading.Event()
    first: dict = {}
    thread = threading.Thread(target=lambda: first.update(r=jobs.worker.handle(event, LambdaContext("w", 30))))
    thread.start()
    assert jobs.upstream.entered.wait(10)
    # The first delivery is inside its upstream call: the second one must not run the job again.
    second = jobs.worker.handle(jobs.event_for(message, 2), LambdaContext("w", 30))
    jobs.upstream.gate.set()
    thread.join(10)
    assert second == {"batchItemFailures": [{"itemIdentifier": message["MessageId"]}]}  # redelivered later
    assert first["r"] == {"batchItemFailures": []}
    jobs.upstream.gate = None
    assert jobs.worker.handle(jobs.event_for(message, 3), LambdaContext("w", 30)) == {"batchItemFailures": []}
    assert jobs.upstream.count("twice") == 1
    assert len(jobs.replies(conv)) == 1
    assert jobs.job(job["id"])["status"] == "succeeded"


def test_crash_after_upstream_reply_before_the_write(jobs, monkeypatch):
    conv = jobs.conversation()
    job = jobs.submit(chat("crash", conv)).json()
    store = jobs.gw.services.chat.store
    crash_once(monkeypatch, store, "commit_turn", "worker died after the upstream reply, before the write")
    # A short function timeout: the crashed attempt's in-progress idempotency record expires with it.
    jobs.poller.function_timeout = 3
    first = jobs.poller.poll_once()
    assert isinstance(first.error, SimulatedCrash) and first.deleted == []
    assert jobs.replies(conv) == []
    jobs.drain(lambda: jobs.job(job["id"])["status"] == "succeeded")
    assert len(jobs.replies(conv)) == 1
    assert jobs.upstream.count("crash") == 2  # the crashed attempt's reply was never stored
    assert jobs.queue_messages() == []


def test_crash_after_the_write_before_the_job_update(jobs, monkeypatch):
    conv = jobs.conversation()
    job = jobs.submit(chat("late crash", conv)).json()
    store = jobs.worker.jobs
    crash_once(monkeypatch, store, "succeed", "worker died after the reply was stored")
    jobs.poller.function_timeout = 3
    assert isinstance(jobs.poller.poll_once().error, SimulatedCrash)
    assert len(jobs.replies(conv)) == 1
    jobs.drain(lambda: jobs.job(job["id"])["status"] == "succeeded")
    assert len(jobs.replies(conv)) == 1
    assert jobs.upstream.count("late crash") == 1  # the stored reply was reused, not regenerated
    result = jobs.job(job["id"])["result"]
    assert result["choices"][0]["message"]["content"] == "echo:late crash n=1"


# --------------------------------------------------------------------------- client retries


def test_five_posts_with_one_idempotency_key_make_one_job_and_one_message(jobs):
    conv = jobs.conversation()
    answers = [jobs.submit(chat("idem", conv), key="key-123") for _ in range(5)]
    assert {r.status_code for r in answers} == {202}
    ids = {r.json()["id"] for r in answers}
    assert len(ids) == 1
    assert [r.headers.get("Idempotent-Replayed") for r in answers] == [None] + ["true"] * 4
    assert len(jobs.job_items()) == 1
    assert len(jobs.queue_messages()) == 1

    conflict = jobs.submit(chat("different", conv), key="key-123")
    assert conflict.status_code == 422
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    # Keys are per tenant, and without a key every POST is a new job.
    assert jobs.submit(chat("idem", None), key="key-123", api_key=OTHER_KEY).status_code == 202
    assert jobs.submit(chat("nokey")).json()["id"] != jobs.submit(chat("nokey")).json()["id"]
    assert len(jobs.job_items()) == 4


def test_concurrent_posts_with_one_idempotency_key(jobs):
    body = {"requests": [chat(f"c{i}") for i in range(3)]}
    results: list = []
    barrier = threading.Barrier(5)

    def post():
        barrier.wait(5)
        results.append(jobs.submit(body, key="same"))

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert [r.status_code for r in results] == [202] * 5
    assert len({tuple(j["id"] for j in r.json()["data"]) for r in results}) == 1
    assert len(jobs.job_items()) == 3
    assert len(jobs.queue_messages()) == 3


# --------------------------------------------------------------------------- partial failures, DLQ


def test_batch_of_ten_with_two_poison_records(jobs):
    convs = [jobs.conversation() for _ in range(10)]
    texts = [("POISON " if n in (3, 7) else "") + f"job {n}" for n in range(1, 11)]
    r = jobs.submit({"requests": [chat(t, c) for t, c in zip(texts, convs, strict=True)]})
    assert r.status_code == 202, r.text
    ids = [j["id"] for j in r.json()["data"]]
    assert len(ids) == 10

    first = jobs.poller.poll_once()
    assert len(first.records) == 10
    by_job = {json.loads(rec["body"])["job_id"]: rec["messageId"] for rec in first.records}
    poison = [by_job[ids[2]], by_job[ids[6]]]
    assert first.response["batchItemFailures"] == [{"itemIdentifier": m} for m in poison]
    assert first.failed == poison
    for n, (job_id, conv) in enumerate(zip(ids, convs, strict=True), start=1):
        job = jobs.job(job_id)
        if n in (3, 7):
            assert job["status"] == "queued" and job["attempts"] == 1
            assert job["last_error"]["type"] == "service_unavailable"
            assert jobs.replies(conv) == []
        else:
            assert job["status"] == "succeeded"
            assert len(jobs.replies(conv)) == 1
            assert jobs.upstream.count(f"job {n}") == 1

    dlq = jobs.gw.aws.res.dead_letter_queue_url
    jobs.drain(lambda: len(jobs.queue_messages(dlq)) == 2)
    dead = jobs.queue_messages(dlq)
    assert sorted(json.loads(m["Body"])["job_id"] for m in dead) == sorted([ids[2], ids[6]])
    assert all(int(m["Attributes"]["ApproximateReceiveCount"]) > MAX_RECEIVES for m in dead)
    for job_id in (ids[2], ids[6]):
        job = jobs.job(job_id)
        assert job["status"] == "failed" and job["attempts"] == MAX_RECEIVES
        assert job["error"]["type"] == "service_unavailable"
        assert job["error"]["message"].startswith(f"Gave up after {MAX_RECEIVES} deliveries")
    for n, conv in enumerate(convs, start=1):  # the healthy eight still have exactly one reply
        assert len(jobs.replies(conv)) == (0 if n in (3, 7) else 1)
    assert jobs.queue_messages() == []


def test_permanent_upstream_failure_fails_the_job_without_retry(jobs):
    job = jobs.submit(chat("REJECT me")).json()
    outcome = jobs.poller.poll_once()
    assert outcome.failed == [] and len(outcome.deleted) == 1
    got = jobs.job(job["id"])
    assert got["status"] == "failed" and got["attempts"] == 1
    assert got["error"]["type"] == "invalid_request_error" and got["error"]["code"] == "invalid_value"
    assert jobs.upstream.count("REJECT me") == 1
    assert jobs.queue_messages() == []


def test_retryable_failure_requeues_then_succeeds(jobs):
    job = jobs.submit(chat("flaky")).json()
    jobs.upstream.down = True
    outcome = jobs.poller.poll_once()
    assert len(outcome.failed) == 1
    got = jobs.job(job["id"])
    assert got["status"] == "queued" and got["attempts"] == 1 and got["last_error"]["code"]
    jobs.upstream.down = False
    jobs.drain(lambda: jobs.job(job["id"])["status"] == "succeeded")
    got = jobs.job(job["id"])
    assert got["attempts"] == 2 and got["last_error"] is None


def test_job_waits_for_a_conversation_leased_by_an_http_turn(jobs):
    conv = jobs.conversation()
    job = jobs.submit(chat("after the http turn", conv)).json()
    store = jobs.gw.services.conversations
    lease = store.acquire_lease("tenant-a", conv, 60)  # an HTTP turn in flight
    outcome = jobs.poller.poll_once()
    assert len(outcome.failed) == 1
    got = jobs.job(job["id"])
    assert got["status"] == "queued" and got["last_error"]["code"] == "conversation_busy"
    assert jobs.upstream.calls == []
    store.release_lease(lease)
    jobs.drain(lambda: jobs.job(job["id"])["status"] == "succeeded")
    assert len(jobs.replies(conv)) == 1


# --------------------------------------------------------------------------- ordering


def test_twenty_jobs_on_one_conversation_run_in_submission_order(jobs):
    conv = jobs.conversation()
    r = jobs.submit({"requests": [chat(f"turn {i}", conv) for i in range(20)]})
    assert r.status_code == 202, r.text
    ids = [j["id"] for j in r.json()["data"]]
    jobs.drain(lambda: all(jobs.job(i)["status"] == "succeeded" for i in ids))
    stored = jobs.messages(conv)
    assert [m["content"] for m in stored] == [
        text for i in range(20) for text in (f"turn {i}", f"echo:turn {i} n={2 * i + 1}")
    ]
    assert jobs.upstream.calls == [f"turn {i}" for i in range(20)]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "default"}, 400, "messages"),
        ({"model": "default", "messages": []}, 400, "messages"),
        (chat("hi", stream=True), 400, "stream"),
        (chat("hi", temperature="hot"), 400, "temperature"),
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        (chat("hi", "conv_unknown"), 404, "conversation_id"),
        ({"requests": []}, 400, "requests"),
        ({"requests": [chat("ok")] * 101}, 400, "requests"),
        (
            {"requests": [chat("ok"), chat("ok"), {"model": "default", "messages": [{"role": "robot"}]}]},
            400,
            "requests[2].messages[0].role",
        ),
        ({"requests": [chat("ok"), "not an object"]}, 400, "requests[1]"),
        ({"requests": [chat("ok")], "extra": 1}, 400, "extra"),
    ],
)
def test_bad_job_bodies_get_4xx_and_enqueue_nothing(jobs, body, status, param):
    r = jobs.submit(body, key="k-bad")
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    assert jobs.queue_messages() == [] and jobs.job_items() == []
    # the key was not consumed by the failed submission
    assert jobs.submit(chat("fine"), key="k-bad").status_code == 202


def test_bad_job_bodies_more(aws):
    for jobs in _jobs(aws, job_max_message_bytes=2_000):
        conv_b = jobs.gw.post("/v1/conversations", {}, key=OTHER_KEY).json()["id"]
        r = jobs.submit({"requests": [chat("ok"), chat("ok", conv_b)]})  # another tenant's conversation
        assert r.status_code == 404 and r.json()["error"]["param"] == "requests[1].conversation_id"
        r = jobs.submit({"requests": [chat("ok"), chat("x" * 3_000)]})
        assert r.status_code == 413 and r.json()["error"]["param"] == "requests[1]"
        r = jobs.gw.client.post(
            "/v1/jobs", content=b"[1, 2]", headers={**jobs.gw.headers(), "content-type": "application/json"}
        )
        assert r.status_code == 400
        r = jobs.submit(chat("ok"), key="x" * 300)
        assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
        assert jobs.queue_messages() == [] and jobs.job_items() == []


# --------------------------------------------------------------------------- direct producers


def send(jobs, body: str, group: str, dedup: str) -> None:
    jobs.sqs.send_message(
        QueueUrl=jobs.gw.aws.res.jobs_queue_url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=dedup
    )


def test_direct_producer_message_creates_and_runs_the_job(jobs):
    message = JobMessage(job_id="ext-0001", tenant_id="tenant-a", request=chat("from a lambda"), source="billing")
    send(jobs, message.body(), message.group_id(), message.job_id)
    assert jobs.poller.poll_once().failed == []
    job = jobs.job("ext-0001")
    assert job["status"] == "succeeded" and job["result"]["choices"][0]["message"]["content"].startswith("echo:")
    assert jobs.gw.get("/v1/jobs/ext-0001", key=OTHER_KEY).status_code == 404


def test_invalid_message_naming_a_known_job_fails_that_job(jobs):
    job = jobs.submit(chat("will be replaced")).json()
    for m in jobs.poller.receive(wait_seconds=1):  # take the good message away
        jobs.sqs.delete_message(QueueUrl=jobs.gw.aws.res.jobs_queue_url, ReceiptHandle=m["ReceiptHandle"])
    bad = {"version": 1, "job_id": job["id"], "tenant_id": "tenant-a", "request": {"model": "default", "messages": []}}
    send(jobs, json.dumps(bad), job["id"], "bad-1")
    outcome = jobs.poller.poll_once()
    assert outcome.failed == [] and len(outcome.deleted) == 1
    got = jobs.job(job["id"])
    assert got["status"] == "failed" and got["error"]["code"] == "invalid_job_message"
    assert "request/messages" in got["error"]["message"]
    assert jobs.upstream.calls == []


def test_garbage_message_ends_in_the_dlq_with_the_reason_logged(jobs, caplog):
    send(jobs, "this is not json", "g1", "garbage-1")
    unknown_version = {"version": 99, "job_id": "j1", "tenant_id": "tenant-a", "request": {}}
    send(jobs, json.dumps(unknown_version), "g2", "garbage-2")
    dlq = jobs.gw.aws.res.dead_letter_queue_url
    jobs.drain(lambda: len(jobs.queue_messages(dlq)) == 2)
    assert sorted(m["Body"][:10] for m in jobs.queue_messages(dlq)) == sorted(["this is no", '{"version"'])
    reasons = {getattr(r, "reason", None) for r in caplog.records if r.levelname == "ERROR"}
    assert {"message body is not JSON", "schema violation at version: const"} <= reasons
    assert jobs.queue_messages() == [] and jobs.job_items() == []


def test_sample_event_follows_the_schema_and_runs(jobs):
    """events/sqs-job-batch.json is a real worker input: the schema accepts it, the worker runs it."""
    from pathlib import Path

    from llm_gateway.jobs.messages import parse_job_message

    event = json.loads((Path(__file__).resolve().parents[2] / "events" / "sqs-job-batch.json").read_text())
    for record in event["Records"]:
        message, _ = parse_job_message(record["body"])
        assert record["attributes"]["MessageDeduplicationId"] == message.job_id
        assert record["attributes"]["MessageGroupId"] == message.group_id()
    # Run the stateless one for tenant-a (the other names a conversation that does not exist here).
    record = dict(event["Records"][1])
    body = json.loads(record["body"])
    body["tenant_id"] = "tenant-a"
    record["body"] = json.dumps(body)
    assert jobs.worker.handle({"Records": [record]}, LambdaContext("w", 30)) == {"batchItemFailures": []}
    assert jobs.job(body["job_id"])["status"] == "succeeded"


def test_poller_background_thread_runs_jobs_and_stops(jobs):
    job = jobs.submit(chat("background")).json()
    done = threading.Event()

    def handler(event, context):
        try:
            return jobs.worker.handle(event, context)
        finally:
            done.set()

    poller = SqsPoller(jobs.sqs, jobs.gw.aws.res.jobs_queue_url, handler, wait_seconds=1).start()
    try:
        assert done.wait(10)
    finally:
        started = time.monotonic()
        poller.stop()
        assert not poller.running and time.monotonic() - started < 5
    assert jobs.job(job["id"])["status"] == "succeeded"


def test_job_errors_and_invalid_message_logs_never_carry_the_prompt(jobs, all_logs, capfd):  # noqa: F811
    """A queue message body is a prompt: neither a job's stored error (GET /v1/jobs/{id}) nor the
    worker's logs of a failed or invalid message may quote it."""
    prompt = CANARY_PROMPT
    rejected = jobs.submit(chat(f"ECHO400 {prompt}")).json()
    known = jobs.submit(chat("to be replaced")).json()
    for m in jobs.poller.receive(wait_seconds=1):
        if json.loads(m["Body"])["job_id"] == known["id"]:  # only the invalid copy below will run
            jobs.sqs.delete_message(QueueUrl=jobs.gw.aws.res.jobs_queue_url, ReceiptHandle=m["ReceiptHandle"])
        else:
            jobs.sqs.change_message_visibility(
                QueueUrl=jobs.gw.aws.res.jobs_queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
    bad_request = {"model": "default", "messages": [{"role": prompt, "content": prompt}], prompt: prompt}
    bad_value = {"model": "default", "messages": [{"role": "user", "content": prompt}], "temperature": prompt}
    send(
        jobs,
        json.dumps({"version": 1, "job_id": known["id"], "tenant_id": "tenant-a", "request": bad_value}),
        "g-known",
        "bad-known",
    )  # passes the schema, fails the request model
    send(
        jobs,
        json.dumps({"version": 1, "job_id": "ext-x", "tenant_id": "tenant-a", "request": bad_request, prompt: prompt}),
        "g-unknown",
        "bad-unknown",
    )
    send(jobs, f"not json {prompt}", "g-garbage", "bad-garbage")
    jobs.drain(lambda: jobs.job(rejected["id"])["status"] == "failed" and jobs.job(known["id"])["status"] == "failed")
    for job_id in (rejected["id"], known["id"]):
        text = jobs.gw.get(f"/v1/jobs/{job_id}").text
        assert json.loads(text)["error"]["code"] in ("invalid_value", "invalid_job_message")
        assert prompt not in text
    assert "Invalid content" in jobs.job(rejected["id"])["error"]["message"]  # the upstream's reason is kept
    out, err = capfd.readouterr()
    logs = all_logs()
    assert "invalid job message" in logs  # the capture saw the worker's logs
    assert prompt not in out + err + logs
