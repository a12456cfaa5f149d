"""Dead-letter consumer: a thin Lambda handler over ``llm_gateway.jobs.dead_letters``.

Subscribed to the jobs DLQ (``ReportBatchItemFailures``): marks each dead-lettered job ``failed``
and parks its message in the parked queue, where ``bin/llm-gateway-admin jobs redrive`` finds it.
"""

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from llm_gateway.jobs.dead_letters import DeadLetterConsumer, build_consumer
from llm_gateway.observability import per_invocation_logging
from llm_gateway.runtime import build_services
from llm_gateway.settings import get_settings


@lru_cache(maxsize=1)
def default_consumer() -> DeadLetterConsumer:
    return build_consumer(build_services(get_settings()))


@per_invocation_logging
def handler(event: dict, context: Any) -> PartialItemFailureResponse:
    return default_consumer().handle(event, context)
