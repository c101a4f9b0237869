"""The call gate in isolation: the circuit breaker's states, the in-flight bound and the
deadline, driven by a fake clock and asyncio events (no server, no database).

The same behaviour through a real server and PostgreSQL is tests/test_server_admission.py.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from taskcache.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from taskcache.manager import AsyncCacheManager, NewEntry
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from taskcache.server.breaker import BreakerState, CallGate, CircuitBreaker
from taskcache.server.calls import CallObserver
from taskcache.server.metrics import ServerMetrics
from taskcache.server.scope import UNSCOPED
from taskcache.server.settings import load_settings

# A bound that only catches a hang.
HANG_GUARD = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def open_breaker(clock: FakeClock, cooldown: float = 1.0) -> CircuitBreaker:
    breaker = CircuitBreaker(cooldown, clock=clock)
    breaker.record(breaker.admit(), UnavailableError.code)
    return breaker


def test_an_unavailable_call_opens_the_breaker_and_later_calls_are_refused() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    assert breaker.state is BreakerState.OPEN
    assert breaker.refusing
    with pytest.raises(UnavailableError):
        breaker.admit()


def test_after_the_cooldown_one_probe_passes_and_its_success_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 1.0
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.admit()
    assert probe
    with pytest.raises(UnavailableError):
        breaker.admit()  # one probe at a time
    breaker.record(probe, NotFoundError.code)  # the database answered
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit() is False


def test_a_failed_probe_reopens_the_breaker_for_another_cooldown() -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 1.0
    breaker.record(breaker.admit(), UnavailableError.code)
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.5
    with pytest.raises(UnavailableError):
        breaker.admit()


@pytest.mark.parametrize("code", [InvalidArgumentError.code, DeadlineExceededError.code, None])
def test_outcomes_that_never_reached_the_database_leave_the_breaker_as_it_was(
    code: str | None,
) -> None:
    clock = FakeClock()
    breaker = open_breaker(clock)
    clock.now += 1.0
    breaker.record(breaker.admit(), code)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit()  # the probe slot is free again


def test_health_pings_open_and_close_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(60.0, clock=clock)
    breaker.record_ping(False)
    assert breaker.state is BreakerState.OPEN
    breaker.record_ping(True)
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.refusing


async def _hold(gate: CallGate, entered: asyncio.Event, release: asyncio.Event) -> None:
    async def work() -> None:
        entered.set()
        await release.wait()

    await gate.run(work, None)


async def _never_runs() -> None:
    pytest.fail("a refused call ran")


ISOLATION = pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "inline"])


@ISOLATION
def test_calls_beyond_the_bound_are_refused_at_once_and_admitted_after(isolate: bool) -> None:
    asyncio.run(_calls_beyond_the_bound_are_refused_at_once_and_admitted_after(isolate))


async def _calls_beyond_the_bound_are_refused_at_once_and_admitted_after(isolate: bool) -> None:
    gate = CallGate(CircuitBreaker(), max_in_flight=2, isolate=isolate)
    release = asyncio.Event()
    entered = [asyncio.Event(), asyncio.Event()]
    holders = [asyncio.create_task(_hold(gate, event, release)) for event in entered]
    async with asyncio.timeout(HANG_GUARD):
        for event in entered:
            await event.wait()
    assert gate.in_flight == 2
    with pytest.raises(ResourceExhaustedError):
        await gate.run(_never_runs, None)
    release.set()
    await asyncio.wait_for(asyncio.gather(*holders), HANG_GUARD)
    assert gate.in_flight == 0

    async def count() -> int:
        return gate.in_flight

    assert await gate.run(count, None) == 1


@ISOLATION
def test_a_passed_deadline_stops_the_call_and_frees_its_slot(isolate: bool) -> None:
    asyncio.run(_a_passed_deadline_stops_the_call_and_frees_its_slot(isolate))


async def _a_passed_deadline_stops_the_call_and_frees_its_slot(isolate: bool) -> None:
    gate = CallGate(CircuitBreaker(), max_in_flight=1, isolate=isolate)
    with pytest.raises(DeadlineExceededError):
        await gate.run(_never_runs, 0.0)
    stopped = False

    async def blocked() -> None:
        nonlocal stopped
        try:
            await asyncio.sleep(HANG_GUARD)
        except asyncio.CancelledError:
            stopped = True
            raise

    with pytest.raises(DeadlineExceededError):
        await gate.run(blocked, 0.05)
    assert stopped
    assert gate.in_flight == 0
    assert gate.breaker.state is BreakerState.CLOSED  # a deadline says nothing of the database


def test_a_stopped_call_unwinds_undisturbed_when_its_caller_is_cancelled_again() -> None:
    asyncio.run(_a_stopped_call_unwinds_undisturbed_when_its_caller_is_cancelled_again())


async def _a_stopped_call_unwinds_undisturbed_when_its_caller_is_cancelled_again() -> None:
    # As psycopg does: on cancellation, cancel the statement in the server and await that;
    # a second cancellation there would abandon the statement (and let it commit later).
    gate = CallGate(CircuitBreaker())
    started = asyncio.Event()
    unwinding = asyncio.Event()
    finish_unwinding = asyncio.Event()
    unwound = False

    async def statement() -> None:
        nonlocal unwound
        started.set()
        try:
            await asyncio.sleep(HANG_GUARD)
        except asyncio.CancelledError:
            unwinding.set()
            await finish_unwinding.wait()  # a second cancellation here would interrupt it
            unwound = True
            raise

    caller = asyncio.create_task(gate.run(statement, None))
    async with asyncio.timeout(HANG_GUARD):
        await started.wait()
        caller.cancel()  # the client went away
        await unwinding.wait()
        caller.cancel()  # and the transport cancels the handler again (e.g. at shutdown)
        await asyncio.sleep(0)
        assert gate.in_flight == 1  # still unwinding: not yet free
        finish_unwinding.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
    assert unwound
    assert gate.in_flight == 0


@ISOLATION
def test_only_an_isolated_call_runs_in_a_task_of_its_own(isolate: bool) -> None:
    async def caller() -> bool:
        gate = CallGate(CircuitBreaker(), isolate=isolate)

        async def work() -> asyncio.Task[object] | None:
            return asyncio.current_task()

        return await gate.run(work, 1.0) is not asyncio.current_task()

    assert asyncio.run(caller()) is isolate


@ISOLATION
def test_the_gate_refuses_unavailable_while_the_breaker_is_open(isolate: bool) -> None:
    asyncio.run(_the_gate_refuses_unavailable_while_the_breaker_is_open(isolate))


async def _the_gate_refuses_unavailable_while_the_breaker_is_open(isolate: bool) -> None:
    gate = CallGate(CircuitBreaker(60.0), max_in_flight=4, isolate=isolate)

    async def pool_timeout() -> None:
        raise UnavailableError("pool timeout")

    with pytest.raises(UnavailableError):
        await gate.run(pool_timeout, None)
    with pytest.raises(UnavailableError):
        await gate.run(_never_runs, None)
    assert gate.in_flight == 0


def test_a_locked_sqlite_file_opens_the_breaker_and_a_probe_closes_it(tmp_path: Path) -> None:
    asyncio.run(_a_locked_sqlite_file_opens_the_breaker_and_a_probe_closes_it(tmp_path))


async def _a_locked_sqlite_file_opens_the_breaker_and_a_probe_closes_it(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    clock = FakeClock()
    gate = CallGate(CircuitBreaker(1.0, clock=clock))
    entry = NewEntry(output_uri="s3://b/o", output_literals=None, source_identifier=b"", key_map={})
    reached = 0
    with ThreadPoolExecutor(2) as executor:
        repository = ThreadedRepository(SqliteRepository(path, busy_timeout=0.05), executor)
        manager = AsyncCacheManager(repository)

        async def put(key: str) -> object:
            nonlocal reached
            reached += 1
            return await manager.put(UNSCOPED, key, entry)

        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        with pytest.raises(UnavailableError):
            await gate.run(lambda: put("k0"), None)  # the busy timeout: the first failure
        for index in range(5):
            with pytest.raises(UnavailableError):
                await gate.run(lambda index=index: put(f"k{index + 1}"), None)
        assert reached == 1  # the refusals never reached the database
        holder.execute("COMMIT")
        holder.close()

        clock.now += 1.0  # the cooldown: one probe passes, and its success closes the breaker
        await gate.run(lambda: put("k1"), None)
        assert gate.breaker.state is BreakerState.CLOSED
        await gate.run(lambda: put("k2"), None)
        assert reached == 3
        await repository.close()


def test_breaker_refusals_are_counted_each_but_not_logged_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asyncio.run(_breaker_refusals_are_counted_each_but_not_logged_each(caplog))


async def _breaker_refusals_are_counted_each_but_not_logged_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = CallGate(CircuitBreaker(60.0))
    gate.breaker.record_ping(False)
    metrics = ServerMetrics()
    observer = CallObserver(metrics, gate=gate)
    refusals = 200
    with caplog.at_level(logging.WARNING, logger="taskcache.server.calls"):
        for _ in range(refusals):
            with pytest.raises(UnavailableError), observer.observe("grpc", "S", "Get"):
                await observer.admit(_never_runs, None)
    counted = metrics.registry.get_sample_value(
        "taskcache_requests_total",
        {"transport": "grpc", "service": "S", "method": "Get", "code": "UNAVAILABLE"},
    )
    assert counted == refusals
    # Rate-limited to ten lines a second: a refusal storm of 200 cannot log 100 lines.
    assert len(caplog.records) < refusals / 2


def test_settings_default_and_parse() -> None:
    defaults = load_settings({}, environ={})
    assert (defaults.max_in_flight, defaults.breaker_cooldown) == (256, 1.0)
    given = load_settings({"max_in_flight": "2"}, environ={"TASKCACHE_BREAKER_COOLDOWN": "500ms"})
    assert (given.max_in_flight, given.breaker_cooldown) == (2, 0.5)
    for name, value in (("max_in_flight", "0"), ("breaker_cooldown", "-1")):
        with pytest.raises(InvalidArgumentError) as raised:
            load_settings({name: value}, environ={})
        assert raised.value.field == name
