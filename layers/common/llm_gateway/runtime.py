"""The composition root: settings in, wired services out, built once per container."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import threading
from dataclasses import dataclass
from typing import Any

import requests

from llm_gateway.aws.bounded import bound
from llm_gateway.chat.catalog import ModelCatalog
from llm_gateway.chat.conversations import ConversationService
from llm_gateway.chat.service import ChatService
from llm_gateway.conversations.cache import CachedConversationStore, HistoryCache
from llm_gateway.conversations.records import ConversationStore
from llm_gateway.conversations.store import DynamoConversationStore
from llm_gateway.errors import ConfigurationError
from llm_gateway.jobs.response_queue import ResponseJobQueue
from llm_gateway.jobs.service import JobService
from llm_gateway.jobs.store import DynamoJobStore
from llm_gateway.observability import logger
from llm_gateway.providers import build_provider
from llm_gateway.providers.http import UpstreamSession
from llm_gateway.providers.watchdog import watched
from llm_gateway.quotas.admin import AdminService
from llm_gateway.quotas.counters import DynamoCounterStore
from llm_gateway.quotas.limits import DynamoLimitsStore, parse_limits
from llm_gateway.quotas.service import QuotaService
from llm_gateway.quotas.writer import COALESCE_SECONDS, UsageWriter
from llm_gateway.responses.background import BackgroundResponses
from llm_gateway.responses.event_log import DynamoEventLog
from llm_gateway.responses.service import ResponseService
from llm_gateway.responses.store import DynamoResponseStore
from llm_gateway.security.api_keys import ApiKeyStore, Authenticator
from llm_gateway.security.provider_keys import KeyProvider, KmsKeyProvider
from llm_gateway.settings import Settings
from llm_gateway.upstream.aliases import DEFAULT_KEY_REF, Routing, load_routing
from llm_gateway.upstream.retry import RetryBudget, RetryPolicy
from llm_gateway.upstream.router import Cooldowns, Router


@dataclass
class Services:
    settings: Settings
    routing: Routing
    chat: ChatService
    conversations: DynamoConversationStore
    auth: Authenticator
    keys: KeyProvider
    jobs: JobService
    conversation_service: ConversationService
    responses: ResponseService
    quotas: QuotaService
    admin: AdminService
    models: ModelCatalog
    background: BackgroundResponses


def key_ciphertexts(settings: Settings) -> dict[str, str]:
    ciphertexts: dict[str, str] = {}
    if settings.provider_keys:
        try:
            ciphertexts.update(json.loads(settings.provider_keys))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigurationError("PROVIDER_KEYS must be a JSON object of key ref -> ciphertext") from exc
    if settings.provider_key_ciphertext:
        ciphertexts[DEFAULT_KEY_REF] = settings.provider_key_ciphertext
    return ciphertexts


def build_services(
    settings: Settings,
    *,
    dynamodb: Any = None,
    kms: Any = None,
    sqs: Any = None,
    session: requests.Session | None = None,
    keys: KeyProvider | None = None,
    policy: RetryPolicy | None = None,
    ssm: Any = None,
    bedrock: Any = None,
    cooldowns: Cooldowns | None = None,
) -> Services:
    routing = load_routing(settings, ssm_client=ssm)
    # Clients handed in (tests, the local stack) are bounded by the request's deadline like the defaults.
    dynamodb, kms, sqs = (bound(c) if c is not None else None for c in (dynamodb, kms, sqs))
    if keys is None:
        kms_keys = KmsKeyProvider(
            key_ciphertexts(settings),
            client=kms,
            deployments=routing.key_contexts(),
            refresh_interval=settings.provider_key_refresh_seconds,
        )
        routing.check_keys(kms_keys.refs())
        keys = kms_keys
    session = session or watched(UpstreamSession())  # the wait for a reply's headers ends at the deadline
    providers = {
        name: build_provider(
            deployment,
            keys,
            session,
            region=settings.aws_region,
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            bedrock_client=bedrock,
        )
        for name, deployment in routing.deployments().items()
    }
    policy = policy or RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_base=settings.backoff_base_seconds,
        backoff_max=settings.backoff_max_seconds,
        max_retry_after=settings.max_retry_after_seconds,
        log=logger,
        budget=RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_second),
    )
    router = Router(
        providers,
        policy,
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        cooldowns=cooldowns or Cooldowns(settings.cooldown_failures, settings.cooldown_seconds),
        prompt_log=logger if settings.log_prompts else None,
    )
    store = DynamoConversationStore(settings.table_name, client=dynamodb, ttl_days=settings.conversation_ttl_days)
    auth = Authenticator(
        ApiKeyStore(settings.table_name, client=store.client),
        settings.auth_cache_seconds,
        negative_cache_seconds=settings.auth_negative_cache_seconds,
    )
    counters = DynamoCounterStore(settings.table_name, store.client)
    quotas = QuotaService(
        counters,
        DynamoLimitsStore(
            settings.table_name,
            store.client,
            defaults=parse_limits(settings.quota_default_limits),
            cache_seconds=settings.quota_limits_cache_seconds,
        ),
        output_reserve_tokens=settings.quota_output_reserve_tokens,
        writer=UsageWriter(
            counters, min_interval=COALESCE_SECONDS
        ),  # unlimited usage off the reply's path (quotas.writer)
    )
    turns: ConversationStore = store
    if settings.history_cache_bytes:
        turns = CachedConversationStore(store, HistoryCache(settings.history_cache_bytes))
    chat = ChatService(turns, routing, router, settings, quotas)

    def sqs_client() -> Any:  # built on the first job submission, not at cold start
        if sqs is not None:
            return sqs
        from llm_gateway.aws import client as aws_client

        return aws_client("sqs")

    jobs = JobService(
        settings,
        DynamoJobStore(settings.table_name, store.client, ttl_days=settings.job_ttl_days),
        store,
        chat.validate,
        sqs_client,
        settings.jobs_queue_url,
    )
    events = DynamoEventLog(settings.table_name, store.client, ttl_days=settings.response_events_ttl_days)
    responses = ResponseService(
        chat, DynamoResponseStore(settings.table_name, store.client, ttl_days=settings.conversation_ttl_days), events
    )
    background = BackgroundResponses(
        responses, events, ResponseJobQueue(settings, jobs.store, sqs_client, settings.jobs_queue_url)
    )
    conversation_service = ConversationService(turns, chat)
    admin = AdminService(auth.keys, quotas.limits, quotas.counters, drain=quotas.drain)
    return Services(
        settings,
        routing,
        chat,
        store,
        auth,
        keys,
        jobs,
        conversation_service,
        responses,
        quotas,
        admin,
        ModelCatalog(routing),
        background,
    )


# Young-generation threshold once the start-up heap is frozen: a request allocates a few thousand
# container objects, so the default (700) collects several times within one request and promotes
# its short-lived objects into the older generations, where full collections must walk them.
GC_THRESHOLDS = (10_000, 20, 20)


def settle_heap() -> None:
    """Once start-up is done: move every object built so far (modules, botocore's service models,
    pydantic's and FastAPI's schemas, the routing) out of the collector's reach, and collect the
    young generation less often.

    Before this, the first full collection came a few hundred to a couple of thousand requests
    after start and walked that whole start-up heap (50–250 ms on one request: the p99 stall of
    a fresh container). Frozen objects are never scanned or freed; they live as long as the
    process anyway. No ``gc.collect()`` first: it would cost the cold start a full collection.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc.enable()


