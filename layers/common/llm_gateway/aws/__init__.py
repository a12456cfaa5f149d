"""boto3 clients, built once per container from one session, with botocore's ``standard`` retry mode,
and bounded by the request's deadline inside a deadline scope (:mod:`llm_gateway.aws.bounded`).

Adapters take their client as an argument; this module only supplies the default.
``AWS_ENDPOINT_URL`` (boto3's own setting) points every client at moto locally.

The DynamoDB client skips botocore's client-side parameter validation (``parameter_validation``,
a botocore option): it walked every request against the model before sending it, 0.12 ms of the
~1.8 ms botocore spent per call here, 0.33-0.45 ms a stateful turn (most of it the commit's
TransactWriteItems; bench/request_path.py's conversation turn), and every DynamoDB
request is built by this package's stores, never passed through from a caller. The checks still
run where they can catch a mistake: the tests' clients (tests/conftest.py) keep botocore's default,
so every request shape the stores build is validated across the integration suite, and
DynamoDB validates each request itself (a malformed one is a ``ValidationException``). KMS, SQS
and SSM keep it (off the per-turn path).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_session: list[Any] = []  # one boto3 session for every client: botocore's loader (endpoint rules,
# partitions, retry and default configuration files) reads and keeps each data file once
UNVALIDATED = frozenset({"dynamodb"})  # clients built without botocore's parameter validation (above)


def client(service: str) -> Any:
    if service not in _clients:
        from llm_gateway.aws.loader import SERVICES

        if service not in SERVICES:  # its endpoints.json entry is not kept (llm_gateway.aws.loader)
            raise ValueError(f"no client for {service!r}: add it to llm_gateway.aws.loader.SERVICES")
        with _lock:
            if service not in _clients:
                import boto3
                from botocore.config import Config

                from llm_gateway.settings import get_settings

                config = Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=2,
                    read_timeout=10,
                    tcp_keepalive=True,
                    parameter_validation=service not in UNVALIDATED,
                )
                from llm_gateway.aws.bounded import bound

                if not _session:
                    from llm_gateway.aws.loader import botocore_session

                    _session.append(boto3.session.Session(botocore_session=botocore_session()))
                session: Any = _session[0]  # any service by name: the stubs' overloads want literals
                _clients[service] = bound(session.client(service, region_name=get_settings().aws_region, config=config))
    return _clients[service]
