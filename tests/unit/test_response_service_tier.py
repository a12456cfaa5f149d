"""A Response's ``service_tier``: what the upstream reported, else what was requested when the alias's
pass-through policy forwards it, else ``default`` — foreground, streamed and background alike."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from openai.types.responses import Response
from openai.types.responses.service_tier import ServiceTier

from llm_gateway.responses.translate import SERVICE_TIERS
from llm_gateway.upstream.passthrough import PassThrough
from tests.unit.test_background import Background

FORWARD = PassThrough(service_tier="forward")


def test_the_tiers_are_the_sdk_response_types():
    (literal, _none) = get_args(ServiceTier)
    assert set(SERVICE_TIERS) == set(get_args(literal))


def every_view(b: Background, **body: Any) -> dict[str, dict[str, Any]]:
    """The Response of one request sent foreground, streamed and in the background (final and queued)."""
    out = {"create": b.create(**body)}
    out["stream"] = b.stream(**body)[-1]["response"]
    queued = b.submit(**body)
    out["queued"] = queued
    assert b.run(queued["id"]) == "completed"
    out["background"] = b.service.get("t1", queued["id"])
    for name, response in out.items():
        Response.model_validate(response)
        if name != "queued":
            assert response["status"] == "completed", name
    return out


def test_a_forwarded_tier_shows_what_the_upstream_reported():
    b = Background(["a", "b", "c"])
    b.chat.routing.aliases["default"] = b.chat.routing.aliases["default"].model_copy(update={"pass_through": FORWARD})
    b.provider.service_tier = "flex"
    views = every_view(b, input="x", service_tier="auto")
    assert [body.get("service_tier") for body in b.provider.bodies] == ["auto"] * 3
    assert {name: r["service_tier"] for name, r in views.items()} == {
        "create": "flex",
        "stream": "flex",
        "queued": "auto",  # submitted: the upstream has not said yet
        "background": "flex",
    }


def test_a_forwarded_tier_the_upstream_did_not_confirm_shows_the_one_requested():
    b = Background(["a", "b", "c"])
    b.chat.routing.aliases["default"] = b.chat.routing.aliases["default"].model_copy(update={"pass_through": FORWARD})
    views = every_view(b, input="x", service_tier="priority")
    assert {r["service_tier"] for r in views.values()} == {"priority"}


@pytest.mark.parametrize("requested", [None, "priority"])
def test_a_dropped_tier_is_default(requested: str | None):
    b = Background(["a", "b", "c"])  # the default policy drops service_tier
    body = {"input": "x"} if requested is None else {"input": "x", "service_tier": requested}
    views = every_view(b, **body)
    assert all("service_tier" not in sent for sent in b.provider.bodies)
    assert {r["service_tier"] for r in views.values()} == {"default"}
