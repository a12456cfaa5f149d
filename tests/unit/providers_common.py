"""Helpers for the provider translation tests: fixtures on disk, a deployment factory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_gateway.upstream.aliases import Deployment

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "providers"


def fixture(name: str) -> Any:
    path = FIXTURES / name
    if name.endswith(".json"):
        return json.loads(path.read_text())
    return path.read_bytes()


def deployment(**kw: Any) -> Deployment:
    return Deployment.model_validate({"name": "d1", "model": "m", **kw})


def without_volatile(body: dict[str, Any]) -> dict[str, Any]:
    """A completion without the fields we generate per call (created, and ids we mint)."""
    return {k: v for k, v in body.items() if k != "created"}
