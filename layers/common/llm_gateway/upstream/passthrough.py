"""What an alias does with the request fields that act at the provider, not at the gateway.

``service_tier`` picks the provider's processing tier (and its price), ``store`` and ``metadata``
ask the provider to keep the request and its prompt (OpenAI's stored completions), and ``user``
tells the provider who the end user is. A tenant must not be able to keep prompts at the provider
or pick a pricier tier on the gateway's provider account, so each alias says, per field, in its
routing entry (``"pass_through": {"store": "forward", …}``):

* ``forward`` — sent to the provider as the client gave it;
* ``drop`` — removed, silently (the request goes on without it);
* ``reject`` — a 400 naming the field (``unsupported_parameter``), before any reservation,
  lease or upstream call;
* ``tenant`` (``user`` only) — the gateway sets ``user`` to the caller's tenant id, whatever the
  client sent, so the provider's abuse monitoring sees which tenant sent a request.

Defaults: ``service_tier``, ``store`` and ``metadata`` are dropped (nothing kept at the provider,
the account's default tier), ``user`` is ``tenant``. One implementation serves every view of a
turn (Chat Completions, Responses, jobs): ChatService checks the request and applies the policy to
the body it sends upstream, before a provider translates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llm_gateway.errors import InvalidRequest

FieldRule = Literal["forward", "drop", "reject"]
UserRule = Literal["forward", "drop", "reject", "tenant"]
FIELDS = ("service_tier", "store", "metadata", "user")


class PassThrough(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service_tier: FieldRule = "drop"
    store: FieldRule = "drop"
    metadata: FieldRule = "drop"
    user: UserRule = "tenant"

    def check(self, fields: Mapping[str, Any], alias: str) -> None:
        """A 400 naming the first rejected field the request carries (a null counts as absent)."""
        for name in FIELDS:
            if getattr(self, name) == "reject" and fields.get(name) is not None:
                raise InvalidRequest(
                    f"'{name}' is not allowed for the model '{alias}' on this gateway; remove it.",
                    code="unsupported_parameter",
                    param=name,
                )

    def apply(self, body: dict[str, Any], tenant: str) -> dict[str, Any]:
        """The upstream body with the policy applied (``check`` has refused what is rejected)."""
        for name in FIELDS:
            rule = getattr(self, name)
            if rule == "tenant":
                body[name] = tenant
            elif rule != "forward":
                body.pop(name, None)
        return body
