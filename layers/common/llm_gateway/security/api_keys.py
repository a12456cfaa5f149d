"""Gateway API keys: tenants, SHA-256 hashes, constant-time checks.

Keys are stored only as ``sha256(key)`` (``PK = APIKEY#<hash>``); the plaintext is
shown once, when the key is created. A key maps to exactly one tenant, and the
tenant is the only scope every read and write uses. Successful lookups are cached
per container for ``AUTH_CACHE_SECONDS`` (so a revocation takes effect within that
time); failures are never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llm_gateway.aws.dynamo import TENANT_RE, attr, plain, s
from llm_gateway.deadline import now_ms
from llm_gateway.errors import AuthenticationFailed, NotFound

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_dynamodb import DynamoDBClient

KEY_PREFIX = "sk-gw-"


def _key(digest: str) -> dict[str, Any]:
    return {"PK": s(f"APIKEY#{digest}"), "SK": s("APIKEY")}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    name: str
    created_at: int
    revoked: bool = False
    admin: bool = False  # may call /v1/admin/...
    key_hash: str = field(default="", repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "tenant": self.tenant,
            "name": self.name,
            "created_at": self.created_at // 1000,
            "revoked": self.revoked,
            "admin": self.admin,
        }


class ApiKeyStore:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        if client is None:
            from llm_gateway.aws import client as aws_client

            client = aws_client("dynamodb")
        self.table = table_name
        self.client = client

    @staticmethod
    def _record(item: dict) -> ApiKey:
        data = {name: plain(value) for name, value in item.items()}
        return ApiKey(
            key_id=data["key_id"],
            tenant=data["tenant"],
            name=data.get("name", ""),
            created_at=data["created_at"],
            revoked=data.get("revoked", False),
            admin=data.get("admin", False),
            key_hash=data["key_hash"],
        )

    def create(self, tenant: str, name: str = "", key: str | None = None, *, admin: bool = False) -> tuple[str, ApiKey]:
        """Create a key for ``tenant``; returns the plaintext (shown once) and its record."""
        if not TENANT_RE.match(tenant):
            raise ValueError("tenant ids are 1-64 characters of letters, digits, '_', '.', '-'")
        key = key or KEY_PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        record = ApiKey(
            key_id="key_" + digest[:12], tenant=tenant, name=name, created_at=now_ms(), admin=admin, key_hash=digest
        )
        values = {
            "key_hash": digest,
            "key_id": record.key_id,
            "tenant": tenant,
            "name": name,
            "created_at": record.created_at,
            "revoked": False,
            "admin": admin,
            "GSI1PK": "APIKEYS",
            "GSI1SK": f"{tenant}#{record.key_id}",
        }
        self.client.put_item(
            TableName=self.table,
            Item={**_key(digest), **{name: attr(value) for name, value in values.items()}},
            ConditionExpression="attribute_not_exists(PK)",
        )
        return key, record

    def lookup(self, key: str) -> ApiKey | None:
        digest = hash_key(key)
        item = self.client.get_item(TableName=self.table, Key=_key(digest)).get("Item")
        if not item or not hmac.compare_digest(item["key_hash"]["S"], digest):
            return None
        return self._record(item)

    def list(self, tenant: str | None = None) -> list[ApiKey]:
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "GSI1",
            "KeyConditionExpression": "GSI1PK = :pk",
            "ExpressionAttributeValues": {":pk": s("APIKEYS")},
        }
        if tenant:
            params["KeyConditionExpression"] += " AND begins_with(GSI1SK, :t)"
            params["ExpressionAttributeValues"][":t"] = s(f"{tenant}#")
        keys: list[ApiKey] = []
        while True:
            resp = self.client.query(**params)
            keys += [self._record(item) for item in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return keys
            params["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def revoke(self, key_id: str) -> ApiKey:
        for record in self.list():
            if record.key_id == key_id:
                self.client.update_item(
                    TableName=self.table,
                    Key=_key(record.key_hash),
                    UpdateExpression="SET revoked = :t",
                    ExpressionAttributeValues={":t": {"BOOL": True}},
                )
                return replace(record, revoked=True)
        raise NotFound(f"No API key with id '{key_id}'.")


@dataclass(frozen=True)
class Caller:
    tenant: str
    key_id: str
    admin: bool = False


class Authenticator:
    def __init__(
        self, keys: ApiKeyStore, cache_seconds: float = 30.0, clock=time.monotonic, negative_cache_seconds: float = 0.0
    ) -> None:
        self.keys = keys
        self.cache_seconds = cache_seconds
        # An unknown or revoked key is refused from memory for this long: a flood of bad keys costs
        # one GetItem per key per interval, not one per request.
        self.negative_cache_seconds = negative_cache_seconds
        self.clock = clock
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()

    def _remember(self, digest: str, until: float, caller: Caller | None) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (until, caller)

    def cached(self, authorization: str | None) -> Caller | None:
        """The caller when this header's key is in the positive cache, else None (no I/O: safe on
        the event loop; :meth:`authenticate` then decides, reading the store if it must)."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        entry = self._cache.get(hash_key(key))
        return entry[1] if entry and entry[0] > self.clock() else None

    def authenticate(self, authorization: str | None) -> Caller:
        if not authorization:
            raise AuthenticationFailed("Missing API key. Send 'Authorization: Bearer <key>'.", code="missing_api_key")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer <key>'.")
        digest = hash_key(key)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached and cached[0] > now:
            if cached[1] is None:
                raise AuthenticationFailed("Incorrect or revoked API key.")
            return cached[1]
        record = self.keys.lookup(key)
        if record is None or record.revoked:
            if self.negative_cache_seconds > 0:
                self._remember(digest, now + self.negative_cache_seconds, None)
            else:
                with self._lock:
                    self._cache.pop(digest, None)
            raise AuthenticationFailed("Incorrect or revoked API key.")
        caller = Caller(record.tenant, record.key_id, record.admin)
        if self.cache_seconds > 0:
            self._remember(digest, now + self.cache_seconds, caller)
        return caller
