"""The outcome codes of catalog calls: :class:`CacheStatus`, :class:`ReservationStatus` and
the :class:`Status` a get or put returns.

This module owns the Python names of Flyte's catalog status enums and the status value
type. It must import nothing from taskcache: :mod:`taskcache.errors` carries a ``Status`` on
its errors, and every other taskcache module imports the errors, so anything imported here
would close an import loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from flyteidl2.core import catalog_pb2

__all__ = ["CacheStatus", "ReservationStatus", "Status"]


class CacheStatus(enum.IntEnum):
    """Outcome of a catalog call; names and values of ``flyteidl2.core.CatalogCacheStatus``."""

    CACHE_DISABLED = catalog_pb2.CACHE_DISABLED
    CACHE_MISS = catalog_pb2.CACHE_MISS
    CACHE_HIT = catalog_pb2.CACHE_HIT
    CACHE_POPULATED = catalog_pb2.CACHE_POPULATED
    CACHE_LOOKUP_FAILURE = catalog_pb2.CACHE_LOOKUP_FAILURE
    CACHE_PUT_FAILURE = catalog_pb2.CACHE_PUT_FAILURE
    CACHE_SKIPPED = catalog_pb2.CACHE_SKIPPED
    CACHE_EVICTED = catalog_pb2.CACHE_EVICTED


class ReservationStatus(enum.IntEnum):
    """Names and values of ``flyteidl2.core.CatalogReservation.Status``."""

    RESERVATION_DISABLED = catalog_pb2.CatalogReservation.RESERVATION_DISABLED
    RESERVATION_ACQUIRED = catalog_pb2.CatalogReservation.RESERVATION_ACQUIRED
    RESERVATION_EXISTS = catalog_pb2.CatalogReservation.RESERVATION_EXISTS
    RESERVATION_RELEASED = catalog_pb2.CatalogReservation.RESERVATION_RELEASED
    RESERVATION_FAILURE = catalog_pb2.CatalogReservation.RESERVATION_FAILURE


@dataclass(frozen=True)
class Status:
    """Result status of a get or put: a :class:`CacheStatus` and Flyte's CatalogMetadata."""

    cache_status: CacheStatus
    metadata: catalog_pb2.CatalogMetadata | None = None
