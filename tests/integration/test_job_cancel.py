"""POST /v1/jobs/{id}/cancel against the real worker, moto in server mode and the fake upstream:
a queued job never runs, a running one stops with its upstream connection closed and stores
nothing, a finished one is a 409 in OpenAI's error shape."""

from __future__ import annotations

from llm_gateway.jobs.shapes import JobObject

from .conftest import OTHER_KEY, chat, conversation_messages
from .test_job_recovery import stack


def cancel(s, job_id: str, key: str | None = None):
    return s.gw.post(f"/v1/jobs/{job_id}/cancel", **({"key": key} if key else {}))


def test_cancel_a_queued_job_it_never_runs(aws):
    with stack(aws, start=False) as s:
        job = s.submit(chat("never"))
        r = cancel(s, job["id"])
        assert r.status_code == 200, r.text
        body = JobObject.model_validate(r.json())
        assert body.id == job["id"] and body.status == "cancelled" and body.completed_at is not None
        outcome = s.poller.poll_once()  # the message is delivered, and acknowledged without work
        assert len(outcome.deleted) == 1 and outcome.failed == []
        assert s.job(job["id"])["status"] == "cancelled" and s.job(job["id"])["attempts"] == 0
        assert s.fake.chat_calls == 0


def test_cancel_a_running_job_closes_its_upstream_call_and_stores_nothing(aws):
    with stack(aws, job_cancel_poll_seconds=0.2) as s:
        conv = s.gw.post("/v1/conversations", {}).json()["id"]
        s.fake.script({"hang": True})  # the upstream holds the call
        job = s.submit(chat("held", conv))
        assert s.fake.wait_for_blocked(1, timeout=15)
        assert s.job(job["id"])["status"] == "running"
        r = cancel(s, job["id"])
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        # The worker aborts the call it is waiting on: the upstream sees its connection close.
        assert s.fake.wait_until(lambda f: f.disconnects == 1 and f.blocked == 0, timeout=10)
        assert s.wait(lambda: s.poller.deleted == 1, within=10)  # acknowledged, not retried
        done = s.job(job["id"])
        assert done["status"] == "cancelled" and done["result"] is None and done["error"] is None
        assert done["attempts"] == 1 and s.fake.chat_calls == 1  # no retry after the abort
        assert conversation_messages(s.gw, conv) == []  # nothing stored as completed
        # The turn's lease was released: the conversation takes the next turn at once.
        r = s.gw.post("/v1/chat/completions", chat("after", conv))
        assert r.status_code == 200, r.text
        assert [m["content"] for m in conversation_messages(s.gw, conv)][0] == "after"


def test_cancel_a_finished_job_is_409_and_other_tenants_get_404(aws):
    with stack(aws, start=False) as s:
        job = s.submit(chat("done"))
        assert s.poller.poll_once().failed == []
        assert s.job(job["id"])["status"] == "succeeded"
        r = cancel(s, job["id"])
        assert r.status_code == 409
        assert r.json() == {
            "error": {
                "message": "The job is already succeeded: only a queued or running job can be cancelled.",
                "type": "conflict_error",
                "param": None,
                "code": "job_not_cancellable",
            }
        }
        assert r.headers["x-should-retry"] == "false"
        assert s.job(job["id"])["status"] == "succeeded"  # untouched

        queued = s.submit(chat("mine"))
        other = cancel(s, queued["id"], key=OTHER_KEY)
        assert other.status_code == 404 and other.json()["error"]["param"] == "job_id"
        assert s.job(queued["id"])["status"] == "queued"
        assert cancel(s, "job_doesnotexist").status_code == 404
        assert cancel(s, queued["id"]).status_code == 200
        again = cancel(s, queued["id"])
        assert again.status_code == 409 and "already cancelled" in again.json()["error"]["message"]
