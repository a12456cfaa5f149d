"""Responses streaming: chat chunks in, OpenAI's typed events (with ``sequence_number``) out.

:class:`EventBuilder` turns the chunks of one streamed chat turn into the event sequence
OpenAI sends — ``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` → (``content_part.added``, ``output_text.delta``…,
``output_text.done``, ``content_part.done``) or (``function_call_arguments.delta``…,
``function_call_arguments.done``) → ``response.output_item.done``, and finally
``response.completed`` / ``response.incomplete`` — or ``response.failed``. The output items
it builds are the ones stored, so the stored response equals what was streamed.

:class:`ResponseEventStream` drives a :class:`ChatStream` (which owns the upstream,
the deadline and the commit) and yields those events, one step at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from llm_gateway.chat.streaming import ChatStream, StreamReport
from llm_gateway.errors import GatewayError
from llm_gateway.responses.translate import (
    function_call_item,
    incomplete_details,
    message_item,
    new_id,
    output_text_part,
    response_error,
)

Event = dict[str, Any]


class EventBuilder:
    """Events and output items of one streamed response (see the module docstring)."""

    def __init__(self, snapshot: Callable[..., dict[str, Any]]) -> None:
        # snapshot(status=, output=, usage=, error=, incomplete=, service_tier=) -> the Response object
        # (service_tier: what the upstream reported, or None; the snapshot decides what to show)
        self.snapshot = snapshot
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self._open: int | None = None  # output index of the item being streamed
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._text: dict[int, list[str]] = {}  # output index -> text deltas
        self._refusal: dict[int, list[str]] = {}
        self.final: dict[str, Any] | None = None
        self._closing: list[Event] = []
        self.service_tier: str | None = None  # the tier the upstream's chunks said it served with

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self, *, created: bool = True) -> list[Event]:
        """``response.created`` (unless a background response's submission sent it) and
        ``response.in_progress``."""
        response = self.snapshot(status="in_progress", output=[], usage=None, service_tier=self.service_tier)
        opening = [self._event("response.created", response=response)] if created else []
        return [*opening, self._event("response.in_progress", response=response)]

    # ---- chunks -------------------------------------------------------------------
    def chunk(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if isinstance(chunk.get("service_tier"), str):
            self.service_tier = chunk["service_tier"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                events += self._text_delta(delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                events += self._refusal_delta(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                events += self._call_delta(call)
        return events

    def _message(self) -> tuple[int, list[Event]]:
        if self._open is not None and self.output[self._open]["type"] == "message":
            return self._open, []
        events = self._close()
        index = len(self.output)
        self.output.append(message_item(new_id("msg"), [], "in_progress"))
        self._open = index
        events.append(self._event("response.output_item.added", output_index=index, item=_copy(self.output[index])))
        return index, events

    def _text_delta(self, text: str) -> list[Event]:
        index, events = self._message()
        item = self.output[index]
        if index not in self._text:
            if index in self._refusal:  # a text part after a refusal part: close the refusal first
                events += self._close_refusal(index)
            self._text[index] = []
            item["content"].append(output_text_part(""))
            events.append(self._part_event("response.content_part.added", index, output_text_part("")))
        self._text[index].append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=index,
                content_index=len(item["content"]) - 1,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _refusal_delta(self, text: str) -> list[Event]:
        index, events = self._message()
        item = self.output[index]
        if index not in self._refusal:
            if index in self._text:
                events += self._close_text(index)
            self._refusal[index] = []
            item["content"].append({"type": "refusal", "refusal": ""})
            events.append(self._part_event("response.content_part.added", index, {"type": "refusal", "refusal": ""}))
        self._refusal[index].append(text)
        events.append(
            self._event(
                "response.refusal.delta",
                item_id=item["id"],
                output_index=index,
                content_index=len(item["content"]) - 1,
                delta=text,
            )
        )
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        key = int(call.get("index", 0))
        function = call.get("function") or {}
        if key not in self._calls:
            events += self._close()
            index = len(self.output)
            self.output.append(
                function_call_item(
                    new_id("fc"), call.get("id") or new_id("call"), function.get("name") or "", "", "in_progress"
                )
            )
            self._calls[key] = self._open = index
            events.append(self._event("response.output_item.added", output_index=index, item=_copy(self.output[index])))
        else:
            index = self._calls[key]
            item = self.output[index]
            if call.get("id"):
                item["call_id"] = call["id"]
            if function.get("name"):
                item["name"] += function["name"]
        item = self.output[index]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            events.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments
                )
            )
        return events

    # ---- closing items ------------------------------------------------------------------
    def _part_event(self, kind: str, index: int, part: dict[str, Any]) -> Event:
        item = self.output[index]
        return self._event(
            kind, item_id=item["id"], output_index=index, content_index=len(item["content"]) - 1, part=part
        )

    def _close_text(self, index: int) -> list[Event]:
        item = self.output[index]
        text = "".join(self._text.pop(index))
        position = next(i for i, p in enumerate(item["content"]) if p["type"] == "output_text" and p["text"] == "")
        part = output_text_part(text)
        item["content"][position] = part
        common = {"item_id": item["id"], "output_index": index, "content_index": position}
        return [
            self._event("response.output_text.done", **common, text=text, logprobs=[]),
            self._event("response.content_part.done", **common, part=_copy(part)),
        ]

    def _close_refusal(self, index: int) -> list[Event]:
        item = self.output[index]
        text = "".join(self._refusal.pop(index))
        position = next(i for i, p in enumerate(item["content"]) if p["type"] == "refusal" and p["refusal"] == "")
        part = {"type": "refusal", "refusal": text}
        item["content"][position] = part
        common = {"item_id": item["id"], "output_index": index, "content_index": position}
        return [
            self._event("response.refusal.done", **common, refusal=text),
            self._event("response.content_part.done", **common, part=_copy(part)),
        ]

    def _close(self, status: str = "completed") -> list[Event]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        item = self.output[index]
        events: list[Event] = []
        if item["type"] == "message":
            if index in self._text:
                events += self._close_text(index)
            if index in self._refusal:
                events += self._close_refusal(index)
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        item["status"] = status
        events.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        return events

    # ---- the end -------------------------------------------------------------------------
    def finish(self, usage: dict[str, Any] | None, finish_reason: str | None) -> dict[str, Any]:
        """Close the open item and build the final Response (what is stored, then sent last)."""
        incomplete = incomplete_details(finish_reason)
        events: list[Event] = []
        if not self.output:  # an empty reply is still one (empty) message, as when not streamed
            events += self._text_delta_empty()
        events += self._close("incomplete" if incomplete else "completed")
        status = "incomplete" if incomplete else "completed"
        self.final = self.snapshot(
            status=status, output=self.output, usage=usage, incomplete=incomplete, service_tier=self.service_tier
        )
        self._closing = events
        return self.final

    def _text_delta_empty(self) -> list[Event]:
        index, events = self._message()
        self._text[index] = []
        self.output[index]["content"].append(output_text_part(""))
        events.append(self._part_event("response.content_part.added", index, output_text_part("")))
        return events

    def completed(self) -> list[Event]:
        """The closing events, once :meth:`finish` built (and the commit stored) the response."""
        assert self.final is not None
        kind = "response.incomplete" if self.final["status"] == "incomplete" else "response.completed"
        return [*self._closing, self._event(kind, response=self.final)]

    def failed(self, exc: GatewayError | None) -> list[Event]:
        """The stream broke after its first byte: ``response.failed``; nothing was stored."""
        for item in self.output:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        response = self.snapshot(
            status="failed", output=self.output, usage=None, error=response_error(exc), service_tier=self.service_tier
        )
        return [self._event("response.failed", response=response)]


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(value)


class ResponseEventStream:
    """Iterate the events of a streamed response; always :meth:`close` it.

    The first step yields ``response.created`` and ``response.in_progress``; the chat
    stream's completion (which commits the stored response) yields the closing events.
    """

    def __init__(self, chat: ChatStream, builder: EventBuilder, response_id: str, *, created: bool = True) -> None:
        self.chat = chat
        self.builder = builder
        self.response_id = response_id
        self.created = created  # False: a background response's submission sent response.created
        self._started = False
        self._done = False

    @property
    def stats(self) -> StreamReport:
        return self.chat.stats

    @property
    def done(self) -> bool:
        """The terminal event has been returned: :meth:`next_events` has nothing more."""
        return self._done

    def next_events(self) -> list[Event] | None:
        if not self._started:
            self._started = True
            return self.builder.start(created=self.created)
        if self._done:
            return None
        try:
            chunk = self.chat.next_chunk()
        except GatewayError as exc:
            self._done = True
            return self.builder.failed(exc)
        except Exception:
            self._done = True
            raise
        if chunk is None:
            self._done = True
            return self.builder.completed()
        return self.builder.chunk(chunk)

    def fail_internal(self) -> list[Event]:
        self._done = True
        return self.builder.failed(None)

    def abort(self) -> None:
        self.chat.abort()

    def close(self) -> None:
        self.chat.close()
