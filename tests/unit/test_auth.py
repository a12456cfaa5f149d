"""Gateway API keys: hashed at rest, compared in constant time, cached briefly, revocable.

The key store runs on in-process moto (``mock_aws``), with the table from template.yaml."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from moto import mock_aws

from llm_gateway.errors import AuthenticationFailed, NotFound
from llm_gateway.security import api_keys as auth
from llm_gateway.security.api_keys import ApiKeyStore, Authenticator, hash_key
from local.resources import _resources, create_table, load_template

TABLE = "auth-test"


@pytest.fixture
def keys():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        (props,) = _resources(load_template(), "AWS::DynamoDB::Table").values()
        create_table(client, TABLE, props)
        yield ApiKeyStore(TABLE, client=client)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting(store: ApiKeyStore) -> list[str]:
    lookups: list[str] = []
    original = store.lookup

    def lookup(key: str):
        lookups.append(key)
        return original(key)

    store.lookup = lookup
    return lookups


def test_keys_are_stored_only_as_sha256_hashes(keys):
    plaintext, record = keys.create("tenant-a", "ci")
    assert plaintext.startswith("sk-gw-") and len(plaintext) > 40
    assert record.key_hash == hashlib.sha256(plaintext.encode()).hexdigest() == hash_key(plaintext)
    dump = json.dumps(keys.client.scan(TableName=TABLE)["Items"])
    assert plaintext not in dump
    assert plaintext[len("sk-gw-") :] not in dump
    assert record.key_hash in dump
    assert keys.lookup(plaintext).tenant == "tenant-a"
    assert keys.lookup(plaintext + "x") is None


def test_the_stored_hash_is_compared_in_constant_time(keys, monkeypatch):
    plaintext, _ = keys.create("tenant-a")
    calls: list[tuple[str, str]] = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert keys.lookup(plaintext) is not None
    assert calls == [(hash_key(plaintext), hash_key(plaintext))]
    # an item whose stored hash does not match its key is refused, even though it was found
    keys.client.update_item(
        TableName=TABLE,
        Key={"PK": {"S": f"APIKEY#{hash_key(plaintext)}"}, "SK": {"S": "APIKEY"}},
        UpdateExpression="SET key_hash = :h",
        ExpressionAttributeValues={":h": {"S": "0" * 64}},
    )
    assert keys.lookup(plaintext) is None


def test_tenant_ids_are_validated(keys):
    for bad in ("", "a b", "x" * 65, "t#1"):
        with pytest.raises(ValueError):
            keys.create(bad)


def test_list_and_revoke(keys):
    _, a = keys.create("tenant-a", "one")
    _, b = keys.create("tenant-b", "two")
    assert {k.key_id for k in keys.list()} == {a.key_id, b.key_id}
    assert [k.key_id for k in keys.list("tenant-a")] == [a.key_id]
    assert keys.revoke(a.key_id).revoked is True
    assert [k.revoked for k in keys.list("tenant-a")] == [True]
    with pytest.raises(NotFound):
        keys.revoke("key_nope")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("Basic abc", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
        ("Bearer   ", "invalid_api_key"),
        ("Bearer sk-gw-unknown", "invalid_api_key"),
    ],
)
def test_missing_malformed_and_unknown_keys_fail(keys, header, code):
    with pytest.raises(AuthenticationFailed) as info:
        Authenticator(keys).authenticate(header)
    assert info.value.code == code


def test_successes_are_cached_for_the_configured_time_failures_never(keys):
    plaintext, record = keys.create("tenant-a")
    clock = Clock()
    authenticator = Authenticator(keys, cache_seconds=30, clock=clock)
    lookups = counting(keys)
    for _ in range(3):
        caller = authenticator.authenticate(f"Bearer {plaintext}")
    assert (caller.tenant, caller.key_id) == ("tenant-a", record.key_id)
    assert len(lookups) == 1
    clock.now += 31
    authenticator.authenticate(f"bearer {plaintext}")  # the scheme is case-insensitive
    assert len(lookups) == 2
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate("Bearer sk-gw-wrong")
    assert len(lookups) == 4
    assert all(key not in str(authenticator._cache) for key in (plaintext, "sk-gw-wrong"))  # hashes only


def test_a_revoked_key_fails_once_the_cache_expires(keys):
    plaintext, record = keys.create("tenant-a")
    clock = Clock()
    authenticator = Authenticator(keys, cache_seconds=30, clock=clock)
    authenticator.authenticate(f"Bearer {plaintext}")
    keys.revoke(record.key_id)
    authenticator.authenticate(f"Bearer {plaintext}")  # within AUTH_CACHE_SECONDS: still cached
    clock.now += 30.5
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate(f"Bearer {plaintext}")
    with pytest.raises(AuthenticationFailed):  # and a fresh container refuses it at once
        Authenticator(keys, cache_seconds=30).authenticate(f"Bearer {plaintext}")


def test_without_a_cache_every_request_looks_the_key_up(keys):
    plaintext, _ = keys.create("tenant-a")
    authenticator = Authenticator(keys, cache_seconds=0)
    lookups = counting(keys)
    for _ in range(3):
        authenticator.authenticate(f"Bearer {plaintext}")
    assert len(lookups) == 3


def test_unknown_and_revoked_keys_are_refused_from_memory_for_the_negative_cache_time(keys):
    plaintext, record = keys.create("tenant-a")
    clock = Clock()
    authenticator = Authenticator(keys, cache_seconds=30, clock=clock, negative_cache_seconds=5)
    lookups = counting(keys)
    for _ in range(100):  # a flood of one unknown key: one GetItem per interval
        with pytest.raises(AuthenticationFailed) as info:
            authenticator.authenticate("Bearer sk-gw-unknown")
        assert info.value.code == "invalid_api_key"
    assert len(lookups) == 1
    clock.now += 5.5
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("Bearer sk-gw-unknown")
    assert len(lookups) == 2
    assert "sk-gw-unknown" not in str(authenticator._cache)  # hashes only

    keys.revoke(record.key_id)  # a revoked key is refused from memory too, and never served
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            authenticator.authenticate(f"Bearer {plaintext}")
    assert len(lookups) == 3


def test_cached_answers_only_from_the_positive_cache_and_reads_nothing(keys):
    clock = Clock()
    authenticator = Authenticator(keys, cache_seconds=30, clock=clock, negative_cache_seconds=5)
    plaintext, record = keys.create("tenant-a")
    lookups = counting(keys)
    header = f"Bearer {plaintext}"
    assert authenticator.cached(header) is None  # not yet seen: the caller must authenticate
    assert authenticator.authenticate(header).key_id == record.key_id
    assert authenticator.cached(header) == authenticator.authenticate(header)
    assert authenticator.cached(f"bearer  {plaintext} ") is not None  # the same parsing as authenticate
    with pytest.raises(AuthenticationFailed):
        authenticator.authenticate("Bearer sk-gw-unknown")
    # a negatively cached key, a malformed header or no header: never a caller from the cache
    for bad in ("Bearer sk-gw-unknown", None, "", "Basic abc", "Bearer"):
        assert authenticator.cached(bad) is None
    clock.now += 31
    assert authenticator.cached(header) is None  # expired: authenticate reads the store again
    assert lookups == [plaintext, "sk-gw-unknown"]
