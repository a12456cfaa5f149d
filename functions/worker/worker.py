"""SQS jobs worker: a thin Lambda handler over ``llm_gateway.jobs.worker``.

The event source mapping delivers batches from the FIFO jobs queue with
``ReportBatchItemFailures``; the answer lists the records SQS must redeliver.
"""

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from llm_gateway.jobs.worker import JobWorker, build_worker
from llm_gateway.observability import per_invocation_logging
from llm_gateway.runtime import build_services
from llm_gateway.settings import get_settings


@lru_cache(maxsize=1)
def default_worker() -> JobWorker:
    return build_worker(build_services(get_settings()))


# The Lambda context keys and correlation id are this invocation's only: where the API and the
# worker share a process (the local stack) they never reach API lines.
@per_invocation_logging
def handler(event: dict, context: Any) -> PartialItemFailureResponse:
    return default_worker().handle(event, context)
