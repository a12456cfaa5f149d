"""Model aliases and the deployments behind them.

Clients name an alias (``default``, …); the alias names one or more upstream
deployments, tried in order (deployments with a ``weight`` share the head of the
order by weighted random choice). The configuration is one versioned JSON document::

    {"version": 1,
     "aliases": {"default": {"deployments": [{"name": "openai-mini", "provider": "openai", …}, …]}}}

It comes from, in order of precedence: the SSM parameter named by
``ROUTING_CONFIG_SSM_PARAMETER`` (fetched with Powertools parameters, only when set),
the ``ROUTING_CONFIG`` environment variable / stack parameter, or the file shipped
in this package (``routing.json``; ``ROUTING_CONFIG_FILE`` points elsewhere). When the
document defines no ``default`` alias, ``default`` routes to the OpenAI-compatible
upstream of ``OPENAI_BASE_URL`` / ``DEFAULT_MODEL`` / ``PROVIDER_KEY_CIPHERTEXT``.

The configuration is validated at cold start; every error names the alias and the
deployment it is about.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_gateway.errors import ConfigurationError, NotFound
from llm_gateway.settings import Settings
from llm_gateway.upstream.passthrough import PassThrough

DEFAULT_ALIAS = "default"
DEFAULT_KEY_REF = "default"
CONFIG_VERSION = 1
PACKAGED_CONFIG = Path(__file__).with_name("routing.json")

PROVIDERS = ("openai", "openai_compatible", "azure", "anthropic", "bedrock")
ProviderName = Literal["openai", "openai_compatible", "azure", "anthropic", "bedrock"]
KEYLESS_PROVIDERS = frozenset({"bedrock"})  # IAM, not a key
KEYED_PROVIDERS = frozenset({"azure", "anthropic"})  # no call without a key
DEFAULT_BASE_URLS = {"anthropic": "https://api.anthropic.com", "openai": "https://api.openai.com/v1"}
DEFAULT_API_VERSIONS = {"azure": "2024-10-21", "anthropic": "2023-06-01"}


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")
    provider: ProviderName = "openai"
    model: str = Field(min_length=1)  # the upstream model id (Azure: the deployment name)
    base_url: str | None = None  # Bedrock: optional endpoint override
    key_ref: str | None = None  # names a ciphertext in PROVIDER_KEYS / PROVIDER_KEY_CIPHERTEXT
    region: str | None = None  # Bedrock only; defaults to the function's region
    api_version: str | None = None  # Azure `api-version` / Anthropic `anthropic-version`
    proxy: str | None = None  # an HTTP(S) proxy URL for this deployment only
    context_window: int = Field(128_000, gt=0)
    default_max_tokens: int = Field(4_096, gt=0)  # Anthropic/Bedrock need one when the client sends none
    connect_timeout: float | None = Field(None, gt=0)
    read_timeout: float | None = Field(None, gt=0)
    input_price_per_1m: float = Field(0.0, ge=0)
    output_price_per_1m: float = Field(0.0, ge=0)
    weight: float | None = Field(None, gt=0)

    @field_validator("provider", mode="before")
    @classmethod
    def _known_provider(cls, value: Any) -> Any:
        if value not in PROVIDERS:
            raise ValueError(f"unknown provider '{value}' (known: {', '.join(PROVIDERS)})")
        return value

    @model_validator(mode="after")
    def _provider_needs(self) -> Deployment:
        if self.provider in KEYLESS_PROVIDERS and self.key_ref:
            raise ValueError("a bedrock deployment authenticates with the function's IAM role; remove 'key_ref'")
        if self.provider in KEYED_PROVIDERS and not self.key_ref:
            raise ValueError(f"missing key reference: a {self.provider} deployment needs 'key_ref'")
        if self.provider in ("openai_compatible", "azure") and not self.base_url:
            raise ValueError(f"a {self.provider} deployment needs 'base_url'")
        if self.provider not in ("bedrock",) and self.region:
            raise ValueError("'region' applies to bedrock deployments only")
        return self

    @property
    def url(self) -> str:
        """The base URL with the provider's default filled in."""
        return (self.base_url or DEFAULT_BASE_URLS.get(self.provider, "")).rstrip("/")

    @property
    def version(self) -> str | None:
        return self.api_version or DEFAULT_API_VERSIONS.get(self.provider)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_price_per_1m + completion_tokens * self.output_price_per_1m) / 1e6


