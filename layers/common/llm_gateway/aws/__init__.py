"""boto3 clients, built once per container, with botocore's ``standard`` retry mode, and bounded
by the request's deadline inside a deadline scope (:mod:`llm_gateway.aws.bounded`).

Adapters take their client as an argument; this module only supplies the default.
``AWS_ENDPOINT_URL`` (boto3's own setting) points every client at moto locally.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def client(service: str) -> Any:
    if service not in _clients:
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
                )
                from llm_gateway.aws.bounded import bound

                session: Any = boto3.session.Session()  # any service by name: the stubs' overloads want literals
                _clients[service] = bound(session.client(service, region_name=get_settings().aws_region, config=config))
    return _clients[service]
