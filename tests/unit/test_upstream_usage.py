"""Nothing trusted from upstream: usage counters, reply bodies (issue 13 item 3)."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest
import requests
import responses

from llm_gateway.chat.usage import believed, usage_body
from llm_gateway.providers.base import MAX_USAGE_TOKENS, UpstreamReplyTooLarge, Usage, token_count
from llm_gateway.providers.body import loads, read_body


@pytest.mark.parametrize(
    "value,count",
    [(None, 0), (0, 0), (12, 12), (12.0, 12), (MAX_USAGE_TOKENS, MAX_USAGE_TOKENS)]
    + [(v, None) for v in (-1, -0.5, 12.5, 10**30, float("inf"), float("nan"), True, "12", [1], {"a": 1})],
)
def test_token_count_believes_only_sane_non_negative_integers(value, count):
    assert token_count(value) == count


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"prompt_tokens": -5, "completion_tokens": 3}', Usage(0, 3, ("prompt_tokens",))),
        ('{"prompt_tokens": 1000000000000000000000000000000, "completion_tokens": 3}', Usage(0, 3, ("prompt_tokens",))),
        ('{"prompt_tokens": 7.5, "completion_tokens": 3}', Usage(0, 3, ("prompt_tokens",))),
        ('{"prompt_tokens": "7", "completion_tokens": -3}', Usage(0, 0, ("prompt_tokens", "completion_tokens"))),
        # JSON's non-finite numbers are read as null (providers.body.loads): not reported, so ours is used
        ('{"prompt_tokens": 1e400, "completion_tokens": 3}', Usage(0, 3)),
        ('{"prompt_tokens": NaN, "completion_tokens": 3}', Usage(0, 3)),
    ],
)
def test_a_lying_counter_is_suspect_never_an_exception(raw, expected):
    assert Usage.from_openai(loads(raw)) == expected


def test_usage_that_is_not_an_object_is_suspect():
    assert Usage.from_openai("lots").suspect == ("prompt_tokens", "completion_tokens")
    assert Usage.from_openai(None) == Usage()


def believe(reported: Usage, prompt: int = 100, completion: int = 40, choices: int = 1) -> tuple[Usage, bool]:
    return believed(
        reported, context_window=10_000, prompt=lambda: prompt, completion=lambda: completion, choices=choices
    )


def test_plausible_counts_are_the_upstreams():
    assert believe(Usage(120, 35)) == (Usage(120, 35), False)
    assert believe(Usage(100, 3000)) == (Usage(100, 3000), False)  # reasoning tokens: more, never fewer
    assert believe(Usage(100, 150), choices=4) == (Usage(100, 150), False)


def test_missing_counts_are_ours_without_alarm():
    assert believe(Usage()) == (Usage(100, 40), False)
    assert believe(Usage(120, 0)) == (Usage(120, 40), False)


@pytest.mark.parametrize(
    "reported,expected",
    [
        (Usage(0, 35, ("prompt_tokens",)), Usage(100, 35)),  # negative / huge / 1e400 / non-integer
        (Usage(120, 0, ("completion_tokens",)), Usage(120, 40)),
        (Usage(20_001, 35), Usage(100, 35)),  # more than twice the context window
        (Usage(120, 20_001), Usage(120, 40)),
        (Usage(24, 35), Usage(100, 35)),  # under a quarter of our count: it would void the budget
        (Usage(120, 9), Usage(120, 40)),
    ],
)
def test_implausible_counts_are_replaced_by_ours_and_reported(reported, expected):
    assert believe(reported) == (expected, True)


def test_the_usage_shown_keeps_only_believable_details():
    raw = {
        "prompt_tokens": -1,
        "prompt_tokens_details": {"cached_tokens": 1e400, "audio_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": -3},
    }
    assert usage_body(raw, Usage(10, 5)) == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"audio_tokens": 2},
    }
    json.dumps(usage_body(loads(b'{"prompt_tokens_details": {"cached_tokens": 1e400}}'), Usage(1, 1)), allow_nan=False)


def test_upstream_json_has_no_non_finite_numbers_and_no_lone_surrogates():
    data = loads(
        b'{"a": 1e400, "b": -1e999, "c": NaN, "d": Infinity, "e": 1.5, "f": "x\\ud800", "g": "\\ud83d\\ude00"}'
    )
    assert data == {"a": None, "b": None, "c": None, "d": None, "e": 1.5, "f": "x\ufffd", "g": "\U0001f600"}
    json.dumps(data, allow_nan=False).encode()


URL = "http://upstream.test/v1/chat/completions"


def read_json(resp: requests.Response):
    read_body(resp)
    return loads(resp.content)


def fetch(body: bytes, headers: dict[str, str]) -> requests.Response:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, body=body, headers=headers)
        return requests.post(URL, json={}, stream=True)


def test_a_gzip_bomb_is_a_502_with_bounded_memory():
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 250 * 1024
    resp = fetch(bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    tracemalloc.start()
    try:
        with pytest.raises(UpstreamReplyTooLarge) as caught:
            read_json(resp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.status == 502 and caught.value.code == "upstream_reply_too_large"
    assert peak < 40 * 1024 * 1024, peak  # the cap (8 MiB) and a few read buffers, not 200 MiB


def test_a_declared_oversized_body_is_refused_before_reading():
    resp = fetch(b"{}", {"Content-Length": str(100 * 1024 * 1024)})
    with pytest.raises(UpstreamReplyTooLarge):
        read_json(resp)


def test_a_compressed_body_under_the_cap_reads_whole():
    body = json.dumps({"choices": [{"message": {"content": "x" * 100_000}}]}).encode()
    resp = fetch(gzip.compress(body), {"Content-Encoding": "gzip"})
    assert read_json(resp)["choices"][0]["message"]["content"] == "x" * 100_000
