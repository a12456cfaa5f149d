"""Upstream providers: one attempt per call; retries and fallback live in the router."""

from .base import Provider, UpstreamReply, Usage
from .openai import OpenAIProvider

__all__ = ["OpenAIProvider", "Provider", "UpstreamReply", "Usage"]
