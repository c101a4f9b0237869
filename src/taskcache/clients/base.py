"""The Client protocols: Flyte's seven catalog methods plus delete, close and context use.

Every client (embedded or remote) satisfies :class:`Client`; its async twin satisfies
:class:`AsyncClient` with the same method names as coroutines. Embedded clients also satisfy
:class:`OperatorClient` (:class:`AsyncOperatorClient`): listing, totals and bulk deletion,
which the service API has no calls for, so remote clients do not.

Protocols and the shared put/update of every client (:class:`Writes`, :class:`AsyncWrites`)
only: no I/O here. Every method takes a keyword-only per-call ``timeout``
(:mod:`taskcache.deadlines`); ``put`` and ``update`` take theirs, and ``ttl``, as the
options :class:`Write` declares.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final, Protocol, Self, TypedDict, Unpack, runtime_checkable

from taskcache.clients.payload import Outputs
from taskcache.deadlines import Timeout, as_timeout
from taskcache.keywords import check_names
from taskcache.manager import validate_ttl
from taskcache.model import Entry, Key, Metadata, Reservation, ReservationCache, Status
from taskcache.repositories.base import CatalogStats
from taskcache.wiretime import Interval, as_interval

# Rows fetched (or deleted) per repository call by the operator methods.
OPERATOR_BATCH_SIZE: Final = 500

if TYPE_CHECKING:
    from taskcache.model import CatalogEntry


class ComputeOptions(TypedDict, total=False):
    """Options of ``get_or_compute``.

    ``serialize`` (default True): take the reservation so that one caller computes while the
    others wait; False computes on every miss and stores the first result (losing the put race
    to another writer is not an error: the stored winner is returned). ``heartbeat`` (10 s):
    the reservation's heartbeat, also how often it is extended while computing (the catalog
    may grant less). ``wait_timeout`` (None: wait as long as the owner keeps its lease): how
    long to wait for another owner, then DeadlineExceededError. ``owner_id``: the reservation
    owner (default: unique per host, process and thread). ``metadata``: stored with the entry.
    ``ttl`` (a timedelta or seconds; None: the catalog's default): how long the computed
    entry is served (see :meth:`Client.put`).
    ``timeout`` (None: the client's default): the budget of each catalog call it makes, as
    for any client method; given without ``wait_timeout``, it also bounds the wait for
    another owner, counted from its first reservation attempt. Running ``compute`` itself
    is never bounded.
    """

    serialize: bool
    heartbeat: timedelta
    wait_timeout: timedelta | None
    owner_id: str
    metadata: Metadata | None
    ttl: Interval | None
    timeout: Timeout


class Write(TypedDict, total=False):
    """The keyword options of ``put`` and ``update``, each absent or None by default.

    ``ttl`` (a timedelta or seconds; None: the catalog's default): how long the entry is
    served. ``timeout`` (None: the client's default): the budget of the call, as for every
    client method. Another name is a TypeError, as an unexpected keyword argument is.
    """

    ttl: Interval | None
    timeout: Timeout


class Client(Protocol):
    """A synchronous catalog client.

    Every method takes a keyword-only ``timeout``: seconds (int or float) or a timedelta,
    the budget of the whole call, retries included; None (the default) means the client's
    default (``taskcache.open(..., timeout=...)``). When it runs out the call raises
    DeadlineExceededError: remote clients send it as the call's deadline (gRPC deadline,
    ``Connect-Timeout-Ms``), embedded ones bound their waits on database locks with it. A
    bool, or a value that is not a positive finite number, is a TypeError or an
    InvalidArgumentError naming ``timeout``. The reservation-cache methods work in memory:
    they check the argument and need no time.
    """

    def get(self, key: Key, *, timeout: Timeout = None) -> Entry:
        """Return the entry for ``key``; NotFoundError on a miss."""
        ...

    def put(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """Create the entry (expiring ``ttl`` after now; None: the catalog's default; options:
        :class:`Write`); AlreadyExistsError if a live one exists.
        """
        ...

    def update(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """Create or overwrite the entry (expiring ``ttl`` after now, as :meth:`put`)."""
        ...

    def delete(self, key: Key, *, timeout: Timeout = None) -> None:
        """Delete the entry; NotFoundError if absent."""
        ...

    def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: Interval, *, timeout: Timeout = None
    ) -> Reservation:
        """Acquire or extend ``owner_id``'s reservation, or return the current holder's."""
        ...

    def release_reservation(self, key: Key, owner_id: str, *, timeout: Timeout = None) -> None:
        """Release ``owner_id``'s reservation; a no-op if it holds none."""
        ...

    def get_reservation_cache(self, owner_id: str, *, timeout: Timeout = None) -> ReservationCache:
        """Return the remembered reservation state of ``owner_id``."""
        ...

    def get_or_compute(
        self, key: Key, compute: Callable[[], Outputs], **options: Unpack[ComputeOptions]
    ) -> Entry:
        """Return the entry, computing it once across workers on a miss (see
        :mod:`taskcache.clients.compute_once`).
        """
        ...

    def update_reservation_cache(
        self, owner_id: str, entry: ReservationCache, *, timeout: Timeout = None
    ) -> None:
        """Remember ``entry`` for ``owner_id``."""
        ...

    def close(self) -> None:
        """Release resources. Idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...


class AsyncClient(Protocol):
    """The asynchronous twin of :class:`Client`: the same methods, as coroutines.

    ``timeout`` means what it means on :class:`Client`. Cancelling the task that awaits a
    remote call cancels the RPC (the server stops working on it); an embedded call runs in
    a worker thread, which finishes its current database statement.
    """

    async def get(self, key: Key, *, timeout: Timeout = None) -> Entry:
        """Return the entry for ``key``; NotFoundError on a miss."""
        ...

    async def put(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """See :meth:`Client.put`."""
        ...

    async def update(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """See :meth:`Client.update`."""
        ...

    async def delete(self, key: Key, *, timeout: Timeout = None) -> None:
        """Delete the entry; NotFoundError if absent."""
        ...

    async def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: Interval, *, timeout: Timeout = None
    ) -> Reservation:
        """Acquire or extend ``owner_id``'s reservation, or return the current holder's."""
        ...

    async def release_reservation(
        self, key: Key, owner_id: str, *, timeout: Timeout = None
    ) -> None:
        """Release ``owner_id``'s reservation; a no-op if it holds none."""
        ...

    async def get_reservation_cache(
        self, owner_id: str, *, timeout: Timeout = None
    ) -> ReservationCache:
        """Return the remembered reservation state of ``owner_id``."""
        ...

    async def get_or_compute(
        self,
        key: Key,
        compute: Callable[[], Awaitable[Outputs]],
        **options: Unpack[ComputeOptions],
    ) -> Entry:
        """See :meth:`Client.get_or_compute` (``compute`` is a coroutine function)."""
        ...

    async def update_reservation_cache(
        self, owner_id: str, entry: ReservationCache, *, timeout: Timeout = None
    ) -> None:
        """Remember ``entry`` for ``owner_id``."""
        ...

    async def close(self) -> None:
        """Release resources. Idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class EntrySelection(TypedDict, total=False):
    """Which entries :meth:`OperatorClient.entries` and :meth:`OperatorClient.clear` cover.

    ``org``, ``project`` and ``domain`` select the scope entries are filed under (absent or
    None: any; ``""`` is the empty scope of Flyte 1 and unscoped entries); or ``scope``
    selects it as ``taskcache ls`` prints it (``"org/project/domain"``, ``"(unscoped)"``, a
    part ``"*"`` for any; InvalidArgumentError if malformed, TypeError beside any of the
    three); ``task`` the name of the stored source identifier; ``key_prefix`` keys starting
    with it. An unknown name is a TypeError (a typo must never widen a ``clear``).
    """

    scope: str | None
    org: str | None
    project: str | None
    domain: str | None
    task: str | None
    key_prefix: str | None


@runtime_checkable
class OperatorClient(Client, Protocol):
    """A :class:`Client` on a catalog it can also list, total and clear (embedded clients).

    ``isinstance(client, OperatorClient)`` tells whether ``taskcache.open`` gave one. Scope
    arguments (``org``, ``project``, ``domain``) filter on the scope an entry is filed under;
    None matches any. ``task`` matches the name of the entry's stored source identifier.
    ``timeout`` is as on :class:`Client`: the budget of ``stats`` and of the whole
    ``clear``, and of each page ``entries`` fetches.
    """

    def entries(
        self,
        *,
        page_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> Iterator[CatalogEntry]:
        """Iterate over the matching entries, newest update first, fetching lazily."""
        ...

    def stats(self, *, timeout: Timeout = None) -> CatalogStats:
        """Return the catalog's totals."""
        ...

    def clear(
        self,
        *,
        batch_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> int:
        """Delete the matching entries (every entry without arguments); return how many."""
        ...


@runtime_checkable
class AsyncOperatorClient(AsyncClient, Protocol):
    """The asynchronous twin of :class:`OperatorClient`; ``entries`` is an async iterator."""

    def entries(
        self,
        *,
        page_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> AsyncIterator[CatalogEntry]:
        """See :meth:`OperatorClient.entries`; iterate with ``async for``."""
        ...

    async def stats(self, *, timeout: Timeout = None) -> CatalogStats:
        """See :meth:`OperatorClient.stats`."""
        ...

    async def clear(
        self,
        *,
        batch_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> int:
        """See :meth:`OperatorClient.clear`."""
        ...


class Writes(ABC):
    """``put`` and ``update`` of a synchronous client, both one ``_write``: create-only or
    overwriting.
    """

    def put(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """Create the entry for ``key``; return CACHE_POPULATED.

        ``ttl`` (a timedelta or seconds; None: the catalog's default, if any) is how long
        the entry is served. Raises AlreadyExistsError if a live entry exists, TypeError for a
        ``ttl`` of another type or an option :class:`Write` does not declare,
        InvalidArgumentError for a ``ttl`` not positive, DeadlineExceededError once
        ``timeout`` passes; every catalog error carries ``.status`` = CACHE_PUT_FAILURE.
        """
        return self._write(checked_write(key, outputs, metadata, options, overwrite=False))

    def update(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """Create or overwrite the entry for ``key`` (``ttl`` and ``timeout`` as for
        :meth:`put`); errors carry a CACHE_PUT_FAILURE status.
        """
        return self._write(checked_write(key, outputs, metadata, options, overwrite=True))

    @abstractmethod
    def _write(self, write: CheckedWrite) -> Status:
        """Store ``write.outputs`` under ``write.key`` (replacing a live entry only with
        ``write.overwrite``), expiring ``write.ttl`` after now (None: the catalog's default),
        within ``write.timeout`` seconds (None: the client's default).
        """


class AsyncWrites(ABC):
    """The asynchronous twin of :class:`Writes`: ``put`` and ``update`` of an asynchronous
    client, both one awaited ``_write``.
    """

    async def put(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """See :meth:`Writes.put`."""
        return await self._write(checked_write(key, outputs, metadata, options, overwrite=False))

    async def update(
        self, key: Key, outputs: Outputs, metadata: Metadata | None = None, **options: Unpack[Write]
    ) -> Status:
        """See :meth:`Writes.update`."""
        return await self._write(checked_write(key, outputs, metadata, options, overwrite=True))

    @abstractmethod
    async def _write(self, write: CheckedWrite) -> Status:
        """See :meth:`Writes._write`."""


@dataclass(frozen=True, slots=True)
class CheckedWrite:
    """One put (``overwrite`` False) or update, its options checked: ``ttl`` a timedelta or
    None (the catalog's default), ``timeout`` seconds or None (the client's default).
    """

    key: Key
    outputs: Outputs
    metadata: Metadata | None
    overwrite: bool
    ttl: timedelta | None
    timeout: float | None


def checked_write(
    key: Key, outputs: Outputs, metadata: Metadata | None, options: Write, *, overwrite: bool
) -> CheckedWrite:
    """Return the write a put (or, with ``overwrite``, an update) asks for.

    Raises TypeError naming an option :class:`Write` does not declare or a ``ttl`` or
    ``timeout`` of another type, InvalidArgumentError naming one that is not positive.
    """
    if options:
        check_names(options, Write, "update()" if overwrite else "put()")
    return CheckedWrite(
        key,
        outputs,
        metadata,
        overwrite,
        optional_ttl(options.get("ttl")),
        as_timeout(options.get("timeout")),
    )


def optional_ttl(ttl: object) -> timedelta | None:
    """Return a put's ``ttl`` argument as a timedelta (None stays None); TypeError naming
    ``ttl`` for another type, InvalidArgumentError if it is not positive.
    """
    if ttl is None:
        return None
    interval = as_interval(ttl, "ttl")
    validate_ttl(interval, "ttl")
    return interval
