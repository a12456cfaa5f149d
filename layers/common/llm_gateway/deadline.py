"""A request's deadline: the time by which it must have answered.

Every layer that waits (retry sleeps, upstream timeouts, leases) asks the deadline
how long it may take, so no layer waits past the point where the caller has gone. Layers that
are not handed the deadline (AWS clients, upstream body reads) find it in the active
:class:`Scope` (a context variable, so each request and each thread it starts sees its own).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


def now_ms() -> int:
    """Wall-clock epoch milliseconds (the timestamps stored items carry)."""
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Deadline:
    expires_at: float  # time.monotonic() seconds

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def cap(self, seconds: float) -> float:
        """``seconds``, but no longer than the time left."""
        return max(0.0, min(seconds, self.remaining()))


@dataclass
class Scope:
    """The deadline of the work in progress (a request, a turn, a stream step, a job) as the layers
    below it see it without being handed it: AWS calls (:mod:`llm_gateway.aws.bounded`) and upstream
    body reads size their timeouts from it. ``unavailable`` names the services that did not answer
    within it: later calls in the same scope fail at once instead of waiting again."""

    deadline: Deadline
    unavailable: set[str] = field(default_factory=set)


_scope: ContextVar[Scope | None] = ContextVar("llm_gateway_deadline_scope", default=None)


def current() -> Scope | None:
    """The innermost active scope (see :func:`bounded`), or None outside any."""
    return _scope.get()


@contextmanager
def bounded(deadline: Deadline | Scope) -> Iterator[Scope]:
    """Run the block under ``deadline``: every wait below it is capped by the time left. Entering the
    deadline already in force keeps its scope (and what it learnt about unavailable services)."""
    active = _scope.get()
    if isinstance(deadline, Scope):
        scope = deadline
    elif active is not None and active.deadline == deadline:
        scope = active
    else:
        scope = Scope(deadline)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)
