"""A running job's cancel watch.

``POST /v1/jobs/{id}/cancel`` marks the job ``cancelled`` in the table; the worker running it
learns of it here. While the job runs, a thread reads the job's status every
``JOB_CANCEL_POLL_SECONDS``; once it reads ``cancelled`` it

* makes :meth:`CancelWatch.cancelled` true — the chat turn's checkpoints (before every upstream
  attempt, and when the reply arrives, before anything is stored) then raise ``Cancelled``; and
* aborts the upstream call in flight (:class:`llm_gateway.providers.watchdog.CallScope`): its socket
  is shut down, so the call fails at once and the upstream sees the connection close instead of
  generating a reply nobody will keep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from llm_gateway.jobs.store import CANCELLED
from llm_gateway.observability import logger
from llm_gateway.providers.watchdog import CallScope, abortable


class CancelWatch:
    """``with CancelWatch(read_status, interval) as watch:`` around one job's work, in its thread."""

    def __init__(self, read_status: Callable[[], str | None], interval: float) -> None:
        self.read_status = read_status
        self.interval = interval
        self.scope = CallScope()
        self._done = threading.Event()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="job-cancel-watch", daemon=True)
        self._calls = abortable(self.scope)

    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def __enter__(self) -> CancelWatch:
        self._calls.__enter__()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join(self.interval + 5)
        self._calls.__exit__(exc_type, exc, tb)

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            try:
                status = self.read_status()
            except Exception as exc:  # a failed read is no cancel; try again next interval
                logger.warning("cancel watch: status read failed", extra={"error_type": type(exc).__name__})
                continue
            if status == CANCELLED:
                self._cancelled.set()
                self.scope.abort()
                return
