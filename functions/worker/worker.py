"""SQS jobs worker: a thin Lambda handler over ``llm_gateway.jobs.worker``.

The event source mapping delivers batches from the FIFO jobs queue with
``ReportBatchItemFailures``; the answer lists the records SQS must redeliver.
"""

from functools import lru_cache

from llm_gateway.jobs.worker import JobWorker, build_worker
from llm_gateway.observability import logger
from llm_gateway.runtime import build_services
from llm_gateway.settings import get_settings


@lru_cache(maxsize=1)
def default_worker() -> JobWorker:
    return build_worker(build_services(get_settings()))


# The keys inject_lambda_context adds. They belong to this invocation only: dropping them when it
# ends keeps them off other log lines where the API and worker share a process (the local stack).
LAMBDA_CONTEXT_KEYS = [
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "xray_trace_id",
]


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict, context) -> dict:
    try:
        return default_worker().handle(event, context)
    finally:
        logger.remove_keys(LAMBDA_CONTEXT_KEYS)