def warm_up(services: Services) -> threading.Thread:
    """Start, in the background, what the first turn would otherwise wait for: the DynamoDB client's
    first request, each provider key's KMS client and Decrypt (network-bound) and the token
    counter's encoding (CPU-bound, ~0.1–0.5 s).

    Safe to race a request: both are built under a lock, so a request needing one waits for it
    instead of doing it twice, and a failure here is dropped — the request that needs the key
    then fails (or succeeds) exactly as it would have without the warm-up.
    """
    from llm_gateway.chat.tokens import warm as warm_tokens

    def run() -> None:
        try:  # the DynamoDB client's first request: its endpoint rules, shapes and connection
            services.auth.keys.lookup("llm-gateway-warm-up")  # a key nobody has: one read, no write
        except Exception as exc:
            logger.warning("DynamoDB warm-up failed", extra={"error_type": type(exc).__name__})
        for ref in services.routing.key_refs():
            try:
                services.keys.get(ref)
            except Exception as exc:  # the first request that needs the key reports it
                logger.warning("provider key warm-up failed", extra={"key_ref": ref, "error_type": type(exc).__name__})
        warm_tokens()
        release_free_memory()

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's ``malloc_trim``): start-up leaves
    megabytes of freed transients (the encoding file's text, botocore's JSON) that RSS still counts."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
