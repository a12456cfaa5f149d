"""Provider key refreshes (issue 13 item 9): at most one KMS Decrypt per key per interval, and an
upstream 401 is re-attempted only with a key that changed."""

from __future__ import annotations

import base64
import threading

import pytest
import requests
import responses

from llm_gateway.providers.base import UpstreamHTTPError
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.security.provider_keys import KmsKeyProvider
from llm_gateway.upstream.aliases import Deployment
from tests.fakes import FakeKeys

URL = "https://upstream.test/v1/chat/completions"
CIPHERTEXT = base64.b64encode(b"blob").decode()


class CountingKms:
    """A KMS client whose Decrypt answers the next plaintext of ``plaintexts`` and counts calls."""

    def __init__(self, *plaintexts: str) -> None:
        self.plaintexts = list(plaintexts)
        self.calls = 0
        self._lock = threading.Lock()

    def decrypt(self, **_):
        with self._lock:
            self.calls += 1
            text = self.plaintexts.pop(0) if len(self.plaintexts) > 1 else self.plaintexts[0]
        return {"Plaintext": text.encode()}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_refreshes_within_the_interval_reuse_the_key_without_decrypting():
    kms, clock = CountingKms("sk-one"), Clock()
    keys = KmsKeyProvider({"k": CIPHERTEXT}, client=kms, refresh_interval=30, clock=clock)
    assert keys.get("k") == "sk-one" and kms.calls == 1
    assert [keys.refresh("k") for _ in range(20)] == ["sk-one"] * 20
    assert kms.calls == 2  # the first refresh decrypts; the other 19 are inside its interval
    clock.now += 29.9
    keys.refresh("k")
    assert kms.calls == 2
    clock.now += 0.2
    keys.refresh("k")
    assert kms.calls == 3


def test_concurrent_refreshes_decrypt_once():
    kms = CountingKms("sk-one")
    keys = KmsKeyProvider({"k": CIPHERTEXT}, client=kms, refresh_interval=30)
    keys.get("k")
    threads = [threading.Thread(target=keys.refresh, args=("k",)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert kms.calls == 2


def test_a_refresh_interval_of_zero_always_decrypts():
    kms = CountingKms("sk-one", "sk-two")
    keys = KmsKeyProvider({"k": CIPHERTEXT}, client=kms, refresh_interval=0)
    keys.get("k")
    assert keys.refresh("k") == "sk-two"
    keys.refresh("k")
    assert kms.calls == 3


def provider(keys: FakeKeys) -> OpenAIProvider:
    deployment = Deployment(name="d", provider="openai", model="gpt", base_url="https://upstream.test/v1", key_ref="k")
    return OpenAIProvider(deployment, keys, requests.Session())


UNAUTHORIZED = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}}
REPLY = {
    "id": "c",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}


@responses.activate
def test_a_401_is_sent_again_at_once_with_a_rotated_key():
    responses.post(URL, json=UNAUTHORIZED, status=401)
    responses.post(URL, json=REPLY)
    keys = FakeKeys({"k": "sk-old"}, rotated={"k": "sk-new"})
    provider(keys).complete({"messages": [{"role": "user", "content": "x"}]}, (1, 1))
    assert [c.request.headers["Authorization"] for c in responses.calls] == ["Bearer sk-old", "Bearer sk-new"]


@responses.activate
def test_a_401_with_the_same_key_after_refresh_is_not_sent_again():
    responses.post(URL, json=UNAUTHORIZED, status=401)
    keys = FakeKeys({"k": "sk-old"})
    with pytest.raises(UpstreamHTTPError) as err:
        provider(keys).complete({"messages": [{"role": "user", "content": "x"}]}, (1, 1))
    assert err.value.status == 401 and keys.refreshes == 1
    assert len(responses.calls) == 1
