"""Amazon Bedrock Converse / ConverseStream (boto3 ``bedrock-runtime``) behind the OpenAI shape.

Authentication is the function's IAM role (no key). The client is passed in, or built
on first use (so a cold start that never calls Bedrock does not pay for it) with
botocore's own retries off — the router's policy is the one retry layer — and the
deployment's timeouts and proxy. The client's transport is fitted (:mod:`.botocore_http`) with
the HTTP providers' body caps (a reply 8 MiB, an error body 64 KiB, a stream 32 MiB and an event
8 MiB), the deadline watchdog on the wait for the reply's headers (and a non-streamed body read
within the time left), a cancelled job's :class:`~.watchdog.CallScope`, and a stream's
``abort()``; botocore's own per-read timeout is the deployment's read timeout.

Errors map to statuses the router understands: ``ThrottlingException`` → 429 and
``ModelNotReadyException`` / ``ServiceUnavailableException`` → 503 (retried);
``ModelTimeoutException`` → 408 (retried); ``ValidationException`` → 400 (not retried);
``ServiceQuotaExceededException`` → a 429 that is not retried; connection errors and
timeouts become the provider protocol's ``UpstreamConnectionError`` / ``UpstreamTimeout``.

Wire format: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html,
https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStream.html
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from llm_gateway.errors import InvalidRequest
from llm_gateway.providers.base import (
    Timeout,
    UpstreamConnectionError,
    UpstreamFailure,
    UpstreamHTTPError,
    UpstreamReply,
    UpstreamReplyTooLarge,
    UpstreamStreamError,
    UpstreamTimeout,
    Usage,
)
from llm_gateway.providers.botocore_http import Exchange, bounded, forget_exchange, last_exchange
from llm_gateway.providers.json_mode import JsonChunks, json_reply, json_tool
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

if TYPE_CHECKING:  # annotations only: providers do not import the upstream layer
    from llm_gateway.upstream.aliases import Deployment

PROVIDER = "bedrock"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
ERROR_STATUSES = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ThrottlingException": 429,
    "ServiceQuotaExceededException": 429,
    "ModelErrorException": 502,
    "InternalServerException": 500,
    "ModelStreamErrorException": 502,
    "ServiceUnavailableException": 503,
    "ModelNotReadyException": 503,
}
IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _content(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        where = f"{param}[{j}]"
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": str(part["text"])})
        elif kind == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            if not url.startswith("data:"):
                raise refuse(PROVIDER, where, "an image URL (send the image as a base64 data URL)")
            media_type, data = data_url(url, where)
            if media_type not in IMAGE_FORMATS:
                raise refuse(PROVIDER, where, f"image type '{media_type}'")
            blocks.append({"image": {"format": IMAGE_FORMATS[media_type], "source": {"bytes": base64.b64decode(data)}}})
        else:
            raise refuse(PROVIDER, where, f"content part '{kind}'")
    return blocks


def to_converse(body: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """The keyword arguments of ``converse`` / ``converse_stream`` for an OpenAI request."""
    check_params(body, PROVIDER)
    system, turns = split_messages(
        body["messages"],
        PROVIDER,
        content=_content,
        tool_use=lambda id_, name, arguments: {"toolUse": {"toolUseId": id_, "name": name, "input": arguments}},
        tool_result=lambda call_id, text: {"toolResult": {"toolUseId": call_id, "content": [{"text": text}]}},
    )

    out: dict[str, Any] = {"modelId": deployment.model, "messages": turns}
    if any(system):
        out["system"] = [{"text": text} for text in system if text]
    inference: dict[str, Any] = {"maxTokens": max_tokens(body, deployment.default_max_tokens)}
    if body.get("temperature") is not None:
        inference["temperature"] = float(body["temperature"])
    if body.get("top_p") is not None:
        inference["topP"] = float(body["top_p"])
    stops = stop_list(body)
    if stops:
        inference["stopSequences"] = stops
    out["inferenceConfig"] = inference
    tools = function_tools(body, PROVIDER)
    if body.get("parallel_tool_calls") is False and tools:
        raise refuse(PROVIDER, "parallel_tool_calls", "'parallel_tool_calls': false")
    if tools:
        spec = []
        for t in tools:
            tool_spec: dict[str, Any] = {"name": t["name"], "inputSchema": {"json": t["parameters"]}}
            if t["description"]:
                tool_spec["description"] = t["description"]
            spec.append({"toolSpec": tool_spec})
        config: dict[str, Any] = {"tools": spec}
        choice = body.get("tool_choice")
        if choice == "none":
            raise refuse(PROVIDER, "tool_choice", "tool_choice 'none'")
        if choice == "required":
            config["toolChoice"] = {"any": {}}
        elif choice == "auto":
            config["toolChoice"] = {"auto": {}}
        elif isinstance(choice, dict) and choice.get("type") == "function":
            config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
        elif choice is not None:
            raise InvalidRequest("Invalid 'tool_choice'.", param="tool_choice")
        out["toolConfig"] = config
    elif body.get("tool_choice") not in (None, "none", "auto"):
        raise InvalidRequest("'tool_choice' needs 'tools'.", param="tool_choice")
    else:
        # Converse refuses toolUse/toolResult blocks without a toolConfig: a follow-up that sends the
        # history of a tool call but not the tools again declares the tools that history used.
        used = sorted({b["toolUse"]["name"] for t in turns for b in t["content"] if "toolUse" in b})
        if used:
            out["toolConfig"] = {
                "tools": [{"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object"}}}} for name in used]
            }
    if body.get("user"):
        out["requestMetadata"] = {"user": str(body["user"])[:256]}
    return out


def usage_of(usage: dict[str, Any] | None) -> Usage:
    return usage_from(usage, ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"), "outputTokens")


def from_converse(resp: dict[str, Any], model: str) -> UpstreamReply:
    text, calls = [], []
    for block in ((resp.get("output") or {}).get("message") or {}).get("content") or ():
        if "text" in block:
            text.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(tool_call(use.get("toolUseId"), use.get("name"), use.get("input")))
    message = assistant_message(text, calls)
    usage = usage_of(resp.get("usage"))
    request_id = (resp.get("ResponseMetadata") or {}).get("RequestId")
    finish = FINISH_REASONS.get(resp.get("stopReason") or "", "stop")
    return UpstreamReply(
        completion(model, message, finish, usage, f"chatcmpl-{request_id}" if request_id else None), usage
    )


class StreamTranslator:
    """ConverseStream events -> OpenAI chunks. ``done`` once ``messageStop`` arrived."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.chunks = ChunkMaker(model)
        self.include_usage = include_usage
        self.stopped = False
        self.usage: Usage | None = None

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if "contentBlockStart" in event:
            start = event["contentBlockStart"]
            use = (start.get("start") or {}).get("toolUse")
            if use:
                return [
                    self.chunks.tool_call_start(
                        start.get("contentBlockIndex", 0), use.get("toolUseId"), use.get("name")
                    )
                ]
            return []
        if "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta") or {}
            if "text" in delta:
                return [self.chunks.chunk({"content": delta["text"]})]
            if "toolUse" in delta:
                return [
                    self.chunks.tool_call_arguments(
                        block.get("contentBlockIndex", 0), delta["toolUse"].get("input", "")
                    )
                ]
            return []  # reasoning content: not requested by this gateway
        if "messageStop" in event:
            self.stopped = True
            reason = event["messageStop"].get("stopReason") or ""
            return [self.chunks.chunk({}, FINISH_REASONS.get(reason, "stop"))]
        if "metadata" in event:
            self.usage = usage_of(event["metadata"].get("usage"))
            return [self.chunks.usage(self.usage)] if self.include_usage else []
        return []  # messageStart (the role goes out with the first delta), contentBlockStop


