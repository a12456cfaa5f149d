"""SQS FIFO partial batch processing with message groups processed concurrently.

Powertools' ``SqsFifoPartialProcessor(skip_group_on_error=True)`` has the semantics we need —
records of one message group in order; after a group's first failure its remaining records are
reported as failures too (so SQS redelivers them, still in order), other groups carry on — but it
runs every record sequentially. Upstream calls are I/O bound, so a batch of 10 independent jobs
would take 10 × the upstream latency. :class:`GroupedFifoProcessor` keeps those semantics and the
Powertools machinery (record → ``SQSRecord``, success/failure bookkeeping, the
``batchItemFailures`` response) and only replaces the loop: one thread per message group (bounded
pool), the records of a group sequential inside it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.batch.exceptions import SQSFifoMessageGroupCircuitBreakerError

GROUP_SKIPPED = (
    SQSFifoMessageGroupCircuitBreakerError,
    SQSFifoMessageGroupCircuitBreakerError("A previous record from this message group failed processing"),
    None,
)


def group_of(record: dict) -> str:
    """The record's MessageGroupId; a standard-queue record is a group of its own."""
    return (record.get("attributes") or {}).get("MessageGroupId") or "msg:" + str(record.get("messageId"))


class GroupedFifoProcessor(BatchProcessor):
    """``SqsFifoPartialProcessor(skip_group_on_error=True)`` semantics, message groups in parallel.

    Create one per invocation (it holds the invocation's results); the thread pool is shared.
    Never raises on an entirely failed batch: every failure is listed in ``batchItemFailures``.
    """

    _pool_lock = threading.Lock()

    def __init__(self, max_workers: int = 10, logger: logging.Logger | Any | None = None) -> None:
        super().__init__(EventType.SQS, raise_on_entire_batch_failure=False, logger=logger)
        self.max_workers = max_workers
        self._lock = threading.Lock()

    _pools: dict[int, ThreadPoolExecutor] = {}  # by size; one per container in practice

    @classmethod
    def pool(cls, max_workers: int) -> ThreadPoolExecutor:
        with cls._pool_lock:
            if max_workers not in cls._pools:
                cls._pools[max_workers] = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sqs-group")
            return cls._pools[max_workers]

    # success/failure bookkeeping appends to shared lists: serialise it
    def success_handler(self, record, result):
        with self._lock:
            return super().success_handler(record, result)

    def failure_handler(self, record, exception):
        with self._lock:
            return super().failure_handler(record, exception)

    def _run_group(self, items: list[tuple[int, dict]], results: list) -> None:
        failed = False
        for index, record in items:
            if failed:
                results[index] = self.failure_handler(
                    record=self._to_batch_type(record, event_type=self.event_type, model=self.model),
                    exception=GROUP_SKIPPED,
                )
                continue
            results[index] = self._process_record(record)
            failed = results[index][0] == "fail"

    def process(self) -> list[tuple]:
        groups: dict[str, list[tuple[int, dict]]] = {}
        for index, record in enumerate(self.records):
            groups.setdefault(group_of(record), []).append((index, record))
        results: list = [None] * len(self.records)
        if len(groups) <= 1:
            for items in groups.values():
                self._run_group(items, results)
            return results
        pool = self.pool(self.max_workers)
        futures = [pool.submit(self._run_group, items, results) for items in groups.values()]
        for future in futures:
            future.result()  # a BaseException (the process is going down) propagates like a crash
        return results

    def _collect_sqs_failures(self):
        failures = super()._collect_sqs_failures()
        order = {record.get("messageId"): i for i, record in enumerate(self.records)}
        return sorted(failures, key=lambda f: order.get(f["itemIdentifier"], 0))
