"""A turn's quota hook: one reservation before the upstream call, one settlement after it.

Every view of a turn (Chat Completions, Responses, jobs; streamed or not) passes through
ChatService, which calls :func:`admit` once the prompt is known and :func:`settle` when the
call is over (a stream settles in ChatStream when it ends).
"""

from __future__ import annotations

from typing import Any

from llm_gateway.chat.models import ChatCompletionRequest
from llm_gateway.chat.tokens import TOKENS_PER_REPLY, count_message
from llm_gateway.deadline import Deadline
from llm_gateway.quotas.service import Hold, QuotaService
from llm_gateway.reports import TurnReport
from llm_gateway.upstream.aliases import ModelAlias

# A request holds its concurrency slot for its deadline plus this, so a crashed holder frees it.
SLOT_GRACE_SECONDS = 5.0


def prompt_count(messages: list[dict[str, Any]]) -> int:
    """Our own count of a stateless turn's prompt, as the upstream will bill it."""
    return sum(count_message(m) for m in messages) + TOKENS_PER_REPLY


def admit(
    quotas: QuotaService | None,
    tenant: str,
    alias: ModelAlias,
    request: ChatCompletionRequest,
    prompt_tokens: int,
    deadline: Deadline,
    report: TurnReport,
) -> Hold | None:
    """Reserve the turn's estimate on the tenant's and key's limits (a 429 when over one)."""
    if quotas is None:
        return None
    hold = quotas.admit(
        tenant,
        report.key_id,
        alias,
        prompt_tokens,
        request.max_completion_tokens or request.max_tokens,
        deadline.remaining() + SLOT_GRACE_SECONDS,
        choices=request.n or 1,
    )
    report.rate_headers = hold.headers
    return hold


def settle(hold: Hold | None, report: TurnReport) -> None:
    """Reconcile to what the turn used (nothing, when the upstream call failed)."""
    if hold is not None:
        hold.settle(report.prompt_tokens, report.completion_tokens, report.cost_usd)


def settlement_items(hold: Hold | None, report: TurnReport) -> list[dict[str, Any]] | None:
    """The settlement as TransactWriteItems entries for the turn's commit (None: settle on its own)."""
    if hold is None:
        return None
    return hold.transaction_items(report.prompt_tokens, report.completion_tokens, report.cost_usd)