def upstream_error(exc: Exception) -> Exception:
    """A botocore failure as the provider protocol's exceptions."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        code = code[:1].upper() + code[1:]  # in-stream exceptions are named like union members: throttlingException
        metadata: Any = exc.response.get("ResponseMetadata") or {}
        status = ERROR_STATUSES.get(code) or int(metadata.get("HTTPStatusCode") or 502)
        return UpstreamHTTPError(status, scrub(str(error.get("Message") or code), None), code=code)
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return UpstreamTimeout(f"Bedrock did not answer in time ({type(exc).__name__}).")
    return UpstreamConnectionError(f"Could not reach Bedrock ({type(exc).__name__}).")


def _botocore_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


class BedrockProvider:
    def __init__(
        self,
        deployment: Deployment,
        client: Any = None,
        *,
        region: str | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 60.0,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.deployment = deployment
        self.name = deployment.name
        self._client = bounded(client) if hasattr(client, "_endpoint") else client  # botocore_http
        self._region = deployment.region or region
        self._connect_timeout = deployment.connect_timeout or connect_timeout
        self._read_timeout = deployment.read_timeout or read_timeout
        self._factory = client_factory

    @property
    def client(self) -> Any:
        if self._client is None:  # first use: boto3 is not imported on cold start for a Bedrock-less path
            client = self._factory() if self._factory else self._build_client()
            self._client = bounded(client) if hasattr(client, "_endpoint") else client
        return self._client

    def _build_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "total_max_attempts": 1},  # the router's policy is the one retry layer
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            tcp_keepalive=True,
            proxies={"http": self.deployment.proxy, "https": self.deployment.proxy} if self.deployment.proxy else None,
        )
        return boto3.session.Session().client(
            "bedrock-runtime", region_name=self._region, endpoint_url=self.deployment.base_url or None, config=config
        )

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        body, json_tool_name = json_tool(body, PROVIDER)
        kwargs = to_converse(body, self.deployment)
        try:
            resp = self.client.converse(**kwargs)
        except _botocore_errors() as exc:
            raise upstream_error(exc) from exc
        reply = from_converse(resp, self.deployment.model)
        return json_reply(reply, json_tool_name) if json_tool_name else reply

    def stream(self, body: dict[str, Any], timeout: Timeout) -> Iterator[dict[str, Any]]:
        body, json_tool_name = json_tool(body, PROVIDER)
        chunks = BedrockStream(self, body)
        return JsonChunks(chunks) if json_tool_name else chunks


class BedrockStream:
    """The chunks of one ConverseStream call. ``abort()`` (thread-safe: a cancelled background
    response, a client gone) shuts the call's connection down, so a blocked read returns at once
    and Bedrock sees the close; ``close()`` closes the event stream."""

    def __init__(self, provider: BedrockProvider, body: dict[str, Any]) -> None:
        self._provider = provider
        self._body = body
        self._exchange: Exchange | None = None
        self._aborted = False
        self._gen = self._chunks()

    def __iter__(self) -> BedrockStream:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._gen)

    def abort(self) -> None:
        self._aborted = True
        if self._exchange is not None:
            self._exchange.abort()

    def close(self) -> None:
        self._gen.close()

    def _chunks(self) -> Generator[dict[str, Any], None, None]:
        provider, body = self._provider, self._body
        kwargs = to_converse(body, provider.deployment)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        translator = StreamTranslator(provider.deployment.model, include_usage)
        forget_exchange()  # a call that sends nothing (a stubbed client) must not find an older one
        try:
            events = provider.client.converse_stream(**kwargs)["stream"]
        except _botocore_errors() as exc:
            raise upstream_error(exc) from exc
        self._exchange = exchange = last_exchange()
        if self._aborted and exchange is not None:  # aborted while the headers were awaited
            exchange.abort()
        started = False
        failures: tuple[type[Exception], ...] = (
            *_botocore_errors(),
            UpstreamTimeout,
            UpstreamConnectionError,
            UpstreamReplyTooLarge,
        )
        try:
            for event in events:
                for chunk in translator.feed(event):
                    started = True
                    yield chunk
            if not translator.stopped:
                if started:
                    raise UpstreamStreamError("cut", "The upstream stream ended before the reply was complete.")
                raise UpstreamHTTPError(502, "The upstream stream ended before it began.")
        except failures as exc:
            failure = exc if isinstance(exc, UpstreamFailure) else upstream_error(exc)
            if not started:
                raise failure from exc
            message = "The upstream stream failed."
            if isinstance(failure, UpstreamReplyTooLarge):
                reason, message = "malformed", failure.message
            elif isinstance(failure, UpstreamTimeout):
                reason = "stall"
            else:
                reason = "error" if isinstance(failure, UpstreamHTTPError) else "cut"
            raise UpstreamStreamError(reason, message) from exc
        finally:
            self._exchange = None  # its connection may serve another call once closed: abort no more
            close = getattr(events, "close", None)
            if close is not None:
                close()
