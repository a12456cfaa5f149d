"""Issue 13 item 9: one KMS refresh per provider key per interval, not one per upstream 401."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from llm_gateway.security.provider_keys import KmsKeyProvider, encrypt_key
from tests.integration.conftest import (
    CANARY_KEY,
    chat,
    count_calls,
    make_gateway,
    mocked_upstream,
    openai_error,
    set_upstream,
)

CALLS = 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unauthorized(request):
    return 401, {}, json.dumps(openai_error("Incorrect API key provided.", code="invalid_api_key"))


def test_twenty_401s_cost_one_kms_refresh_per_interval(aws):
    kms, clock = aws.client("kms"), Clock()
    ciphertext = encrypt_key(CANARY_KEY, "default", aws.res.kms_key_id, kms)
    keys = KmsKeyProvider({"default": ciphertext}, client=kms, refresh_interval=60, clock=clock)
    decrypts = count_calls(kms, ("Decrypt",))
    with mocked_upstream() as mock:
        gw = make_gateway(aws, ciphertext=ciphertext, keys=keys, kms=kms)
        gw.upstream = mock
        set_upstream(gw, unauthorized)

        with ThreadPoolExecutor(8) as pool:  # concurrent 401s wait for the one refresh, then reuse it
            statuses = list(
                pool.map(lambda i: gw.post("/v1/chat/completions", chat(f"x{i}")).status_code, range(CALLS))
            )
        assert statuses == [502] * CALLS
        assert decrypts.attempted == {"Decrypt": 2}  # first use + one refresh for 20 refusals
        assert len(gw.upstream_calls()) == CALLS  # and no second call with a key that did not change

        clock.now += 61  # the interval has passed: the next refusals may refresh again, once
        for i in range(3):
            assert gw.post("/v1/chat/completions", chat(f"y{i}")).status_code == 502
        assert decrypts.attempted == {"Decrypt": 3}
        assert len(gw.upstream_calls()) == CALLS + 3
