"""Nothing strands: a job whose worker dies on every delivery ends ``failed`` through the DLQ path
(the dead-letter consumer, fed by its own SQS poller as its event source mapping would), its message
is parked, and ``llm-gateway-admin jobs redrive`` brings it back to run. moto in server mode, the
fake upstream, the real worker, consumer and admin command."""

from __future__ import annotations

import json

from llm_gateway import cli
from llm_gateway.jobs.dead_letters import build_consumer
from local.poller import SqsPoller

from .conftest import chat
from .test_job_recovery import MAX_RECEIVES, stack


class WorkerKilled(BaseException):
    """The worker process dies mid-job (a Lambda timeout, out of memory): nothing is reported."""


def peek(sqs, url: str) -> list[dict]:
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0).get(
        "Messages", []
    )


def test_poison_job_ends_failed_via_the_dlq_and_redrive_brings_it_back(aws, monkeypatch, capsys):
    parked_url = aws.res.queues["JobsParkedQueue"]
    dlq_url = aws.res.dead_letter_queue_url
    with stack(aws, start=False, jobs_parked_queue_url=parked_url) as s:
        sqs = aws.client("sqs")
        consumer = SqsPoller(sqs, dlq_url, build_consumer(s.gw.services).handle, wait_seconds=1, function_timeout=30)

        def killed(*args, **kwargs):
            raise WorkerKilled("the worker died")

        real_complete = s.worker.chat.complete
        monkeypatch.setattr(s.worker.chat, "complete", killed)
        # A short function timeout: a killed invocation's messages come back after its remaining
        # time plus the redrive delay (and its in-progress idempotency record expires with it).
        s.poller.function_timeout = 1
        job = s.submit(chat("poison"))
        with s.poller, consumer:
            assert s.wait(lambda: s.job(job["id"])["status"] == "failed", within=45), s.job(job["id"])
            failed = s.job(job["id"])
            assert failed["attempts"] == MAX_RECEIVES and failed["result"] is None
            assert failed["error"]["code"] == "dead_lettered" and failed["error"]["type"] == "server_error"
            assert "jobs redrive" in failed["error"]["message"]
            assert s.wait(lambda: len(peek(sqs, parked_url)) == 1, within=10)
            assert peek(sqs, dlq_url) == [] and peek(sqs, aws.res.jobs_queue_url) == []
            assert s.fake.chat_calls == 0

            # The bug is fixed; an operator redrives the parked message.
            monkeypatch.setattr(s.worker.chat, "complete", real_complete)
            s.poller.function_timeout = 30
            monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint)
            args = ["jobs", "redrive", "--from", parked_url, "--to", aws.res.jobs_queue_url]
            assert cli.main(args) == 0
            (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith('{"method"')]
            out = json.loads(line)
            assert out == {"method": "receive+send+delete", "task_handle": None, "moved": 1}  # moto: no move tasks
            assert s.wait(lambda: s.job(job["id"])["status"] == "succeeded", within=30), s.job(job["id"])
        done = s.job(job["id"])
        assert done["attempts"] == MAX_RECEIVES + 1 and done["error"] is None
        assert done["result"]["choices"][0]["message"]["content"].startswith("Echo: poison")
        assert s.fake.chat_calls == 1
        assert peek(sqs, parked_url) == [] and peek(sqs, dlq_url) == []
