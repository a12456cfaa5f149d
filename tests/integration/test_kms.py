"""Provider keys through KMS in moto server mode (issue 2, "KMS")."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

from llm_gateway.security.provider_keys import encrypt_key
from tests.integration.conftest import (
    CANARY_KEY,
    TENANT_KEY,
    chat,
    count_calls,
    make_gateway,
    mocked_upstream,
    serve,
)


def test_100_requests_in_one_container_decrypt_once(gateway):
    decrypts = count_calls(gateway.kms, ("Decrypt",))
    for i in range(100):
        r = gateway.post("/v1/chat/completions", chat(f"q{i}"))
        assert r.status_code == 200, r.text
    assert decrypts.attempted == {"Decrypt": 1}
    # and the decrypted key is the one the upstream received
    assert all(
        c.request.headers["Authorization"] == f"Bearer {CANARY_KEY}"
        for c in gateway.upstream.calls
        if "upstream.test" in c.request.url
    )


def test_concurrent_first_requests_decrypt_once(gateway):
    """A cold container taking 20 requests at once still makes a single Decrypt call."""
    import requests

    decrypts = count_calls(gateway.kms, ("Decrypt",))
    with serve(gateway.app) as base, ThreadPoolExecutor(20) as pool:
        statuses = list(
            pool.map(
                lambda i: (
                    requests.post(
                        f"{base}/v1/chat/completions",
                        json=chat(f"q{i}"),
                        headers={"Authorization": f"Bearer {TENANT_KEY}"},
                        timeout=30,
                    ).status_code
                ),
                range(20),
            )
        )
    assert statuses == [200] * 20
    assert decrypts.attempted == {"Decrypt": 1}


def assert_no_key_material(text: str, ciphertext: str) -> None:
    assert CANARY_KEY not in text
    assert ciphertext not in text
    assert ciphertext[:24] not in text  # not even a prefix of the ciphertext
    assert base64.b64encode(CANARY_KEY.encode()).decode() not in text


def test_wrong_encryption_context_fails_closed_without_key_material(aws, capfd):
    kms = aws.client("kms")
    # a real ciphertext of the key, but bound to another key ref: it must not decrypt as "default"
    wrong = encrypt_key(CANARY_KEY, "other-provider", aws.res.kms_key_id, kms)
    with mocked_upstream() as mock:
        gw = make_gateway(aws, ciphertext=wrong)
        gw.upstream = mock
        decrypts = count_calls(gw.kms, ("Decrypt",))
        responses_ = [gw.post("/v1/chat/completions", chat("x")) for _ in range(2)]
        upstream_calls = gw.upstream_calls()
    for r in responses_:
        assert r.status_code == 500
        error = r.json()["error"]
        assert error["type"] == "server_error" and error["code"] == "provider_key_unavailable"
        assert set(error) == {"message", "type", "param", "code"}
        assert_no_key_material(r.text, wrong)
    assert upstream_calls == []  # closed: nothing was sent without a key
    assert decrypts.attempted == {"Decrypt": 2}  # a failure is not cached as a key
    out, err = capfd.readouterr()
    assert_no_key_material(out + err, wrong)


def test_garbage_ciphertext_fails_closed(aws):
    with mocked_upstream() as mock:
        gw = make_gateway(aws, ciphertext=base64.b64encode(b"not a kms blob").decode())
        gw.upstream = mock
        r = gw.post("/v1/chat/completions", chat("x"))
        assert gw.upstream_calls() == []
    assert r.status_code == 500 and r.json()["error"]["code"] == "provider_key_unavailable"
