"""The redrive delay (full jitter on the receive count) and the visibility changes it makes."""

from __future__ import annotations

import random

from llm_gateway.jobs.redelivery import Redelivery, queue_url_of, redrive_delay

ARN = "arn:aws:sqs:us-east-1:123456789012:jobs.fifo"
URL = "http://sqs.local/123456789012/jobs.fifo"


class RecordingSqs:
    def __init__(self) -> None:
        self.batches: list[tuple[str, list[dict]]] = []

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803
        self.batches.append((QueueUrl, Entries))
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def record(message_id: str, group: str, receives: int) -> dict:
    return {
        "messageId": message_id,
        "receiptHandle": f"rh-{message_id}",
        "eventSourceARN": ARN,
        "attributes": {"ApproximateReceiveCount": str(receives), "MessageGroupId": group},
    }


def test_delay_grows_with_the_receive_count_up_to_the_cap_with_full_jitter():
    rng = random.Random(7)
    for receives, ceiling in ((1, 5), (2, 10), (3, 20), (4, 40), (9, 240), (30, 240)):
        delays = [redrive_delay(receives, 5.0, 240.0, rng) for _ in range(400)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8 and min(delays) <= max(1, ceiling * 0.2)  # jitter over the range
    assert redrive_delay(1, 0.0, 240.0) == 0
    assert redrive_delay(100, 1e9, 1e9) == 43_200  # never above SQS's 12 hours


def test_failed_records_of_one_group_share_the_groups_longest_delay():
    sqs = RecordingSqs()
    redelivery = Redelivery(lambda: sqs, 10.0, 100.0, queue_urls=(URL,), rng=random.Random(1))
    records = [record("a1", "conv-a", 4), record("a2", "conv-a", 1), record("b1", "conv-b", 1), record("c1", "c", 1)]
    delays = redelivery.on_failure(records, ["a1", "a2", "b1"])
    assert set(delays) == {"a1", "a2", "b1"}  # c1 succeeded: deleted, not touched
    assert delays["a1"] == delays["a2"]  # the group's later record must not come back first
    ((url, entries),) = sqs.batches
    assert url == URL
    assert {e["ReceiptHandle"]: e["VisibilityTimeout"] for e in entries} == {
        f"rh-{m}": delays[m] for m in ("a1", "a2", "b1")
    }


def test_on_receipt_a_lost_invocation_costs_its_remaining_time_plus_the_delay():
    sqs = RecordingSqs()
    redelivery = Redelivery(lambda: sqs, 0.0, 0.0, queue_urls=(URL,))
    redelivery.on_receipt([record(f"m{i}", f"g{i}", 1) for i in range(12)], remaining_seconds=29.2)
    assert [len(entries) for _, entries in sqs.batches] == [10, 2]  # SQS batches hold 10 entries
    assert {e["VisibilityTimeout"] for _, entries in sqs.batches for e in entries} == {30}


def test_queue_url_of_an_arn():
    assert queue_url_of(ARN, (None, "http://x/1/other.fifo", URL)) == URL
    assert queue_url_of(ARN, ("http://x/1/other.fifo",)) is None
