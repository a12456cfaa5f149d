"""Jobs that recover in seconds: the real worker fed by the SQS poller (no visibility override: the
queue's 720 s from template.yaml, as the event source mapping sees it) over moto in server mode,
the fake upstream (local/fake_upstream.py) answering with injected faults. Redrive delays are
configured small (base 1 s, cap 2 s) so the whole file stays fast.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from openai.types.responses import Response

from llm_gateway.jobs.worker import build_worker
from llm_gateway.upstream.retry import RetryBudget
from local.fake_upstream import FakeUpstream
from local.poller import SqsPoller

from .conftest import Gateway, chat, make_gateway

MAX_RECEIVES = 4  # template.yaml JobsQueue RedrivePolicy.maxReceiveCount
QUEUE_VISIBILITY = 720  # template.yaml JobsQueue VisibilityTimeout: no redelivery may wait for it


@dataclass
class Stack:
    gw: Gateway
    fake: FakeUpstream
    poller: SqsPoller
    worker: Any

    def submit(self, body: dict) -> Any:
        r = self.gw.post("/v1/jobs", body)
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.gw.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, condition: Callable[[], bool], within: float) -> bool:
        """Poll ``condition`` until it holds or ``within`` seconds have passed (a bound, not a measurement)."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.2)
        return condition()


@contextlib.contextmanager
def stack(aws, *, start: bool = True, **overrides) -> Iterator[Stack]:
    """The gateway, its worker and the SQS poller (running unless ``start=False``) over the fake upstream."""
    overrides.setdefault("job_redrive_base_seconds", 1.0)
    overrides.setdefault("job_redrive_max_seconds", 2.0)
    with FakeUpstream() as fake:
        gw = make_gateway(aws, upstream_url=fake.url, **overrides)
        worker = build_worker(gw.services)
        sqs = aws.client("sqs")
        poller = SqsPoller(sqs, aws.res.jobs_queue_url, worker.handle, wait_seconds=1, function_timeout=30)
        assert poller.visibility_timeout is None  # the queue's own 720 s, as in AWS
        with poller if start else contextlib.nullcontext():
            yield Stack(gw, fake, poller, worker)


@pytest.mark.parametrize(("job_max_attempts", "deliveries"), [(6, 1), (2, 2)])
def test_three_503s_then_200_succeeds_within_a_minute(aws, job_max_attempts, deliveries):
    """In one delivery when the worker's patience covers the blip; otherwise redriven after a
    seconds-long delay (ChangeMessageVisibility), never after the queue's 720 s visibility timeout."""
    with stack(aws, job_max_attempts=job_max_attempts) as s:
        s.fake.script({"status": 503}, {"status": 503}, {"status": 503})
        job = s.submit(chat("blip"))
        assert s.wait(lambda: s.job(job["id"])["status"] == "succeeded", within=60), s.job(job["id"])
        done = s.job(job["id"])
        assert done["attempts"] == deliveries and done["last_error"] is None
        assert done["result"]["choices"][0]["message"]["content"].startswith("Echo: blip")
        assert s.fake.chat_calls == 4  # 3 × 503, then the 200


def test_twenty_jobs_during_an_outage_all_succeed_after_it_with_bounded_attempts(aws):
    job_max_attempts = 2
    # The container's retry budget as deployed (RETRY_BUDGET_* constants), not the tests' generous one.
    with stack(aws, job_max_attempts=job_max_attempts, budget=RetryBudget()) as s:
        s.fake.script(*[{"status": 503}] * 10_000)  # down until reset
        texts = [f"outage job {i}" for i in range(20)]
        ids = [j["id"] for j in s.submit({"requests": [chat(t) for t in texts]})["data"]]
        # The outage lasts until every job has failed at least once and is waiting for redelivery.
        assert s.wait(lambda: all(s.job(i)["last_error"] for i in ids), within=30)
        during = s.fake.requests
        s.fake.reset()  # the upstream is back (reset also forgets the recorded requests: kept above)
        assert s.wait(lambda: all(s.job(i)["status"] == "succeeded" for i in ids), within=60), [
            s.job(i)["status"] for i in ids
        ]
        recorded = during + s.fake.requests
        for job_id, text in zip(ids, texts, strict=True):
            job = s.job(job_id)
            assert 2 <= job["attempts"] <= MAX_RECEIVES  # deliveries: failed in the outage, then ran
            # Upstream calls per job: at most the worker's patience per delivery (the retry budget may
            # cut a delivery's retries short; a call made while reset ran may be missed, never added).
            calls = sum(1 for r in recorded if r["body"]["messages"][-1]["content"] == text)
            assert 1 <= calls <= job["attempts"] * job_max_attempts, (job, calls)


class SimulatedCrash(BaseException):
    """The worker process dies: no except-Exception handler sees it, nothing is reported."""


def test_a_background_response_whose_worker_died_after_the_conversation_commit_completes_on_redelivery(
    aws, monkeypatch
):
    """The crash falls between the turn's commit to the conversation and the response's final write:
    the redelivery completes the response from the committed reply, with no second upstream call and
    no second copy of the turn."""
    with stack(aws, start=False) as s:
        conversation = s.gw.post("/v1/conversations", {}).json()["id"]
        body = {"model": "default", "input": "remember me", "background": True, "conversation": conversation}
        r = s.gw.post("/v1/responses", body)
        assert r.status_code == 200, r.text
        response_id = r.json()["id"]
        store = s.gw.services.background.store
        real_put, crashed = store.put, []

        def put(record: Any, *, replacing: tuple[str, ...] = ()) -> bool:
            if record.response.get("status") == "completed" and not crashed:
                crashed.append(record.response)
                raise SimulatedCrash("worker died after the conversation commit, before the response write")
            return real_put(record, replacing=replacing)

        monkeypatch.setattr(store, "put", put)
        # a short visibility and function timeout: the crashed delivery's message and idempotency record come back soon
        poller = SqsPoller(
            aws.client("sqs"),
            aws.res.jobs_queue_url,
            s.worker.handle,
            wait_seconds=1,
            visibility_timeout=1,
            function_timeout=3,
        )
        assert isinstance(poller.poll_once().error, SimulatedCrash)
        assert s.gw.get(f"/v1/responses/{response_id}").json()["status"] == "in_progress"

        def settled() -> bool:
            poller.poll_once(wait_seconds=1)
            return s.gw.get(f"/v1/responses/{response_id}").json()["status"] not in ("queued", "in_progress")

        assert s.wait(settled, within=40)
        done = s.gw.get(f"/v1/responses/{response_id}").json()
        Response.model_validate(done)
        assert done["status"] == "completed" and done["error"] is None, done
        texts = [p["text"] for item in done["output"] for p in item["content"]]
        assert texts == [p["text"] for item in crashed[0]["output"] for p in item["content"]]
        assert texts == ["Echo: remember me (messages seen: 1)"]
        assert s.fake.chat_calls == 1  # the committed reply was reused, not regenerated
        items = s.gw.get(f"/v1/conversations/{conversation}/items?order=asc").json()["data"]
        assert [(i["role"], i["content"][0]["text"]) for i in items] == [
            ("user", "remember me"),
            ("assistant", "Echo: remember me (messages seen: 1)"),
        ]
