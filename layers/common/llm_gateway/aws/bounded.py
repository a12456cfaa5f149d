"""AWS calls bounded by the request's time left (issue 13: "every DynamoDB, SQS and KMS call in a
request is bounded by the time left").

:func:`bound` hooks a boto3 client (``before-send``, so the client object, its events and its
callers stay exactly as they were). Outside a deadline scope (cold start, the CLI) nothing
changes: the client's own timeouts and retries. Inside one (:func:`llm_gateway.deadline.bounded`:
every API request, turn, stream step and job), each attempt is sent through an HTTP session
whose (connect, read) timeouts are the largest :data:`TIERS` entry that fits in the time left
(the smallest when less is left, so a lease release at the deadline still gets its short try),
and botocore's own retries (``standard`` mode) go on only while an attempt still fits. An
attempt that gets no answer, when no further attempt can follow, raises :class:`StoreUnavailable`
(503 with ``Retry-After``) — never a hang, never a generic 500 — and marks the service unavailable
in the scope: later calls in the same scope fail at once instead of waiting again (the turn's
lease then expires as designed). An answer that still says "throttled" or 5xx once botocore's
retries are spent is a ``StoreUnavailable`` too (``after-call``), not a ClientError that would
end as a generic 500.

Written by hand: botocore has timeouts per client only. One HTTP session per tier (a few
``URLLib3Session`` objects per client, built on first use) keeps it cheap: no client copies,
so call counters and event hooks registered on the client keep seeing every call.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError
from botocore.httpsession import URLLib3Session

from llm_gateway.deadline import current
from llm_gateway.errors import StoreUnavailable


@dataclass(frozen=True)
class Tier:
    connect: float
    read: float

    @property
    def worst(self) -> float:
        """The longest one attempt can wait: connecting, then the answer (small AWS bodies)."""
        return self.connect + self.read


# (connect, read) seconds per attempt, smallest first; the largest is the ordinary client's.
TIERS: tuple[Tier, ...] = (Tier(0.25, 0.25), Tier(0.5, 0.5), Tier(0.5, 1.5), Tier(1.0, 3.0), Tier(2.0, 8.0))

# Not answered: could not connect (refused, unreachable, connect timeout), or no reply in time.
_UNANSWERED = (BotoConnectionError, HTTPClientError)
_ATTEMPT = re.compile(r"attempt=(\d+)(?:;\s*max=(\d+))?")

# Answers that mean "busy or failing, retry later" once botocore's own retries are spent (its
# standard-mode throttling codes for these services, and any 5xx): a 503 with Retry-After too.
THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "LimitExceededException",
        "RequestThrottled",
        "KMSInternalException",
    }
)

MESSAGES = {
    "dynamodb": "The gateway's store did not answer in time; nothing was changed by this request. Retry later.",
    "kms": "The key service did not answer in time. Retry later.",
    "sqs": "The jobs queue did not answer in time. Retry later.",
}


def tier_for(seconds_left: float) -> Tier:
    """The largest tier whose worst attempt fits in ``seconds_left``; the smallest if none does."""
    fitting = [t for t in TIERS if t.worst <= seconds_left]
    return fitting[-1] if fitting else TIERS[0]


RETRY_AFTER_SECONDS = 1.0  # the Retry-After of a store_unavailable answer


def busy(service: str) -> StoreUnavailable:
    name = {"dynamodb": "The gateway's store", "kms": "The key service", "sqs": "The jobs queue"}.get(
        service, "A backing service"
    )
    return StoreUnavailable(f"{name} is busy or failing; retry later.", retry_after=RETRY_AFTER_SECONDS)


def unavailable(service: str) -> StoreUnavailable:
    message = MESSAGES.get(service, "A backing service did not answer in time. Retry later.")
    return StoreUnavailable(message, retry_after=RETRY_AFTER_SECONDS)


class _Sessions:
    """One ``URLLib3Session`` per tier for one client, with the client's TLS, proxy and pool settings."""

    def __init__(self, client: Any) -> None:
        config = client.meta.config
        options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        if getattr(config, "tcp_keepalive", False):
            options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        # verify (CA bundle / AWS_CA_BUNDLE) is resolved when the client is built and kept on its session only
        base = getattr(getattr(client, "_endpoint", None), "http_session", None)
        self._kwargs = {
            "verify": getattr(base, "_verify", True),
            "proxies": config.proxies,
            "proxies_config": config.proxies_config,
            "max_pool_connections": config.max_pool_connections,
            "client_cert": config.client_cert,
            "socket_options": options,
        }
        self._sessions: dict[Tier, URLLib3Session] = {}
        self._lock = threading.Lock()

    def get(self, tier: Tier) -> URLLib3Session:
        session = self._sessions.get(tier)
        if session is None:
            with self._lock:
                session = self._sessions.get(tier)
                if session is None:
                    timeout: Any = (tier.connect, tier.read)  # (connect, read): the stubs say int only
                    session = URLLib3Session(timeout=timeout, **self._kwargs)
                    self._sessions[tier] = session
        return session


def _attempt(headers: Any) -> tuple[int, int | None]:
    """This attempt's number and the client's max attempts, from botocore's ``amz-sdk-request`` header."""
    value = headers.get("amz-sdk-request")
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    match = _ATTEMPT.search(value or "")
    if not match:
        return 1, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def bound(client: Any) -> Any:
    """Hook ``client`` so its calls inside a deadline scope are bounded by the time left (idempotent)."""
    if getattr(client, "_llm_gateway_bounded", False):
        return client
    service = client.meta.service_model.endpoint_prefix
    sessions = _Sessions(client)

    def before_send(request: Any, **_: Any) -> Any:
        scope = current()
        if scope is None:
            return None  # the client's own session, timeouts and retries
        if service in scope.unavailable:
            raise unavailable(service)
        left = scope.deadline.remaining()
        attempt, max_attempts = _attempt(request.headers)
        if attempt > 1 and left < TIERS[0].worst:
            scope.unavailable.add(service)
            raise unavailable(service)  # a retry that cannot fit: stop now
        tier = tier_for(left)
        try:
            return sessions.get(tier).send(request)
        except _UNANSWERED as exc:
            last = max_attempts is None or attempt >= max_attempts  # no header: botocore's legacy mode
            if last or scope.deadline.remaining() < TIERS[0].worst:
                scope.unavailable.add(service)
                raise unavailable(service) from exc
            raise  # botocore retries it (standard mode), within the time left

    def after_call(http_response: Any, parsed: Any, **_: Any) -> None:
        if current() is None or http_response is None or http_response.status_code < 300:
            return
        code = (parsed.get("Error") or {}).get("Code") if isinstance(parsed, dict) else None
        if http_response.status_code >= 500 or code in THROTTLED:
            raise busy(service)  # instead of the ClientError a caller would turn into a generic 500

    event = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{event}", before_send)
    client.meta.events.register(f"after-call.{event}", after_call)
    client._llm_gateway_bounded = True
    return client