class ModelAlias(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    deployments: list[Deployment] = Field(min_length=1)
    history_max_tokens: int = Field(8_000, gt=0)
    history_max_messages: int = Field(200, gt=0, le=1_000)
    # request caps: over one, a 400 naming the field (nothing reaches the provider)
    max_n: int = Field(8, ge=1, le=128)
    max_output_tokens: int | None = Field(None, gt=0)  # default: the context window
    # service_tier / store / metadata / user: forward, drop or reject (user: also tenant); passthrough.py
    pass_through: PassThrough = Field(default_factory=PassThrough)

    @property
    def context_window(self) -> int:
        """The hard cap: the smallest window among the deployments that may answer."""
        return min(d.context_window for d in self.deployments)

    @model_validator(mode="after")
    def _unique_deployments(self) -> ModelAlias:
        seen: set[str] = set()
        for d in self.deployments:
            if d.name in seen:
                raise ValueError(f"deployment '{d.name}' is listed twice")
            seen.add(d.name)
        return self

    def order(self, rng: random.Random | None = None) -> list[Deployment]:
        """The order to try this alias's deployments in, for one request.

        Deployments with a ``weight`` come first, in a weighted random order (sampling
        without replacement), so they share the load; the rest follow as configured,
        as fallbacks. Without weights the order is the configured one.
        """
        weighted = [d for d in self.deployments if d.weight is not None]
        if not weighted:
            return list(self.deployments)
        choices = (rng or random).choices
        head: list[Deployment] = []
        pool = list(weighted)
        while pool:
            pick = choices(pool, weights=[d.weight or 0.0 for d in pool])[0]
            head.append(pick)
            pool.remove(pick)
        return head + [d for d in self.deployments if d.weight is None]


class Routing:
    def __init__(self, aliases: dict[str, ModelAlias], version: int = CONFIG_VERSION, source: str = "") -> None:
        self.aliases = aliases
        self.version = version
        self.source = source

    def resolve(self, name: str) -> ModelAlias:
        alias = self.aliases.get(name)
        if alias is None:
            raise NotFound(
                f"The model '{name[:100]}' does not exist on this gateway; GET /v1/models lists them.",
                code="model_not_found",
                param="model",
            )
        return alias

    def deployments(self) -> dict[str, Deployment]:
        """Every deployment by name (a deployment shared by several aliases appears once)."""
        return {d.name: d for a in self.aliases.values() for d in a.deployments}

    def key_refs(self) -> set[str]:
        return {d.key_ref for d in self.deployments().values() if d.key_ref}

    def key_contexts(self) -> dict[str, str]:
        """key ref -> the deployment its ciphertext's encryption context names."""
        return {d.key_ref: d.name for d in self.deployments().values() if d.key_ref}

    def check_keys(self, available: set[str]) -> None:
        """Fail at start-up when a deployment names a key ref with no ciphertext."""
        for alias in self.aliases.values():
            for d in alias.deployments:
                if d.key_ref and d.key_ref not in available:
                    raise ConfigurationError(
                        f"routing alias '{alias.name}' deployment '{d.name}': missing key reference "
                        f"'{d.key_ref}' (no ciphertext is configured for it in PROVIDER_KEYS)"
                    )


def default_alias(settings: Settings) -> ModelAlias:
    return ModelAlias(
        name=DEFAULT_ALIAS,
        deployments=[
            Deployment(
                name=DEFAULT_ALIAS,
                model=settings.default_model,
                base_url=settings.openai_base_url,
                key_ref=DEFAULT_KEY_REF if settings.provider_key_ciphertext else None,
                context_window=settings.default_context_window,
                input_price_per_1m=settings.default_input_price_per_1m,
                output_price_per_1m=settings.default_output_price_per_1m,
            )
        ],
        history_max_tokens=settings.history_max_tokens,
        history_max_messages=settings.history_max_messages,
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigurationError(f"duplicate entry '{key}'")
        out[key] = value
    return out


def _describe(exc: ValidationError, alias: str, body: Any) -> str:
    """pydantic's errors, with deployment indexes replaced by the deployments' names."""
    deployments = body.get("deployments") if isinstance(body, dict) else None
    parts = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        where = f"routing alias '{alias}'"
        if len(loc) >= 2 and loc[0] == "deployments" and isinstance(loc[1], int):
            entry = deployments[loc[1]] if isinstance(deployments, list) and loc[1] < len(deployments) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            where += f" deployment '{name}'" if name else f" deployment #{loc[1]}"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc)
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {field + ': ' if field else ''}{message}")
    return "; ".join(parts)


def parse_routing(text: str, source: str, settings: Settings) -> Routing:
    """Parse and validate one routing document; errors name the offending entry."""
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{source} is not valid JSON: {exc.msg} at {exc.pos}") from exc
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc.message} (an alias or key is defined twice)") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{source} must be a JSON object")
    if "aliases" in raw or "version" in raw:
        version = raw.get("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigurationError(f"{source}: unsupported routing config version {version!r} (this gateway reads 1)")
        unknown = sorted(set(raw) - {"version", "aliases", "$comment"})
        if unknown:
            raise ConfigurationError(f"{source}: unknown top-level keys {unknown}")
        entries = raw.get("aliases") or {}
    else:  # the pre-versioned shape: a bare mapping of aliases
        entries = raw
    if not isinstance(entries, dict):
        raise ConfigurationError(f"{source}: 'aliases' must map alias names to alias definitions")

    aliases: dict[str, ModelAlias] = {}
    for name, body in entries.items():
        if not isinstance(body, dict):
            raise ConfigurationError(f"routing alias '{name}': must be an object with 'deployments'")
        try:
            aliases[name] = ModelAlias.model_validate({"name": name, **body})
        except ValidationError as exc:
            raise ConfigurationError(f"{source}: {_describe(exc, name, body)}") from exc
    if DEFAULT_ALIAS not in aliases:
        aliases = {DEFAULT_ALIAS: default_alias(settings), **aliases}

    owners: dict[str, tuple[str, Deployment]] = {}
    key_owner: dict[str, str] = {}
    for alias in aliases.values():
        for d in alias.deployments:
            seen = owners.get(d.name)
            if seen is not None and seen[1] != d:
                raise ConfigurationError(
                    f"{source}: routing alias '{alias.name}' deployment '{d.name}': duplicate deployment name "
                    f"(alias '{seen[0]}' defines a different deployment of that name)"
                )
            owners.setdefault(d.name, (alias.name, d))
            if d.key_ref:
                other = key_owner.setdefault(d.key_ref, d.name)
                if other != d.name:
                    raise ConfigurationError(
                        f"{source}: routing alias '{alias.name}' deployment '{d.name}': key ref '{d.key_ref}' is "
                        f"already used by deployment '{other}' (a key's encryption context names one deployment)"
                    )
    return Routing(aliases, CONFIG_VERSION, source)


def fetch_ssm_parameter(name: str, client: Any = None) -> str:
    """The routing document from SSM Parameter Store (SecureString allowed), via Powertools."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider  # only when SSM is configured

    if client is None:
        from llm_gateway.aws import client as aws_client

        client = aws_client("ssm")
    try:
        value = SSMProvider(boto3_client=client).get(name, decrypt=True)
    except Exception as exc:  # GetParameterError wraps every boto error
        raise ConfigurationError(f"SSM parameter '{name}' could not be read: {type(exc).__name__}") from exc
    if not isinstance(value, str):
        raise ConfigurationError(f"SSM parameter '{name}' is not a string.")
    return value


def load_routing(settings: Settings, *, ssm_client: Any = None) -> Routing:
    if settings.routing_config_ssm_parameter:
        name = settings.routing_config_ssm_parameter
        return parse_routing(fetch_ssm_parameter(name, ssm_client), f"SSM parameter '{name}'", settings)
    if settings.routing_config:
        return parse_routing(settings.routing_config, "ROUTING_CONFIG", settings)
    path = Path(settings.routing_config_file) if settings.routing_config_file else PACKAGED_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"routing config file '{path}' could not be read: {exc.strerror}") from exc
    return parse_routing(text, f"routing config file '{path.name}'", settings)
