"""Compute a missing entry once across workers: ``get_or_compute`` on every client.

On a miss the caller takes the key's reservation, keeps it alive with a background heartbeat
while it computes, stores the outputs and releases the reservation — also when the
computation raises (exceptions are never cached). Callers that find the reservation held wait,
polling with capped exponential backoff and jitter, and return the owner's entry once it is
stored; if the owner dies its lease expires (heartbeat times the catalog's grace multiplier) and
exactly one waiter takes over, because a grant is one atomic decision of the manager.

The ``timeout`` option is handed to every catalog call (the heartbeats' too); given without
``wait_timeout``, it also bounds the wait for another owner, counted from the first
reservation attempt: ``get_or_compute(..., timeout=5)`` never waits on the catalog or on
other workers much longer than 5 s at a time. Computing itself is never interrupted.

This module is built only on the seven catalog methods of a client, so it behaves the same
embedded and remote. It must not decide who owns a reservation (the manager does) nor touch
storage itself. The async twins import asyncio as they run (whoever awaits them has it
loaded already), so that ``import taskcache`` does not.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final, Unpack, cast

from taskcache.clients.base import AsyncClient, Client, ComputeOptions, optional_ttl
from taskcache.deadlines import as_timeout
from taskcache.errors import (
    AlreadyExistsError,
    CacheError,
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
)
from taskcache.model import Entry, Key, Metadata, Reservation
from taskcache.outputs import InMemoryOutputReader, OutputReader
from taskcache.provenance import populated_status

if TYPE_CHECKING:
    from taskcache.clients.payload import Outputs

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT: Final = timedelta(seconds=10)
# Waiters poll fast at first (a short computation finishes soon), then back off to this cap:
# a quarter second keeps the last waiter close behind the stored result at 4 reads a second.
_FIRST_POLL: Final = 0.02
_MAX_POLL: Final = 0.25


@dataclass(frozen=True)
class _Plan:
    serialize: bool
    heartbeat: timedelta
    wait_timeout: timedelta | None
    given_owner_id: str | None
    metadata: Metadata | None
    timeout: float | None
    ttl: timedelta | None

    @functools.cached_property
    def owner_id(self) -> str:
        # Only a miss needs an owner: a hit must not pay for the host name look-up.
        return self.given_owner_id or default_owner_id()


def _plan(options: ComputeOptions) -> _Plan:
    heartbeat = options.get("heartbeat", DEFAULT_HEARTBEAT)
    wait_timeout = options.get("wait_timeout")
    if not isinstance(heartbeat, timedelta) or heartbeat <= timedelta(0):
        raise InvalidArgumentError("must be a positive timedelta", field="heartbeat")
    if wait_timeout is not None and (
        not isinstance(wait_timeout, timedelta) or wait_timeout < timedelta(0)
    ):
        raise InvalidArgumentError("must be a non-negative timedelta or None", field="wait_timeout")
    timeout = as_timeout(options.get("timeout"))
    if wait_timeout is None and timeout is not None:
        wait_timeout = timedelta(seconds=timeout)
    return _Plan(
        serialize=options.get("serialize", True),
        heartbeat=heartbeat,
        wait_timeout=wait_timeout,
        given_owner_id=options.get("owner_id"),
        metadata=options.get("metadata"),
        timeout=timeout,
        ttl=optional_ttl(options.get("ttl")),
    )


_process_token: tuple[int, str] | None = None


def default_owner_id() -> str:
    """Return an owner id unique to this host, process and thread.

    A random token per process keeps ids unique where process ids repeat (containers, pid
    reuse); it is drawn again in a forked child.
    """
    global _process_token  # noqa: PLW0603 - one token per process, redrawn after fork
    # Imported on first use (a miss): `import taskcache` need not load the socket module.
    import socket  # noqa: PLC0415

    pid = os.getpid()
    if _process_token is None or _process_token[0] != pid:
        _process_token = (pid, uuid.uuid4().hex[:12])
    return f"{socket.gethostname()}/{pid}/{threading.get_ident()}/{_process_token[1]}"


class _Backoff:
    """Capped exponential waits with jitter, bounded by an optional deadline."""

    def __init__(self, cap: float, wait_timeout: timedelta | None) -> None:
        self._next = _FIRST_POLL
        self._cap = max(_FIRST_POLL, cap)
        self._deadline = (
            None if wait_timeout is None else time.monotonic() + wait_timeout.total_seconds()
        )

    def delay(self, holder: Reservation) -> float:
        """Return how long to sleep before the next poll; DeadlineExceededError once the
        wait timeout (or the call's timeout) has passed (``holder`` is named in the message).
        """
        wait = random.uniform(self._next / 2, self._next)
        self._next = min(self._next * 2, self._cap)
        if self._deadline is not None:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"gave up waiting for {holder.owner_id!r}, which holds the "
                    f"reservation on {holder.key!r} until {holder.expires_at.isoformat()}"
                )
            wait = min(wait, remaining)
        return wait


def _poll_cap(heartbeat: timedelta) -> float:
    # Polling faster than half a heartbeat cannot notice an expiry any sooner.
    return min(_MAX_POLL, heartbeat.total_seconds() / 2)


def _computed_entry(key: Key, outputs: Outputs, metadata: Metadata | None) -> Entry:
    reader = outputs if isinstance(outputs, OutputReader) else InMemoryOutputReader(outputs)
    return Entry(outputs=reader, status=populated_status(key.identifier, metadata))


# --- synchronous ------------------------------------------------------------------------------


def get_or_compute(
    client: Client, key: Key, compute: Callable[[], Outputs], **options: Unpack[ComputeOptions]
) -> Entry:
    """Return the entry of ``key``, computing it with ``compute()`` on a miss (see
    :class:`ComputeOptions` and the module docstring).

    Returns the hit, or the computed entry (CACHE_POPULATED). Raises what ``compute`` raises
    (nothing is stored then), DeadlineExceededError after ``wait_timeout`` (or ``timeout``,
    see the module docstring) and from a catalog call that outlived ``timeout``, and the
    client's errors.
    """
    plan = _plan(options)
    timeout = plan.timeout
    with contextlib.suppress(NotFoundError):
        return client.get(key, timeout=timeout)
    if not plan.serialize:
        return _store(client, key, compute(), plan)
    backoff = _Backoff(_poll_cap(plan.heartbeat), plan.wait_timeout)
    while True:
        reservation = client.get_or_extend_reservation(
            key, plan.owner_id, plan.heartbeat, timeout=timeout
        )
        if reservation.owner_id == plan.owner_id:
            return _compute_owned(client, key, compute, plan, reservation)
        time.sleep(backoff.delay(reservation))
        with contextlib.suppress(NotFoundError):
            return client.get(key, timeout=timeout)


def _store(client: Client, key: Key, outputs: Outputs, plan: _Plan) -> Entry:
    try:
        client.put(key, outputs, plan.metadata, ttl=plan.ttl, timeout=plan.timeout)
    except AlreadyExistsError:
        # Another writer stored it first: serve what is stored, as every other caller will.
        with contextlib.suppress(NotFoundError):
            return client.get(key, timeout=plan.timeout)
    return _computed_entry(key, outputs, plan.metadata)


def _compute_owned(
    client: Client,
    key: Key,
    compute: Callable[[], Outputs],
    plan: _Plan,
    reservation: Reservation,
) -> Entry:
    try:
        # The previous owner may have stored the entry just before its lease passed to us.
        with contextlib.suppress(NotFoundError):
            return client.get(key, timeout=plan.timeout)
        with _heartbeat(client, key, plan, reservation.heartbeat_interval):
            outputs = compute()
        return _store(client, key, outputs, plan)
    finally:
        _release_quietly(client, key, plan)


@contextlib.contextmanager
def _heartbeat(client: Client, key: Key, plan: _Plan, interval: timedelta) -> Iterator[None]:
    """Extend the reservation every ``interval`` from a daemon thread while the block runs."""
    stop = threading.Event()
    owner_id = plan.owner_id

    def beat() -> None:
        while not stop.wait(interval.total_seconds()):
            try:
                held = client.get_or_extend_reservation(
                    key, owner_id, interval, timeout=plan.timeout
                )
                _check_held(held, owner_id)
            except CacheError as error:
                logger.warning("heartbeat for %s failed: %s", owner_id, error)

    thread = threading.Thread(target=beat, name="taskcache-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _check_held(held: Reservation, owner_id: str) -> None:
    # The computation goes on (its result is still valid); the new holder may compute too.
    if held.owner_id != owner_id:
        logger.warning(
            "reservation on %s passed from %s to %s while computing",
            held.key,
            owner_id,
            held.owner_id,
        )


def _release_quietly(client: Client, key: Key, plan: _Plan) -> None:
    # A failed release only delays the others until the lease expires; the result stands.
    try:
        client.release_reservation(key, plan.owner_id, timeout=plan.timeout)
    except CacheError as error:
        logger.warning("could not release the reservation of %s: %s", plan.owner_id, error)


# --- asynchronous -----------------------------------------------------------------------------


async def get_or_compute_async(
    client: AsyncClient,
    key: Key,
    compute: Callable[[], Awaitable[Outputs]],
    **options: Unpack[ComputeOptions],
) -> Entry:
    """The asynchronous twin of :func:`get_or_compute`: ``compute`` is awaited, waits and
    heartbeats never block the event loop.
    """
    import asyncio  # noqa: PLC0415 -- see the module's note on asyncio

    plan = _plan(options)
    timeout = plan.timeout
    with contextlib.suppress(NotFoundError):
        return await client.get(key, timeout=timeout)
    if not plan.serialize:
        return await _store_async(client, key, await compute(), plan)
    backoff = _Backoff(_poll_cap(plan.heartbeat), plan.wait_timeout)
    while True:
        reservation = await client.get_or_extend_reservation(
            key, plan.owner_id, plan.heartbeat, timeout=timeout
        )
        if reservation.owner_id == plan.owner_id:
            return await _compute_owned_async(client, key, compute, plan, reservation)
        await asyncio.sleep(backoff.delay(reservation))
        with contextlib.suppress(NotFoundError):
            return await client.get(key, timeout=timeout)


async def _store_async(client: AsyncClient, key: Key, outputs: Outputs, plan: _Plan) -> Entry:
    try:
        await client.put(key, outputs, plan.metadata, ttl=plan.ttl, timeout=plan.timeout)
    except AlreadyExistsError:
        with contextlib.suppress(NotFoundError):
            return await client.get(key, timeout=plan.timeout)
    return _computed_entry(key, outputs, plan.metadata)


async def _compute_owned_async(
    client: AsyncClient,
    key: Key,
    compute: Callable[[], Awaitable[Outputs]],
    plan: _Plan,
    reservation: Reservation,
) -> Entry:
    import asyncio  # noqa: PLC0415 -- see the module's note on asyncio

    try:
        with contextlib.suppress(NotFoundError):
            return await client.get(key, timeout=plan.timeout)
        beating = asyncio.create_task(
            _beat_async(client, key, plan, reservation.heartbeat_interval),
            name="taskcache-heartbeat",
        )
        try:
            outputs = await compute()
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
        return await _store_async(client, key, outputs, plan)
    finally:
        try:
            await client.release_reservation(key, plan.owner_id, timeout=plan.timeout)
        except CacheError as error:
            logger.warning("could not release the reservation of %s: %s", plan.owner_id, error)


async def _beat_async(client: AsyncClient, key: Key, plan: _Plan, interval: timedelta) -> None:
    import asyncio  # noqa: PLC0415 -- see the module's note on asyncio

    owner_id = plan.owner_id
    while True:
        await asyncio.sleep(interval.total_seconds())
        try:
            held = await client.get_or_extend_reservation(
                key, owner_id, interval, timeout=plan.timeout
            )
            _check_held(held, owner_id)
        except CacheError as error:
            logger.warning("heartbeat for %s failed: %s", owner_id, error)


# --- on the clients ---------------------------------------------------------------------------


class ComputesOnce:
    """``get_or_compute`` for a synchronous client (mixed into every one)."""

    def get_or_compute(
        self, key: Key, compute: Callable[[], Outputs], **options: Unpack[ComputeOptions]
    ) -> Entry:
        """Return the entry of ``key``, computing it once across workers on a miss.

        See :func:`get_or_compute` for the contract and :class:`ComputeOptions` for options.
        """
        return get_or_compute(cast("Client", self), key, compute, **options)


class AsyncComputesOnce:
    """``get_or_compute`` for an asynchronous client (mixed into every one)."""

    async def get_or_compute(
        self,
        key: Key,
        compute: Callable[[], Awaitable[Outputs]],
        **options: Unpack[ComputeOptions],
    ) -> Entry:
        """See :meth:`ComputesOnce.get_or_compute` (``compute`` is a coroutine function)."""
        return await get_or_compute_async(cast("AsyncClient", self), key, compute, **options)
