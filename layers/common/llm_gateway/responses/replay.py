"""The event sequence of a stored response that has no persisted events.

``GET /v1/responses/{id}?stream=true`` replays a response's events. A background response's
events are persisted as they were produced (:mod:`llm_gateway.responses.event_log`); any other
stored response is replayed as the sequence a stream of it would have sent — the same event
types, in the same order, with the stored item ids and each text or argument string as one
delta — so ``starting_after`` means the same on every replay.
"""

from __future__ import annotations

import itertools
from typing import Any

Event = dict[str, Any]

_FINAL = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def stored_events(response: dict[str, Any]) -> list[Event]:
    """The events of a finished response, ``sequence_number`` from 0."""
    numbers = itertools.count()
    events: list[Event] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": next(numbers), **fields})

    start = {
        **response,
        "status": "in_progress",
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    for index, item in enumerate(response.get("output") or ()):
        emit("response.output_item.added", output_index=index, item=_opening(item))
        common = {"item_id": item.get("id"), "output_index": index}
        if item.get("type") == "message":
            for position, part in enumerate(item.get("content") or ()):
                at = {**common, "content_index": position}
                if part.get("type") == "refusal":
                    emit("response.content_part.added", **at, part={"type": "refusal", "refusal": ""})
                    emit("response.refusal.delta", **at, delta=part.get("refusal", ""))
                    emit("response.refusal.done", **at, refusal=part.get("refusal", ""))
                else:
                    text = part.get("text", "")
                    empty = {**part, "text": "", "annotations": [], "logprobs": []}
                    emit("response.content_part.added", **at, part=empty)
                    emit("response.output_text.delta", **at, delta=text, logprobs=[])
                    emit("response.output_text.done", **at, text=text, logprobs=[])
                emit("response.content_part.done", **at, part=part)
        elif item.get("type") == "function_call":
            emit("response.function_call_arguments.delta", **common, delta=item.get("arguments", ""))
            emit("response.function_call_arguments.done", **common, arguments=item.get("arguments", ""))
        emit("response.output_item.done", output_index=index, item=item)
    kind = _FINAL.get(str(response.get("status")))
    if kind is not None:
        emit(kind, response=response)
    return events


def opening_events(response: dict[str, Any]) -> list[Event]:
    """Events 0 and 1 of a background response — ``response.created`` and ``response.queued``, the
    response as submitted — derived from its stored record (which differs from the submitted one
    only in status, output, usage, error, incomplete_details, completed_at), never written."""
    queued = {
        **response,
        "status": "queued",
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    return [
        {"type": "response.created", "sequence_number": 0, "response": queued},
        {"type": "response.queued", "sequence_number": 1, "response": queued},
    ]


def _opening(item: dict[str, Any]) -> dict[str, Any]:
    """An output item as ``output_item.added`` shows it: in progress, nothing streamed yet."""
    if item.get("type") == "message":
        return {**item, "status": "in_progress", "content": []}
    if item.get("type") == "function_call":
        return {**item, "status": "in_progress", "arguments": ""}
    return {**item, "status": "in_progress"}
