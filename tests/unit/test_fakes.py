"""The shared fakes (tests/fakes.py) follow the Protocols they stand in for: every Protocol method
exists on its fake with the same parameters, so a Protocol that grows a method or a parameter
breaks here, not in a test that silently exercises an outdated fake."""

from __future__ import annotations

import inspect

import pytest

from llm_gateway.conversations.records import ConversationStore
from llm_gateway.jobs.store import JobStore
from llm_gateway.providers.base import Provider
from llm_gateway.quotas.admin import KeyStore
from llm_gateway.quotas.counters import CounterStore
from llm_gateway.quotas.limits import LimitsStore
from llm_gateway.responses.background import BackgroundQueue
from llm_gateway.responses.event_log import EventLog
from llm_gateway.responses.store import ResponseStore
from llm_gateway.security.provider_keys import KeyProvider
from tests import fakes

PAIRS = {
    "ConversationStore": (ConversationStore, fakes.InMemoryConversationStore),
    "JobStore": (JobStore, fakes.InMemoryJobStore),
    "Provider": (Provider, fakes.ScriptedProvider),
    "KeyProvider": (KeyProvider, fakes.FakeKeys),
    "ResponseStore": (ResponseStore, fakes.InMemoryResponseStore),
    "EventLog": (EventLog, fakes.InMemoryEventLog),
    "CounterStore": (CounterStore, fakes.InMemoryCounterStore),
    "LimitsStore": (LimitsStore, fakes.InMemoryLimitsStore),
    "KeyStore": (KeyStore, fakes.InMemoryKeyStore),
    "BackgroundQueue": (BackgroundQueue, fakes.InMemoryBackgroundQueue),
}


def protocol_methods(protocol: type) -> list[str]:
    return [name for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")]


def parameters(function: object) -> list[tuple[str, object]]:
    """Names and kinds (positional, keyword-only, …) of a method's parameters; annotations aside."""
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol, fake", PAIRS.values(), ids=PAIRS.keys())
def test_each_fake_has_every_method_of_its_protocol_with_the_same_parameters(protocol, fake):
    methods = protocol_methods(protocol)
    assert methods, f"{protocol.__name__} declares no methods"
    for name in methods:
        assert hasattr(fake, name), f"{fake.__name__} lacks {protocol.__name__}.{name}"
        assert parameters(getattr(fake, name)) == parameters(getattr(protocol, name)), f"{fake.__name__}.{name}"


def test_every_protocol_of_a_store_or_provider_has_a_fake():
    """The package's Protocols that a service depends on; the small internal ones (a stream's turn and
    quota hold, the SSE decoder, a key record) are satisfied by the real classes in tests."""
    import importlib
    import pkgutil

    import llm_gateway

    internal = {"StreamTurn", "QuotaHold", "EventDecoder", "KeyRecord", "_HasBody"}
    found = set()
    for module in pkgutil.walk_packages(llm_gateway.__path__, "llm_gateway."):
        for name, member in vars(importlib.import_module(module.name)).items():
            if inspect.isclass(member) and getattr(member, "_is_protocol", False) and member.__module__ == module.name:
                found.add(name)
    assert found - internal == set(PAIRS)
