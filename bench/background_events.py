"""What persisting a background response's stream events costs in DynamoDB writes.

A background stream (``POST /v1/responses`` with ``background: true, stream: true``) runs on the
worker, which persists its events in batches so any gateway instance can resume the stream. This
runs such responses for real — moto server (DynamoDB, SQS, KMS), the fake upstream streaming N
words, the API's submission, one worker invocation fed from the moto FIFO queue — and counts the
DynamoDB writes whose item is an event batch (``SK = EV#…``) against the events the response has.

Printed per stream length: events, event-batch writes, writes per event (the target is ≤ 0.1 at
the default RESPONSE_EVENTS_BATCH=10), and every other DynamoDB write of the run for context (by
sort key: RESPONSE = the response item's transitions, JOB = Powertools idempotency records). A
slow stream (upstream pause > RESPONSE_EVENTS_FLUSH_SECONDS between chunks) is printed too: there
the time bound flushes sooner, trading writes for latency. No assertions: this reports.

    make bench            # or: .venv/bin/python bench/background_events.py [--quick]
"""

from __future__ import annotations

import os
import sys
from collections import Counter

from _harness import quiet_stdout  # noqa: I001

QUICK = "--quick" in sys.argv


def run(words: int, pause: float = 0.0) -> tuple[int, Counter]:
    """(events of the response, DynamoDB writes of the submission + run by kind)."""
    from llm_gateway.jobs.worker import build_worker
    from llm_gateway.responses.models import CreateResponse
    from llm_gateway.runtime import build_services
    from llm_gateway.security.provider_keys import encrypt_key
    from llm_gateway.settings import Settings
    from local.fake_upstream import FakeUpstream
    from local.poller import SqsPoller
    from local.resources import MotoServer, boto_session, provision

    with MotoServer() as moto, FakeUpstream(api_key="sk-bench") as fake:
        session = boto_session()
        res = provision(session, moto.endpoint, prefix="bench")
        kms, ddb, sqs = (session.client(n, endpoint_url=moto.endpoint) for n in ("kms", "dynamodb", "sqs"))
        settings = Settings(
            table_name=res.table_name,
            jobs_queue_url=res.jobs_queue_url,
            openai_base_url=fake.url,
            default_model="fake-model",
            provider_key_ciphertext=encrypt_key("sk-bench", "default", res.kms_key_id, kms),
        )
        services = build_services(settings, dynamodb=ddb, kms=kms, sqs=sqs)
        worker = build_worker(services)
        poller = SqsPoller(sqs, res.jobs_queue_url, worker.handle, wait_seconds=1)
        writes: Counter = Counter()

        def count(params: dict, **_: object) -> None:
            sk = (params.get("Item") or params.get("Key") or {}).get("SK", {}).get("S", "")
            kind = "event batch" if sk.startswith("EV#") else (sk.split("#")[0] or "transaction")
            writes[kind] += 1

        for op in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"):
            ddb.meta.events.register(f"provide-client-params.dynamodb.{op}", count)

        reply = " ".join(f"w{i}" for i in range(words))
        fake.script({"reply": reply, "delay_between_chunks": pause})
        request = CreateResponse.model_validate(
            {"model": "default", "input": "bench", "background": True, "stream": True}
        )
        with quiet_stdout():
            queued, _ = services.background.submit("bench", request)
            while poller.poll_once(wait_seconds=1).empty:
                pass
        stored = services.responses.get("bench", queued["id"])
        if stored["status"] != "completed":
            raise RuntimeError(f"background response ended {stored['status']}")
        replay = services.responses.replay("bench", queued["id"], None)
        events = []
        while not replay.done:
            events += replay.poll()
        return len(events), writes


def main() -> None:
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    print("DynamoDB writes of persisted stream events, one background response each (batch = 10 events)")
    print(f"  {'events':>7} {'batch writes':>13} {'writes/event':>13}   other writes of the run")
    cases = [(41, 0.0), (191, 0.0)] + ([] if QUICK else [(991, 0.0)])
    for words, pause in cases + [(30, 0.6)]:
        events, writes = run(words, pause)
        batches = writes.pop("event batch", 0)
        other = ", ".join(f"{k} {v}" for k, v in sorted(writes.items()))
        label = f"   (slow: {pause:.1f} s between chunks)" if pause else ""
        print(f"  {events:>7} {batches:>13} {batches / events:>13.3f}   {other}{label}")


if __name__ == "__main__":
    main()
