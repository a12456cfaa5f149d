"""A request's deadline: the time by which it must have answered.

Every layer that waits (retry sleeps, upstream timeouts, leases) asks the deadline
how long it may take, so no layer waits past the point where the caller has gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


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
