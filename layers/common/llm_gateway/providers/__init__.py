"""Upstream providers: one attempt per call; retries and fallback live in the router."""

from .base import Provider, UpstreamReply, Usage
from .openai import OpenAIProvider

__all__ = ["OpenAIProvider", "Provider", "UpstreamReply", "Usage", "build_provider"]


def build_provider(deployment, keys, session, *, region: str, connect_timeout: float, read_timeout: float,
                   bedrock_client=None) -> Provider:
    """The provider for one deployment (imports only the modules the configuration uses)."""
    from .http import session_for

    if deployment.provider == "bedrock":
        from .bedrock import BedrockProvider

        return BedrockProvider(deployment, bedrock_client, region=region, connect_timeout=connect_timeout,
                               read_timeout=read_timeout)
    session = session_for(deployment.proxy, session)
    if deployment.provider == "anthropic":
        from .anthropic import AnthropicProvider

        return AnthropicProvider(deployment, keys, session)
    if deployment.provider == "azure":
        from .azure import AzureOpenAIProvider

        return AzureOpenAIProvider(deployment, keys, session)
    return OpenAIProvider(deployment, keys, session)  # openai, openai_compatible
