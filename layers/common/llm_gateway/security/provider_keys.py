"""Provider keys: stored only as KMS ciphertext, decrypted on first use.

Each ciphertext is bound to an encryption context naming the deployment that uses
it (``{"llm-gateway:deployment": <deployment name>}``), so a ciphertext copied to
another deployment (say, one pointing at another base URL) fails to decrypt. A
deployment names its ciphertext by ``key_ref``; one key ref serves one deployment.
Plaintext lives only in this process's memory, is cached for the
life of the container, and is refreshed when the upstream answers 401 — at most once per key per
``refresh_interval`` (``PROVIDER_KEY_REFRESH_SECONDS``): a burst of 401s (a revoked key, a
misconfigured deployment) costs one KMS Decrypt, not one per call. Within the interval
:meth:`KmsKeyProvider.refresh` returns the key it already holds, so a provider that sees the
same key again knows a re-attempt cannot help and does not make one.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from llm_gateway.errors import ProviderKeyUnavailable

if TYPE_CHECKING:  # boto3's stub types (mypy_boto3_*): annotations only
    from mypy_boto3_kms import KMSClient

CONTEXT_KEY = "llm-gateway:deployment"


def encryption_context(deployment: str) -> dict[str, str]:
    return {CONTEXT_KEY: deployment}


DEFAULT_REFRESH_INTERVAL = 60.0  # seconds between two KMS refreshes of one key


class KeyProvider(Protocol):
    def get(self, key_ref: str) -> str: ...

    def refresh(self, key_ref: str) -> str:
        """The key decrypted again after the upstream refused it, unless it was refreshed within
        the interval: then the key already held (equal to the refused one: do not re-attempt)."""
        ...


class KmsKeyProvider:
    def __init__(
        self,
        ciphertexts: dict[str, str],
        client: KMSClient | None = None,
        deployments: dict[str, str] | None = None,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ciphertexts = {ref: c for ref, c in ciphertexts.items() if c}
        self._deployments = dict(deployments or {})  # key ref -> deployment named in the context
        self._client = client
        self._cache: dict[str, str] = {}
        self._refreshed: dict[str, float] = {}  # key ref -> clock() of its last refresh
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:  # built on first decrypt: keeps KMS off the cold-start path
            from llm_gateway.aws import client

            self._client = client("kms")
        return self._client

    def refs(self) -> set[str]:
        return set(self._ciphertexts)

    def get(self, key_ref: str) -> str:
        cached = self._cache.get(key_ref)
        if cached is not None:
            return cached
        with self._lock:
            if key_ref not in self._cache:
                self._cache[key_ref] = self._decrypt(key_ref)
            return self._cache[key_ref]

    def refresh(self, key_ref: str) -> str:
        with self._lock:  # concurrent 401s wait here for the one refresh, then see it as recent
            last = self._refreshed.get(key_ref)
            if key_ref in self._cache and last is not None and self._clock() - last < self._refresh_interval:
                return self._cache[key_ref]
            self._cache[key_ref] = self._decrypt(key_ref)
            self._refreshed[key_ref] = self._clock()
            return self._cache[key_ref]

    def _decrypt(self, key_ref: str) -> str:
        ciphertext = self._ciphertexts.get(key_ref)
        if ciphertext is None:
            raise ProviderKeyUnavailable(f"No provider key is configured for '{key_ref}'.")
        try:
            blob = base64.b64decode(ciphertext, validate=True)
            context = encryption_context(self._deployments.get(key_ref, key_ref))
            resp = self.client.decrypt(CiphertextBlob=blob, EncryptionContext=context)
            return resp["Plaintext"].decode("utf-8")
        except (binascii.Error, ValueError, ClientError, BotoCoreError, UnicodeDecodeError) as exc:
            # Fail closed. The message names the reference, never the ciphertext or plaintext.
            raise ProviderKeyUnavailable(f"The provider key for '{key_ref}' could not be decrypted.") from exc


def encrypt_key(plaintext: str, deployment: str, kms_key_id: str, client: Any) -> str:
    """Encrypt a provider key for ``deployment``: the base64 ciphertext its key ref names."""
    resp = client.encrypt(
        KeyId=kms_key_id, Plaintext=plaintext.encode("utf-8"), EncryptionContext=encryption_context(deployment)
    )
    return base64.b64encode(resp["CiphertextBlob"]).decode("ascii")
