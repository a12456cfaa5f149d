"""What a turn used, as the gateway believes it: the upstream's counts when they are plausible,
else its own (issue 13: nothing trusted from upstream).

The one place where provider usage becomes the turn's usage — what is billed (quota
settlement, counters, cost), what a stored reply costs as history (so trimming and the history
budget hold), what the client is shown in ``usage`` — for every view, streamed or not.

A counter is replaced by our own count when the provider layer could not believe it (negative,
huge, non-integer, ``1e400``: :class:`~llm_gateway.providers.base.Usage.suspect`), when it is
0 (not reported), or when it is implausible for this turn: more than twice the context window (per
choice for the completion), or under a quarter of our own count (no tokenizer is four times as
dense as ours, and reasoning tokens only add). Replacing an implausible counter is reported
(``TurnReport.usage_replaced``, the ``UpstreamUsageReplaced`` metric); filling in a missing one
is ordinary (a stream whose client did not ask for usage reports none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llm_gateway.chat.tokens import count_text
from llm_gateway.providers.base import UpstreamReply, Usage, token_count
from llm_gateway.reports import TurnReport
from llm_gateway.upstream.router import RoutedReply

IMPLAUSIBLE_FACTOR = 4  # a reported count below ours / this is not believed
WINDOW_FACTOR = 2  # nor one above this many context windows


def reply_count(message: dict[str, Any]) -> int:
    """Our count of a reply's tokens: its text, refusal and tool calls (names and arguments)."""
    total = 0
    for key in ("content", "refusal"):
        if isinstance(message.get(key), str):
            total += count_text(message[key])
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += count_text(str(function.get("name") or "") + str(function.get("arguments") or ""))
    return total


def believed(
    reported: Usage | None,
    *,
    context_window: int,
    prompt: Callable[[], int],
    completion: Callable[[], int],
    choices: int = 1,
) -> tuple[Usage, bool]:
    """The turn's usage and whether an implausible upstream counter was replaced.

    ``prompt`` / ``completion`` give our own counts (a turn's prompt count is known already, a
    reply's is counted here); ``context_window`` is the answering deployment's."""
    reported = reported or Usage()
    window = context_window * WINDOW_FACTOR
    ours_prompt, ours_completion = prompt(), completion()
    replaced = False

    def pick(name: str, value: int, ours: int, ceiling: int) -> int:
        nonlocal replaced
        if value == 0 and name not in reported.suspect:
            return ours  # not reported
        if name in reported.suspect or value > ceiling or value < ours // IMPLAUSIBLE_FACTOR:
            replaced = True
            return ours
        return value

    usage = Usage(
        pick("prompt_tokens", reported.prompt_tokens, ours_prompt, window),
        pick("completion_tokens", reported.completion_tokens, ours_completion, window * max(1, choices)),
    )
    return usage, replaced


def usage_body(raw: Any, usage: Usage) -> dict[str, Any]:
    """The ``usage`` object shown to the client: our believed counts, and of the upstream's
    details (``prompt_tokens_details``, ``completion_tokens_details``) only believable counters."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if isinstance(raw, dict):
        for key in ("prompt_tokens_details", "completion_tokens_details"):
            details = raw.get(key)
            if isinstance(details, dict):
                counts = {k: token_count(v) for k, v in details.items() if isinstance(k, str)}
                kept = {k: v for k, v in counts.items() if v is not None and v <= usage.total_tokens}
                if kept:
                    out[key] = kept
    return out


def believed_reply(routed: RoutedReply, prompt_tokens: int, choices: int, report: TurnReport) -> RoutedReply:
    """A non-streamed reply with the usage the gateway believes, in its body too (the client, the
    Responses view and the stored reply all read it from there); ``report`` takes the counts."""
    choice = routed.reply.body["choices"][0]
    message = choice.get("message") or {}
    usage, replaced = believed(
        routed.reply.usage,
        context_window=routed.deployment.context_window,
        prompt=lambda: prompt_tokens,
        completion=lambda: reply_count(message),
        choices=choices,
    )
    body = {**routed.reply.body, "usage": usage_body(routed.reply.body.get("usage"), usage)}
    report.usage_replaced = report.usage_replaced or replaced
    report.prompt_tokens, report.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    report.cost_usd = routed.deployment.cost(usage.prompt_tokens, usage.completion_tokens)
    return RoutedReply(UpstreamReply(body, usage), routed.deployment)
