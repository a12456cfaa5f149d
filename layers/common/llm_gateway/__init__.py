"""llm-gateway: the domain package shared by the API and worker functions (the Lambda layer)."""

__version__ = "0.1.0"
