"""What a turn and a stream did, for metrics and logs: counts, ids, timings — never content.

The chat service and the stream fill these in; observability reads them. Neither side imports
the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class CallStats:
    """What one request's upstream calls cost, for metrics and the response."""

    attempts: int = 0
    retries: int = 0
    stopped_by: str | None = None  # "attempts" | "deadline" | "budget" | "retry_after"
    errors: dict[str, int] = field(default_factory=dict)
    upstream_seconds: float = 0.0
    fallbacks: int = 0  # attempts that went to another deployment after a failure
    cooled_down: int = 0  # deployments skipped because they were cooling down

    def error(self, error_class: str) -> None:
        self.errors[error_class] = self.errors.get(error_class, 0) + 1


# Bounded: each becomes a metric name (StreamOutcome_<outcome>).
STREAM_OUTCOMES = ("complete", "upstream_error", "client_disconnect", "commit_failed", "internal_error")


@dataclass
class StreamReport:
    """What a stream did, for metrics (no content). Times are ms since the request arrived."""

    started: float  # time.perf_counter() when the request arrived
    outcome: str | None = None  # one of STREAM_OUTCOMES once ended
    first_chunk_ms: float | None = None
    first_token_ms: float | None = None
    duration_ms: float | None = None
    chunks: int = 0

    def since_start_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


@dataclass
class TurnReport:
    """What a turn did, for metrics and logs (no content)."""

    alias: str = ""
    deployment: str | None = None  # the deployment that answered
    provider: str | None = None
    stats: CallStats = field(default_factory=CallStats)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    usage_replaced: bool = False  # an implausible upstream usage counter was replaced by our own count
    history_messages: int = 0
    history_items_read: int = 0
    history_cache_hit: bool | None = None  # the history came from the process's cache (None: no cache)
    conversation: bool = False
    stream: StreamReport | None = None  # set for streamed turns
    key_id: str | None = None  # input, set by the view: the gateway key the turn counts against
    rate_headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* for the response
