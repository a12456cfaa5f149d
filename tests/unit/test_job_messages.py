"""Job message versions: the gateway sends version 2 (with the submitting key), the worker reads 1 and 2."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from llm_gateway.jobs.messages import InvalidJobMessage, JobMessage, parse_job_message, schema_path

REQUEST = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def body(**fields) -> str:
    return json.dumps({"job_id": "job_1", "tenant_id": "acme", "request": REQUEST, **fields})


def test_version_2_carries_the_key_and_version_1_is_still_read():
    message, request = parse_job_message(body(version=2, key_id="key_0123456789ab"))
    assert (message.version, message.key_id, request.model) == (2, "key_0123456789ab", "default")
    message, _ = parse_job_message(body(version=2))  # the key is optional
    assert message.key_id is None
    message, _ = parse_job_message(body(version=1))
    assert (message.version, message.key_id) == (1, None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"version": 1, "key_id": "key_0123456789ab"}, "schema violation at (root): additionalProperties"),
        ({"version": 2, "key_id": "bad key!"}, "schema violation at key_id: pattern"),
        ({"version": 3}, "schema violation at version: const"),
        ({"version": True}, "schema violation at version: const"),
        ({"version": 1.0}, "schema violation at version: const"),
    ],
)
def test_what_a_version_does_not_allow_is_refused_by_name(fields, reason):
    with pytest.raises(InvalidJobMessage) as caught:
        parse_job_message(body(**fields))
    assert caught.value.reason == reason and caught.value.job_id == "job_1"


def test_the_gateway_sends_version_2_and_cannot_put_a_key_in_version_1():
    sent = json.loads(JobMessage(job_id="job_1", tenant_id="acme", key_id="key_x", request=REQUEST).body())
    assert sent["version"] == 2 and sent["key_id"] == "key_x"
    with pytest.raises(ValidationError):
        JobMessage(version=1, job_id="job_1", tenant_id="acme", key_id="key_x", request=REQUEST)


def test_version_2_schema_is_version_1_plus_the_optional_key():
    v1, v2 = (json.loads(schema_path(v).read_text()) for v in (1, 2))
    assert set(v2["properties"]) - set(v1["properties"]) == {"key_id"}
    assert v2["required"] == v1["required"]
    for name in v1["properties"]:
        if name != "version":
            assert v2["properties"][name] == v1["properties"][name], name
