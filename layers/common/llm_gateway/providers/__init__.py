"""Upstream providers: one attempt per call; retries and fallback live in the router."""

from llm_gateway.providers.base import Provider, UpstreamReply, Usage
from llm_gateway.providers.openai import OpenAIProvider

__all__ = ["OpenAIProvider", "Provider", "UpstreamReply", "Usage", "build_provider"]


def build_provider(
    deployment, keys, session, *, region: str, connect_timeout: float, read_timeout: float, bedrock_client=None
) -> Provider:
    """The provider for one deployment (imports only the modules the configuration uses)."""
    from llm_gateway.providers.http import session_for

    if deployment.provider == "bedrock":
        from llm_gateway.providers.bedrock import BedrockProvider

        return BedrockProvider(
            deployment, bedrock_client, region=region, connect_timeout=connect_timeout, read_timeout=read_timeout
        )
    session = session_for(deployment.proxy, session)
    if deployment.provider == "anthropic":
        from llm_gateway.providers.anthropic import AnthropicProvider

        return AnthropicProvider(deployment, keys, session)
    if deployment.provider == "azure":
        from llm_gateway.providers.azure import AzureOpenAIProvider

        return AzureOpenAIProvider(deployment, keys, session)
    return OpenAIProvider(deployment, keys, session)  # openai, openai_compatible
