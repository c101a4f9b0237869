"""The three public cache APIs, each a thin adapter over :class:`CacheServiceCore`.

* ``flyteidl2.cacheservice.v2.CacheService``: requests carry ``base_request`` + ``identifier``;
  the identifier is the scope.
* ``flyteidl2.cacheservice.CacheService``: the flyteidl2 base requests, unscoped.
* ``flyteidl.cacheservice.CacheService`` (Flyte 1): unscoped; its messages are wire-identical
  to flyteidl2's except ``PutCacheRequest.overwrite``, a plain bool.

Both unscoped APIs use the empty scope, so they share entries with each other and never see
scoped ones. Every adapter has the same five coroutine methods, which is all a transport needs.
"""

from __future__ import annotations

from typing import Any, Final, Protocol, TypeVar

from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl2.cacheservice import cacheservice_pb2
from google.protobuf.message import Message

from taskcache.server.core import CacheServiceCore
from taskcache.server.scope import UNSCOPED, request_scope

SCOPED_SERVICE: Final = "flyteidl2.cacheservice.v2.CacheService"
UNSCOPED_SERVICE: Final = "flyteidl2.cacheservice.CacheService"
FLYTE1_SERVICE: Final = "flyteidl.cacheservice.CacheService"

_M = TypeVar("_M", bound=Message)


class CacheApi(Protocol):
    """One cache API: request message in, response message out, CacheError on failure."""

    async def get(self, request: Any) -> Any:
        """Return the GetCacheResponse."""
        ...

    async def put(self, request: Any) -> Any:
        """Return the PutCacheResponse."""
        ...

    async def delete(self, request: Any) -> Any:
        """Return the DeleteCacheResponse."""
        ...

    async def get_or_extend_reservation(self, request: Any) -> Any:
        """Return the GetOrExtendReservationResponse."""
        ...

    async def release_reservation(self, request: Any) -> Any:
        """Return the ReleaseReservationResponse."""
        ...


class ScopedApi:
    """``flyteidl2.cacheservice.v2``: validates ``identifier`` and serves ``base_request``."""

    def __init__(self, core: CacheServiceCore) -> None:
        self._core = core

    async def get(self, request: Any) -> Any:
        """Return the entry; NotFoundError on a miss."""
        return await self._core.get(request_scope(request), request.base_request)

    async def put(self, request: Any) -> Any:
        """Store the output; AlreadyExistsError on a live entry."""
        return await self._core.put(request_scope(request), request.base_request)

    async def delete(self, request: Any) -> Any:
        """Delete the entry; NotFoundError if absent."""
        return await self._core.delete(request_scope(request), request.base_request)

    async def get_or_extend_reservation(self, request: Any) -> Any:
        """Return the reservation in force."""
        return await self._core.get_or_extend_reservation(
            request_scope(request), request.base_request
        )

    async def release_reservation(self, request: Any) -> Any:
        """Release the caller's reservation."""
        return await self._core.release_reservation(request_scope(request), request.base_request)


class UnscopedApi:
    """``flyteidl2.cacheservice``: the base requests under the empty scope."""

    def __init__(self, core: CacheServiceCore) -> None:
        self._core = core

    async def get(self, request: Any) -> Any:
        """Return the entry; NotFoundError on a miss."""
        return await self._core.get(UNSCOPED, request)

    async def put(self, request: Any) -> Any:
        """Store the output; AlreadyExistsError on a live entry."""
        return await self._core.put(UNSCOPED, request)

    async def delete(self, request: Any) -> Any:
        """Delete the entry; NotFoundError if absent."""
        return await self._core.delete(UNSCOPED, request)

    async def get_or_extend_reservation(self, request: Any) -> Any:
        """Return the reservation in force."""
        return await self._core.get_or_extend_reservation(UNSCOPED, request)

    async def release_reservation(self, request: Any) -> Any:
        """Release the caller's reservation."""
        return await self._core.release_reservation(UNSCOPED, request)


def _convert(message: Message, target: type[_M]) -> _M:
    """Re-read ``message`` as the wire-identical ``target`` type (unknown fields survive)."""
    return target.FromString(message.SerializeToString())


class Flyte1Api:
    """``flyteidl.cacheservice`` (Flyte 1): converted to flyteidl2 messages, unscoped."""

    def __init__(self, core: CacheServiceCore) -> None:
        self._core = core

    async def get(self, request: Any) -> Any:
        """Return the entry; NotFoundError on a miss."""
        response = await self._core.get(
            UNSCOPED, _convert(request, cacheservice_pb2.GetCacheRequest)
        )
        return _convert(response, flyte1_pb2.GetCacheResponse)

    async def put(self, request: Any) -> Any:
        """Store the output (``overwrite`` is a bool here); AlreadyExistsError on a live entry."""
        base = cacheservice_pb2.PutCacheRequest(key=request.key)
        if request.HasField("output"):
            base.output.MergeFromString(request.output.SerializeToString())
        base.overwrite.overwrite = request.overwrite
        await self._core.put(UNSCOPED, base)
        return flyte1_pb2.PutCacheResponse()

    async def delete(self, request: Any) -> Any:
        """Delete the entry; NotFoundError if absent."""
        await self._core.delete(UNSCOPED, _convert(request, cacheservice_pb2.DeleteCacheRequest))
        return flyte1_pb2.DeleteCacheResponse()

    async def get_or_extend_reservation(self, request: Any) -> Any:
        """Return the reservation in force."""
        response = await self._core.get_or_extend_reservation(
            UNSCOPED, _convert(request, cacheservice_pb2.GetOrExtendReservationRequest)
        )
        return _convert(response, flyte1_pb2.GetOrExtendReservationResponse)

    async def release_reservation(self, request: Any) -> Any:
        """Release the caller's reservation."""
        await self._core.release_reservation(
            UNSCOPED, _convert(request, cacheservice_pb2.ReleaseReservationRequest)
        )
        return flyte1_pb2.ReleaseReservationResponse()
