"""GroupedFifoProcessor (FIFO partial batches, groups in parallel) and the poller's reading of
the handler's answer. No sockets."""

from __future__ import annotations

import threading

from aws_lambda_powertools.utilities.batch import process_partial_response

from llm_gateway.jobs.batch import GroupedFifoProcessor
from local.poller import failed_ids


def sqs_record(n: int, group: str) -> dict:
    return {
        "messageId": f"m{n}",
        "receiptHandle": f"r{n}",
        "body": str(n),
        "eventSource": "aws:sqs",
        "attributes": {"MessageGroupId": group, "ApproximateReceiveCount": "1"},
        "messageAttributes": {},
    }


def run(records: list[dict], handler, workers: int = 10) -> dict:
    return process_partial_response({"Records": records}, handler, GroupedFifoProcessor(workers))


def test_groups_run_concurrently():
    barrier = threading.Barrier(3, timeout=5)  # only passes if 3 groups are inside the handler at once

    def handler(record):
        barrier.wait()

    assert run([sqs_record(1, "a"), sqs_record(2, "b"), sqs_record(3, "c")], handler) == {"batchItemFailures": []}


def test_a_group_keeps_its_order_and_fails_its_rest_after_a_failure():
    seen: list[str] = []
    lock = threading.Lock()

    def handler(record):
        with lock:
            seen.append(record.body)
        if record.body == "2":
            raise RuntimeError("boom")

    records = [sqs_record(n, group) for n, group in enumerate("aaabab", start=1)]
    response = run(records, handler)
    assert response == {"batchItemFailures": [{"itemIdentifier": m} for m in ("m2", "m3", "m5")]}
    assert [b for b in seen if b in "1235"] == ["1", "2"]  # 3 and 5 never ran: they wait for 2
    assert [b for b in seen if b in "46"] == ["4", "6"]


def test_entire_failed_batch_is_reported_not_raised():
    def handler(record):
        raise ValueError(record.body)

    processor = GroupedFifoProcessor(10)
    response = process_partial_response({"Records": [sqs_record(1, "a"), sqs_record(2, "b")]}, handler, processor)
    assert sorted(str(e[1]) for e in processor.exceptions) == ["1", "2"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m2"}]}


def test_poller_reads_batch_item_failures_like_lambda():
    ids = {"a", "b"}
    assert failed_ids(None, ids) == set()
    assert failed_ids({}, ids) == set()
    assert failed_ids({"batchItemFailures": []}, ids) == set()
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "a"}]}, ids) == {"a"}
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, ids) == ids  # unknown id: all fail
    assert failed_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == ids
    assert failed_ids("not a dict", ids) == ids
