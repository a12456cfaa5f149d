"""Anthropic Messages API (``POST /v1/messages``) behind the OpenAI Chat Completions shape.

Request: system/developer messages go to the top-level ``system`` field; ``max_tokens``
is required by Anthropic, so the deployment's ``default_max_tokens`` fills it in;
consecutive messages of one role are merged (Anthropic wants user/assistant turns);
tool results become ``tool_result`` blocks in a user turn, assistant ``tool_calls``
become ``tool_use`` blocks; tools/tool_choice are translated; a JSON ``response_format``
is a forced tool (see :mod:`.json_mode`). Fields Anthropic cannot honour (``n`` > 1,
penalties, logprobs, audio, …) are refused with a 400 naming them.

Response: text blocks are joined, ``tool_use`` blocks become ``tool_calls``,
``stop_reason`` maps to ``finish_reason``, usage is converted (prompt tokens include
cache reads and writes, as OpenAI's ``prompt_tokens`` include cached tokens).

Errors: Anthropic's ``{"type": "error", "error": {"type", "message"}}``; 529
``overloaded_error`` is retried by the router; a 429 whose
``error.details.error_code`` is ``enforced_spend_limit_reached`` is not.

Wire format: https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming, https://docs.anthropic.com/en/api/errors
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from llm_gateway.errors import InvalidRequest
from llm_gateway.providers.base import (
    Timeout,
    UpstreamHTTPError,
    UpstreamReply,
    Usage,
    parse_retry_after,
    token_count,
)
from llm_gateway.providers.body import loads
from llm_gateway.providers.http import post
from llm_gateway.providers.json_mode import JsonChunks, json_reply, json_tool
from llm_gateway.providers.sse import SSEChunkStream, StreamFailure
from llm_gateway.providers.translate import (
    ChunkMaker,
    assistant_message,
    check_params,
    completion,
    data_url,
    function_tools,
    max_tokens,
    refuse,
    split_messages,
    stop_list,
    tool_call,
    usage_from,
)
from llm_gateway.redaction import scrub
from llm_gateway.security.provider_keys import KeyProvider

if TYPE_CHECKING:  # annotations only: providers do not import the upstream layer
    from llm_gateway.upstream.aliases import Deployment

PROVIDER = "anthropic"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error event types in a stream -> the HTTP status the same error has as a response.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url") or "")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    media_type, data = data_url(url, param)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image(part, f"{param}[{j}]"))
        else:
            raise refuse(PROVIDER, f"{param}[{j}]", f"content part '{kind}'")
    return blocks


def to_anthropic(body: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """The Messages API request for an OpenAI Chat Completions request."""
    check_params(body, PROVIDER)
    system, turns = split_messages(
        body["messages"],
        PROVIDER,
        content=_blocks,
        tool_use=lambda id_, name, arguments: {"type": "tool_use", "id": id_, "name": name, "input": arguments},
        tool_result=lambda call_id, text: {"type": "tool_result", "tool_use_id": call_id, "content": text},
    )
    messages = []
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            content = content[0]["text"]  # the plain-string form, as the API reference writes it
        messages.append({"role": turn["role"], "content": content})

    out: dict[str, Any] = {
        "model": deployment.model,
        "max_tokens": max_tokens(body, deployment.default_max_tokens),
        "messages": messages,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(ours) is not None:
            out[theirs] = body[ours]
    stops = stop_list(body)
    if stops:
        out["stop_sequences"] = stops
    tools = function_tools(body, PROVIDER)
    if tools:
        out["tools"] = [
            {
                k: v
                for k, v in (("name", t["name"]), ("description", t["description"]), ("input_schema", t["parameters"]))
                if v is not None
            }
            for t in tools
        ]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("stream"):
        out["stream"] = True
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise InvalidRequest("Invalid 'tool_choice'.", param="tool_choice")


def usage_of(usage: dict[str, Any] | None) -> Usage:
    return usage_from(
        usage, ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"), "output_tokens"
    )


def from_anthropic(data: dict[str, Any]) -> UpstreamReply:
    """An OpenAI ``chat.completion`` for a Messages API response."""
    text, calls = [], []
    for block in data.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
    usage = usage_of(data.get("usage"))
    finish = FINISH_REASONS.get(data.get("stop_reason") or "", "stop")
    return UpstreamReply(
        completion(data.get("model", ""), assistant_message(text, calls), finish, usage, data.get("id")), usage
    )


class StreamTranslator:
    """Messages API stream events -> OpenAI chunks. ``done`` once ``message_stop`` arrived."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.chunks = ChunkMaker(model)
        self.include_usage = include_usage
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.suspect: tuple[str, ...] = ()
        self.done = False

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.suspect)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.chunks.id = message.get("id") or self.chunks.id
            self.chunks.model = message.get("model") or self.chunks.model
            usage = usage_of(message.get("usage"))
            self.prompt_tokens, self.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            self.suspect = usage.suspect
            return []  # the role goes out with the first delta, so an early error can still fall back
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                return [self.chunks.tool_call_start(event.get("index", 0), block.get("id"), block.get("name"))]
            if block.get("type") == "text" and block.get("text"):
                return [self.chunks.chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self.chunks.chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                return [self.chunks.tool_call_arguments(event.get("index", 0), delta.get("partial_json", ""))]
            return []  # thinking / signature deltas: not requested by this gateway
        if kind == "message_delta":
            counters = event.get("usage")
            if isinstance(counters, dict) and counters.get("output_tokens") is not None:
                output = token_count(counters["output_tokens"])  # cumulative
                if output is None:
                    self.suspect = (*self.suspect, "completion_tokens")
                else:
                    self.completion_tokens = output
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                return [self.chunks.chunk({}, FINISH_REASONS.get(reason, "stop"))]
            return []
        if kind == "message_stop":
            self.done = True
            return [self.chunks.usage(self.usage)] if self.include_usage else []
        return []  # ping, content_block_stop, and event types added later


class AnthropicEvents:
    """The Messages API's stream events for :class:`~.sse.SSEChunkStream`: complete at ``message_stop``.

    An ``error`` event before the first chunk is the error the same failure has as a response
    (``overloaded_error`` -> a retryable 529); after it, the stream fails with reason ``error``.
    """

    def __init__(self, translator: StreamTranslator, secret: str | None) -> None:
        self.translator = translator
        self.secret = secret

    @property
    def done(self) -> bool:
        return self.translator.done

    def feed(self, data: str) -> list[dict[str, Any]]:
        try:
            event = loads(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise StreamFailure("malformed", "The upstream sent a malformed event.")
        if event.get("type") == "error":
            error: dict[str, Any] = event["error"] if isinstance(event.get("error"), dict) else {}
            failure = error_from_body(ERROR_STATUSES.get(str(error.get("type")), 502), event, None, self.secret)
            raise StreamFailure("error", f"The upstream stream failed: {failure.message}", before_start=failure)
        return self.translator.feed(event)

    def end(self) -> None:
        if not self.translator.done:
            raise StreamFailure(
                "cut",
                "The upstream stream ended before the reply was complete.",
                before_start=UpstreamHTTPError(502, "The upstream stream ended before it began."),
            )


def error_from_body(status: int, payload: Any, headers: Any, secret: str | None) -> UpstreamHTTPError:
    message, code = f"Upstream returned HTTP {status}.", None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or message)
        details: dict[str, Any] = error["details"] if isinstance(error.get("details"), dict) else {}
        code = details.get("error_code") or error.get("type")
    return UpstreamHTTPError(
        status,
        scrub(message, secret),
        code=code,
        retry_after=parse_retry_after(headers) if headers is not None else None,
    )


class AnthropicProvider:
    def __init__(self, deployment: Deployment, keys: KeyProvider, session: requests.Session | None = None):
        self.deployment = deployment
        self.name = deployment.name
        self.keys = keys
        self.session = session or requests.Session()
        self.url = deployment.url + "/v1/messages"

    def _headers(self, key: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "x-api-key": key,
            "anthropic-version": self.deployment.version or "2023-06-01",
        }

    def _post(self, payload: dict[str, Any], timeout: Timeout, stream: bool) -> tuple[requests.Response, str]:
        ref = self.deployment.key_ref
        assert ref is not None  # routing requires a key ref for anthropic
        key = self.keys.get(ref)
        resp = post(self.session, self.url, json=payload, headers=self._headers(key), timeout=timeout, stream=stream)
        if resp.status_code == 401:
            fresh = self.keys.refresh(ref)  # rotated key: decrypt again (at most once per interval)
            if fresh != key:  # the same key again cannot help: no re-attempt
                resp.close()
                key = fresh
                resp = post(
                    self.session, self.url, json=payload, headers=self._headers(key), timeout=timeout, stream=stream
                )
        if resp.status_code >= 400:
            try:
                payload_ = loads(resp.content)
            except (ValueError, UpstreamHTTPError):
                payload_ = None
            finally:
                resp.close()
            raise error_from_body(resp.status_code, payload_, resp.headers, key)
        return resp, key

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        body, json_tool_name = json_tool(body, PROVIDER)
        payload = to_anthropic({**body, "stream": False}, self.deployment)
        resp, _ = self._post(payload, timeout, stream=False)
        try:
            data = loads(resp.content)
            if data.get("type") != "message":
                raise ValueError("not a message")
            reply = from_anthropic(data)
        except (ValueError, AttributeError, TypeError) as exc:
            raise UpstreamHTTPError(502, "Upstream returned a malformed message.") from exc
        return json_reply(reply, json_tool_name) if json_tool_name else reply

    def stream(self, body: dict[str, Any], timeout: Timeout) -> SSEChunkStream | JsonChunks:
        """One streamed attempt (see :meth:`Provider.stream`); nothing is sent until the first ``next()``."""
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body, json_tool_name = json_tool(body, PROVIDER)
        payload = to_anthropic({**body, "stream": True}, self.deployment)

        def open_response() -> tuple[requests.Response, str]:
            return self._post(payload, timeout, stream=True)

        def decoder(key: str | None) -> AnthropicEvents:
            return AnthropicEvents(StreamTranslator(self.deployment.model, include_usage), key)

        chunks = SSEChunkStream(open_response, decoder)
        return JsonChunks(chunks) if json_tool_name else chunks
