"""Fixtures shared by every test boundary."""

from __future__ import annotations

import os
import uuid

import pytest

# No test may reach a real AWS account: fixed dummy credentials, one region.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "LlmGatewayTest")


@pytest.fixture(scope="session")
def moto_server():
    """moto in server mode (its own process) on loopback, for the whole session."""
    from local.resources import MotoServer

    with MotoServer() as server:
        yield server


def new_aws(moto_server):
    """A fresh table, KMS key and queues in ``moto_server``, provisioned from template.yaml."""
    from local.resources import boto_session, provision

    session = boto_session()
    resources = provision(session, moto_server.endpoint, prefix=f"t{uuid.uuid4().hex[:10]}")

    class Aws:
        endpoint = moto_server.endpoint
        res = resources

        @staticmethod
        def client(service: str):
            """botocore's parameter validation on (its default): every request shape the stores build is
            checked here, which the deployed DynamoDB client skips (llm_gateway.aws.UNVALIDATED)."""
            from botocore.config import Config

            return session.client(
                service,
                endpoint_url=moto_server.endpoint,
                config=Config(retries={"mode": "standard"}, max_pool_connections=64),
            )

    return Aws


@pytest.fixture
def aws(moto_server):
    """A fresh table, KMS key and queues, provisioned from template.yaml, for one test."""
    return new_aws(moto_server)


_BOUNDARIES = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """Each test carries the marker of its folder (tests/unit -> unit, ...), so `-m unit` selects by
    boundary; --strict-markers (pyproject.toml) rejects any marker not declared there."""
    for item in items:
        parts = item.path.parts
        for boundary in _BOUNDARIES:
            if boundary in parts[parts.index("tests") + 1 : parts.index("tests") + 2]:
                item.add_marker(boundary)
