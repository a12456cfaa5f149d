"""The stream pump: one thread's steps handed to the event loop in order, bounded, always closed."""

from __future__ import annotations

import asyncio
import threading

import pytest

import pump as pump_module
from pump import Pump


def steps(*parts: bytes, gate: threading.Event | None = None):
    """A step function returning ``parts`` in order, the last marked last; waits on ``gate`` before each."""
    queue = list(parts)
    calls: list[str] = []

    def step() -> tuple[bytes, bool]:
        if gate is not None:
            gate.wait(5)
        calls.append(threading.current_thread().name)
        data = queue.pop(0)
        return data, not queue

    return step, calls


async def drain(p: Pump) -> list[bytes]:
    out: list[bytes] = []
    while True:
        data, last = await p.get()
        out.append(data)
        if last:
            return out


def test_every_step_arrives_in_order_from_one_thread_then_close_runs_once():
    closed: list[str] = []
    step, calls = steps(b"a", b"b", b"c")

    async def main() -> list[bytes]:
        p = Pump(step, lambda: closed.append(threading.current_thread().name))
        got = await drain(p)
        await p.finish()
        return got

    got = asyncio.run(main())
    assert b"".join(got) == b"abc"
    assert len(set(calls)) == 1 and calls[0] == "sse-pump" and calls[0] != threading.current_thread().name
    assert closed == ["sse-pump"]


def test_what_arrives_while_the_loop_is_busy_is_taken_in_one_piece():
    step, _ = steps(b"1", b"2", b"3")
    done = threading.Event()

    def close() -> None:
        done.set()

    async def main() -> list[bytes]:
        p = Pump(step, close)
        assert done.wait(5)  # the loop is blocked here: all three steps ran meanwhile
        return await drain(p)

    assert asyncio.run(main()) == [b"123"]


def test_a_client_that_does_not_read_holds_the_thread_at_the_bound_and_finish_releases_it(monkeypatch):
    monkeypatch.setattr(pump_module, "MAX_AHEAD", 2)
    taken = []
    closed = threading.Event()

    def step() -> tuple[bytes, bool]:
        taken.append(1)
        return b"x", False  # an endless stream

    async def main() -> None:
        p = Pump(step, closed.set)
        await asyncio.sleep(0.2)
        assert len(taken) <= 3  # two buffered, one waiting for room: not read ahead without bound
        await p.finish()

    asyncio.run(main())
    assert closed.is_set()


def test_finish_while_a_step_runs_waits_for_it_then_closes_and_nothing_more_is_taken():
    gate = threading.Event()
    step, calls = steps(b"a", b"b", gate=gate)
    closed = threading.Event()

    async def main() -> None:
        p = Pump(step, closed.set)
        finishing = asyncio.ensure_future(p.finish())
        await asyncio.sleep(0.05)
        assert not finishing.done() and not closed.is_set()  # the step is still running
        gate.set()  # what abort() does to a blocked read
        await asyncio.wait_for(finishing, 5)

    asyncio.run(main())
    assert closed.is_set() and len(calls) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's own report
def test_a_step_that_raises_still_ends_the_stream_for_the_loop_and_closes():
    closed = threading.Event()

    def step() -> tuple[bytes, bool]:
        raise KeyboardInterrupt  # not an Exception: the steps' own error handling did not catch it

    async def main() -> tuple[bytes, bool]:
        p = Pump(step, closed.set)
        return await asyncio.wait_for(p.get(), 5)

    assert asyncio.run(main()) == (b"", True)
    assert closed.wait(5)
    for thread in threading.enumerate():
        if thread.name == "sse-pump":
            thread.join(5)  # its exception is reported inside this test
