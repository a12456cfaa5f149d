"""Azure OpenAI: OpenAI Chat Completions at a resource's deployment URL.

Differences from OpenAI, all in the request line and headers: the deployment name is
part of the URL (``{base_url}/openai/deployments/{deployment}/chat/completions``), the
API version is the ``api-version`` query parameter, and the key goes in the ``api-key``
header. Bodies, streams and errors are OpenAI's, so everything else (including the
stream, once the OpenAI provider has it) is inherited. Azure's 429s sometimes carry
``retry-after-ms`` / ``Retry-After`` and sometimes neither; without one the router
falls back to its own jittered backoff (``parse_retry_after`` returns None).

Wire format: https://learn.microsoft.com/en-us/azure/ai-services/openai/reference
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import requests

from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.security.provider_keys import KeyProvider

if TYPE_CHECKING:  # annotations only: providers do not import the upstream layer
    from llm_gateway.upstream.aliases import Deployment


class AzureOpenAIProvider(OpenAIProvider):
    def __init__(self, deployment: Deployment, keys: KeyProvider, session: requests.Session | None = None):
        super().__init__(deployment, keys, session)
        self.url = (
            f"{deployment.url}/openai/deployments/{quote(deployment.model, safe='')}/chat/completions"
            f"?api-version={quote(deployment.version or '', safe='')}"
        )

    def _headers(self, key: str | None, accept: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": accept}
        if key:
            headers["api-key"] = key
        return headers
