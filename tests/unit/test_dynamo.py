"""The shared DynamoDB plumbing: the attribute codec and the one bounded unprocessed-items retry."""

from __future__ import annotations

import pytest

from llm_gateway.aws.dynamo import UNPROCESSED_ATTEMPTS, UnprocessedItems, attr, batch_get, plain, retry_unprocessed


def test_codec_round_trips_python_values_through_boto3s_serializer():
    value = {"n": 3, "f": 0.25, "s": "x", "b": True, "l": [1, "a"], "m": {"k": None}}
    encoded = attr(value)
    assert encoded["M"]["n"] == {"N": "3"} and encoded["M"]["f"] == {"N": "0.25"}
    assert plain(encoded) == value
    assert isinstance(plain(attr(3)), int) and isinstance(plain(attr(0.5)), float)


def test_unprocessed_keys_are_asked_again_until_none_are_left():
    calls, sleeps = [], []
    answers = [
        {"Responses": {"t": [{"a": 1}]}, "UnprocessedKeys": {"t": {"Keys": [{"k": 2}]}}},
        {"Responses": {"t": [{"a": 2}]}, "UnprocessedKeys": {}},
    ]

    class Client:
        def batch_get_item(self, RequestItems):  # noqa: N803 - boto3's parameter name
            calls.append(RequestItems)
            return answers[len(calls) - 1]

    items = batch_get(Client(), "t", [{"k": 1}, {"k": 2}], what="testing", sleep=sleeps.append)
    assert items == [{"a": 1}, {"a": 2}]
    assert calls[1] == {"t": {"Keys": [{"k": 2}]}}
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.05


def test_keys_dynamodb_never_processes_end_in_an_error_after_a_bounded_number_of_calls():
    """DynamoJobStore.get_many used to loop here forever, without sleeping."""
    calls, sleeps = [], []

    def call(request):
        calls.append(request)
        return {"Responses": {}, "UnprocessedKeys": request}

    with pytest.raises(UnprocessedItems, match="reading jobs"):
        retry_unprocessed(
            call, {"t": {"Keys": [{"k": 1}]}}, "UnprocessedKeys", what="reading jobs", sleep=sleeps.append
        )
    assert len(calls) == UNPROCESSED_ATTEMPTS and len(sleeps) == UNPROCESSED_ATTEMPTS - 1
    assert all(0 <= s <= 1.0 for s in sleeps)
