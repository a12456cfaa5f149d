"""The one settings object, validated at cold start.

Every knob the gateway reads from its environment lives here; nothing else in the
package reads ``os.environ``. Names are the environment variables the SAM template
and the local stack set (case-insensitive).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llm_gateway import constants as retry


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # --- AWS resources -------------------------------------------------------------
    table_name: str = "llm-gateway"
    jobs_queue_url: str | None = None
    jobs_parked_queue_url: str | None = None  # where the dead-letter consumer parks messages for a redrive
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    # boto3 honours AWS_ENDPOINT_URL itself; the local stack points it at moto.

    # --- the `default` model alias -----------------------------------------------
    default_model: str = "gpt-4o-mini"
    openai_base_url: str = "https://api.openai.com/v1"
    provider_key_ciphertext: str = ""  # base64 KMS ciphertext, key ref "default"
    default_context_window: int = Field(128_000, gt=0)
    default_input_price_per_1m: float = Field(0.0, ge=0)  # USD per 1M prompt tokens (budgets, /v1/usage)
    default_output_price_per_1m: float = Field(0.0, ge=0)
    # The routing document (see routing.py): SSM parameter > ROUTING_CONFIG (JSON) > file.
    routing_config: str | None = None
    routing_config_ssm_parameter: str | None = None
    routing_config_file: str | None = None  # default: the routing.json shipped in the package
    # Provider key ciphertexts as a JSON object {key_ref: base64 ciphertext}; each is encrypted with
    # an encryption context naming the deployment that uses it (keys.encryption_context).
    provider_keys: str | None = None
    # An upstream 401 decrypts the deployment's key again at most once per this many seconds per key.
    provider_key_refresh_seconds: float = Field(60.0, ge=0)

    # --- conversation history budget (per alias overridable in routing config) ---
    history_max_tokens: int = Field(8_000, gt=0)
    history_max_messages: int = Field(200, gt=0, le=1_000)
    completion_reserve_tokens: int = Field(1_024, gt=0)  # reserved when the request names no max_tokens
    conversation_ttl_days: int = Field(0, ge=0)  # 0 = keep forever
    # A process keeps the newest history window of the conversations it served last (conversations.cache),
    # so a turn on a conversation whose head has not moved since reads no history from DynamoDB: at most
    # this many bytes (stored JSON plus overhead per message), least recently used out first; 0 = off.
    history_cache_bytes: int = Field(4_194_304, ge=0)
    max_messages_per_turn: int = Field(64, gt=0, le=98)  # TransactWriteItems holds 100 items

    # --- request limits -------------------------------------------------------------
    max_body_bytes: int = Field(1_048_576, gt=0)
    max_message_bytes: int = Field(262_144, gt=0)  # keeps every message item far below 400 KB
    # Messages (or Responses input items) one stateless request may send: more is a 400 before any
    # token is counted or any upstream call is made.
    max_messages_per_request: int = Field(2_048, gt=0)

    # --- deadlines and upstream calls --------------------------------------------
    request_deadline_seconds: float = Field(28.0, gt=0)  # REST API buffered limit is 29 s
    stream_deadline_seconds: float = Field(840.0, gt=0)
    deadline_margin_seconds: float = Field(0.5, ge=0)
    connect_timeout_seconds: float = Field(3.05, gt=0)
    read_timeout_seconds: float = Field(60.0, gt=0)
    max_attempts: int = Field(retry.MAX_ATTEMPTS, ge=1, le=10)
    backoff_base_seconds: float = Field(retry.BACKOFF_BASE_SECONDS, gt=0)
    backoff_max_seconds: float = Field(retry.BACKOFF_MAX_SECONDS, gt=0)
    max_retry_after_seconds: float = Field(retry.MAX_RETRY_AFTER_SECONDS, ge=0)
    retry_budget_ratio: float = Field(retry.RETRY_BUDGET_RATIO, ge=0, le=1)
    retry_budget_min_per_second: float = Field(retry.RETRY_BUDGET_MIN_PER_SECOND, ge=0)
    lease_grace_seconds: float = Field(5.0, ge=0)
    # A deployment that fails (retryably) this many times in a row is skipped for cooldown_seconds,
    # per container, while the alias has another deployment to try.
    cooldown_failures: int = Field(3, ge=1)
    cooldown_seconds: float = Field(30.0, ge=0)

    # --- async jobs (POST /v1/jobs -> SQS FIFO -> WorkerFunction) ----------------
    jobs_max_batch: int = Field(100, ge=1, le=100)  # requests per POST /v1/jobs {"requests": [...]}
    job_ttl_days: int = Field(7, ge=0)  # job items (status + result) expire after this; 0 = keep
    idempotency_key_ttl_seconds: int = Field(86_400, gt=0)  # Idempotency-Key replays within 24 h
    job_max_message_bytes: int = Field(262_144, gt=0, le=1_048_576)  # one SQS message (256 KiB)
    # Must equal the JobsQueue RedrivePolicy maxReceiveCount (the template sets both; the expanded-
    # template check compares them): on this receive a still-failing job is marked failed.
    jobs_max_receive_count: int = Field(4, ge=1, le=1000)
    job_deadline_seconds: float = Field(110.0, gt=0)  # per job, capped by the invocation's time left
    job_busy_wait_seconds: float = Field(10.0, ge=0)  # wait for an HTTP turn's lease before redelivery
    job_max_attempts: int = Field(retry.JOB_MAX_ATTEMPTS, ge=1, le=20)  # upstream attempts per delivery
    # A retryable failure redrives the message after this full-jitter delay (ChangeMessageVisibility).
    job_redrive_base_seconds: float = Field(retry.JOB_REDRIVE_BASE_SECONDS, ge=0)
    job_redrive_max_seconds: float = Field(retry.JOB_REDRIVE_MAX_SECONDS, ge=0, le=43_200)
    job_cancel_poll_seconds: float = Field(retry.JOB_CANCEL_POLL_SECONDS, gt=0)  # a running job's cancel watch
    worker_concurrency: int = Field(10, ge=1, le=64)  # message groups processed at once per invocation
    worker_idempotency_ttl_seconds: int = Field(86_400, gt=0)  # Powertools idempotency records
    # A streamed turn holds a short lease and renews it while chunks flow, so a crashed stream
    # blocks its conversation for at most this long. It must exceed the longest silence allowed
    # between chunks (the read timeout) plus the renewal interval.
    stream_lease_seconds: float = Field(90.0, gt=0)
    stream_lease_renew_seconds: float = Field(15.0, gt=0)

    # --- background responses: persisted stream events (llm_gateway.responses.event_log) ------
    response_events_batch: int = Field(10, ge=1, le=100)  # events per DynamoDB write
    response_events_flush_seconds: float = Field(0.5, ge=0)  # a slow stream's events wait at most this
    response_events_poll_seconds: float = Field(0.2, gt=0)  # how often a follower reads new batches
    response_events_ttl_days: int = Field(7, ge=0)  # persisted events expire (the response stays); 0 = keep
    response_cancel_poll_seconds: float = Field(1.0, gt=0)  # a running background response reads its status

    # --- quotas (llm_gateway.quotas) -------------------------------------------------
    # A request reserves its prompt tokens plus its output allowance: max_tokens capped at this, so
    # a huge max_tokens cannot lock a whole budget; reconciled to the real usage after the call.
    quota_output_reserve_tokens: int = Field(4_096, gt=0)
    quota_default_limits: str | None = None  # JSON Limits for tenants with none stored; unset = unlimited
    quota_limits_cache_seconds: float = Field(30.0, ge=0)

    # --- auth --------------------------------------------------------------------
    auth_cache_seconds: float = Field(30.0, ge=0)
    auth_negative_cache_seconds: float = Field(5.0, ge=0)  # an unknown/revoked key is refused from memory

    # --- HTTP -----------------------------------------------------------------------
    # The stage prefix API Gateway adds (the Web Adapter strips it from paths); /docs links use it.
    api_root_path: str = ""
    # Browser origins allowed to call the API (CORS), e.g. CORS_ALLOW_ORIGINS=https://app.example,https://b.example
    # (comma-separated or a JSON list; "*" allows any origin). Empty: no CORS headers at all.
    cors_allow_origins: Annotated[list[str], NoDecode] = []

    # The Lambda Web Adapter sets x-amzn-request-context / x-amzn-lambda-context on every request it
    # forwards (replacing any a client sent); without it in front a client could forge them. Unset:
    # trusted exactly when the adapter runs this process (it sets AWS_LWA_INVOKE_MODE, template.yaml).
    trust_adapter_headers: bool | None = None
    aws_lwa_invoke_mode: str | None = None

    # --- observability -----------------------------------------------------------
    # On: each request's prompt (the messages sent upstream, key-shaped strings redacted) is logged at
    # DEBUG — so it also needs LOG_LEVEL=DEBUG. Off (the default): no prompt or reply is ever logged.
    log_prompts: bool = False
    powertools_service_name: str = "llm-gateway"
    powertools_metrics_namespace: str = "LlmGateway"

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]
        return value

    @property
    def adapter_headers_trusted(self) -> bool:
        if self.trust_adapter_headers is not None:
            return self.trust_adapter_headers
        return bool(self.aws_lwa_invoke_mode)

    @field_validator("openai_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
