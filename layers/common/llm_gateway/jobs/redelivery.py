"""When SQS hands a job back: a short, growing delay instead of the queue's visibility timeout.

The jobs queue's visibility timeout (720 s, 6 × the worker's timeout, as AWS advises for Lambda
event sources) only bounds a lost invocation. The worker sets every message's visibility itself:

* **on receipt**, to the invocation's remaining time plus the redrive delay: a worker that dies
  (killed at its timeout, out of memory) loses the message for no longer than that, not 720 s;
* **on a retryable failure**, to the redrive delay alone: full-jitter exponential on the
  message's ``ApproximateReceiveCount``, uniform in ``[0, min(max, base * 2^(receives-1))]``
  seconds (``JOB_REDRIVE_*`` in ``llm_gateway/constants.py``).

On a FIFO queue a message group is blocked while one of its messages is in flight, so the group of
a failing job waits exactly that delay: every failed record of a group gets the group's longest
delay (its later records are reported failed with it and must not come back first). Changes are
``ChangeMessageVisibilityBatch`` calls (10 entries each); a refused change is logged and left to
the visibility already set, never a reason to fail the batch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from llm_gateway.jobs.batch import group_of
from llm_gateway.observability import logger

MAX_VISIBILITY_SECONDS = 43_200  # SQS: 12 hours


def redrive_delay(receive_count: int, base: float, cap: float, rng: random.Random | None = None) -> int:
    """Full jitter on the receive count, in whole seconds (SQS visibility is an integer)."""
    ceiling = min(cap, base * 2 ** max(0, receive_count - 1))
    return min(MAX_VISIBILITY_SECONDS, math.ceil((rng or random).uniform(0.0, ceiling)))


def queue_url_of(arn: str, known: Iterable[str | None] = ()) -> str | None:
    """The queue URL of ``arn:aws:sqs:<region>:<account>:<name>`` among ``known`` URLs."""
    name = arn.rsplit(":", 1)[-1]
    return next((url for url in known if url and url.rstrip("/").endswith("/" + name)), None)


@dataclass
class Redelivery:
    """Sets the visibility of a batch's records (see the module docstring)."""

    sqs: Callable[[], Any]
    base: float
    cap: float
    queue_urls: tuple[str | None, ...] = ()
    rng: random.Random | None = None

    def delay(self, record: dict) -> int:
        count = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        return redrive_delay(count, self.base, self.cap, self.rng)

    def on_receipt(self, records: list[dict], remaining_seconds: float) -> None:
        """Lost with the invocation, a message comes back after its remaining time plus the delay."""
        self._change({r["messageId"]: math.ceil(remaining_seconds) + self.delay(r) for r in records}, records)

    def on_failure(self, records: list[dict], failed_ids: Iterable[str]) -> dict[str, int]:
        """The failed records back after the redrive delay, the longest of their group for all of it."""
        failed = set(failed_ids)
        by_group: dict[str, int] = {}
        for record in records:
            if record["messageId"] in failed:
                group = group_of(record)
                by_group[group] = max(by_group.get(group, 0), self.delay(record))
        seconds = {r["messageId"]: by_group[group_of(r)] for r in records if r["messageId"] in failed}
        self._change(seconds, records)
        return seconds

    def _url(self, arn: str) -> str | None:
        url = queue_url_of(arn, self.queue_urls)
        if url is None and arn.count(":") == 5:
            account, name = arn.split(":")[4:]
            try:
                url = self.sqs().get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            except (BotoCoreError, ClientError):
                return None
            self.queue_urls = (*self.queue_urls, url)
        return url

    def _change(self, seconds: dict[str, int], records: list[dict]) -> None:
        entries_by_queue: dict[str, list[dict]] = {}
        for record in records:
            if record["messageId"] not in seconds:
                continue
            url = self._url(record.get("eventSourceARN") or "")
            if url is None:
                logger.warning("record from an unknown queue: visibility left as it is")
                continue
            entries = entries_by_queue.setdefault(url, [])
            entries.append(
                {
                    "Id": str(len(entries)),
                    "ReceiptHandle": record["receiptHandle"],
                    "VisibilityTimeout": min(MAX_VISIBILITY_SECONDS, seconds[record["messageId"]]),
                }
            )
        for url, entries in entries_by_queue.items():
            for start in range(0, len(entries), 10):
                chunk = entries[start : start + 10]
                try:
                    resp = self.sqs().change_message_visibility_batch(QueueUrl=url, Entries=chunk)
                except (BotoCoreError, ClientError) as exc:
                    logger.warning("visibility change failed", extra={"error_type": type(exc).__name__})
                    continue
                for entry in resp.get("Failed", []):
                    logger.warning("visibility change refused", extra={"code": entry.get("Code")})
