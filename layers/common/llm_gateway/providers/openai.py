"""OpenAI Chat Completions, and any server that speaks it (vLLM, Ollama, Groq, …)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from llm_gateway.providers.base import (
    Timeout,
    UpstreamFailure,
    UpstreamHTTPError,
    UpstreamReply,
    Usage,
    parse_retry_after,
)
from llm_gateway.providers.body import loads
from llm_gateway.providers.http import post
from llm_gateway.providers.sse import SSEChunkStream
from llm_gateway.redaction import scrub
from llm_gateway.security.provider_keys import KeyProvider

if TYPE_CHECKING:  # annotations only: providers do not import the upstream layer
    from llm_gateway.upstream.aliases import Deployment


def http_error(resp: requests.Response, secret: str | None) -> UpstreamHTTPError:
    message, code = f"Upstream returned HTTP {resp.status_code}.", None
    try:
        error = loads(resp.content).get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code") or error.get("type")
            code = str(code) if code is not None else None  # Azure sends numeric-looking codes ("429")
        elif isinstance(error, str):
            message = error
    except (ValueError, AttributeError, UpstreamFailure):
        pass
    return UpstreamHTTPError(
        resp.status_code, scrub(message, secret), code=code, retry_after=parse_retry_after(resp.headers)
    )


class OpenAIProvider:
    def __init__(self, deployment: Deployment, keys: KeyProvider, session: requests.Session | None = None):
        self.deployment = deployment
        self.name = deployment.name
        self.keys = keys
        self.session = session or requests.Session()
        self.url = deployment.url + "/chat/completions"

    def _headers(self, key: str | None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _key(self, refresh: bool = False) -> str | None:
        ref = self.deployment.key_ref
        if ref is None:
            return None
        return self.keys.refresh(ref) if refresh else self.keys.get(ref)

    def _post(self, body: dict[str, Any], timeout: Timeout, *, stream: bool) -> tuple[requests.Response, str | None]:
        accept = "text/event-stream" if stream else "application/json"
        key = self._key()
        resp = post(
            self.session, self.url, json=body, headers=self._headers(key, accept), timeout=timeout, stream=stream
        )
        if resp.status_code == 401 and key is not None:
            # The key may have been rotated: decrypt it again and retry at once — unless the key
            # provider refreshed it moments ago and hands back the same key (it cannot help).
            fresh = self._key(refresh=True)
            if fresh != key:
                resp.close()
                key = fresh
                resp = post(
                    self.session,
                    self.url,
                    json=body,
                    headers=self._headers(key, accept),
                    timeout=timeout,
                    stream=stream,
                )
        if resp.status_code >= 400:
            try:
                raise http_error(resp, key)
            finally:
                resp.close()
        return resp, key

    def complete(self, body: dict[str, Any], timeout: Timeout) -> UpstreamReply:
        body = {**body, "model": self.deployment.model}
        resp, _ = self._post(body, timeout, stream=False)
        try:
            data = loads(resp.content)
            choice = data["choices"][0]
            # what the gateway reads of a reply must have its shape: a malformed one is the upstream's 502
            if not isinstance(choice, dict) or not isinstance(choice.get("message") or {}, dict):
                raise TypeError("choice")
            usage = Usage.from_openai(data.get("usage"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamHTTPError(502, "Upstream returned a malformed completion.") from exc
        return UpstreamReply(data, usage)

    def stream(self, body: dict[str, Any], timeout: Timeout) -> SSEChunkStream:
        """One streamed attempt (see :meth:`Provider.stream`); nothing is sent until the first ``next()``."""
        body = {**body, "model": self.deployment.model, "stream": True}

        def open_response() -> tuple[requests.Response, str | None]:
            return self._post(body, timeout, stream=True)

        return SSEChunkStream(open_response)
