"""The errors every taskcache client raises, each tied to a gRPC status code name.

It must not import the rest of taskcache beyond :mod:`taskcache.status`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from taskcache.status import Status


class CacheError(Exception):
    """Base of every taskcache error.

    ``code`` is the gRPC status code name the service answers with. ``status`` is set on
    failed puts and updates: ``Status(CACHE_PUT_FAILURE, CatalogMetadata(dataset_id=...))``.
    """

    code: ClassVar[str] = "UNKNOWN"

    def __init_subclass__(cls, *, code: str | None = None, **kwargs: Any) -> None:
        """Give the subclass the ``code`` its class statement names (``code="NOT_FOUND"``);
        without one, it keeps its base's.
        """
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, status: Status | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotFoundError(CacheError, code="NOT_FOUND"):
    """The entry (or the outputs it points at) does not exist."""


class AlreadyExistsError(CacheError, code="ALREADY_EXISTS"):
    """A create-only put met a live entry under the same key."""


class InvalidArgumentError(CacheError, code="INVALID_ARGUMENT"):
    """A request argument is malformed; ``field`` names it when known."""

    def __init__(
        self, message: str, *, field: str | None = None, status: Status | None = None
    ) -> None:
        super().__init__(f"{field}: {message}" if field else message, status=status)
        self.field = field


class FailedPreconditionError(CacheError, code="FAILED_PRECONDITION"):
    """The request is well formed but the state forbids it (e.g. outputs hold an error)."""


class UnavailableError(CacheError, code="UNAVAILABLE"):
    """The backing store or service cannot be reached right now; retrying may succeed."""


class DeadlineExceededError(CacheError, code="DEADLINE_EXCEEDED"):
    """The call did not complete in time."""


class InternalError(CacheError, code="INTERNAL"):
    """An unexpected failure inside taskcache or the service it talks to."""


class PermissionDeniedError(CacheError, code="PERMISSION_DENIED"):
    """The caller authenticated but may not do this (e.g. the scope is not its token's)."""


class UnauthenticatedError(CacheError, code="UNAUTHENTICATED"):
    """The call carried no credentials the service accepts (a missing or unknown token)."""


class ResourceExhaustedError(CacheError, code="RESOURCE_EXHAUSTED"):
    """The service is at its limit (too many calls in flight, a message too large); retrying
    later, with backoff, may succeed.
    """


_ERRORS_BY_CODE: dict[str, type[CacheError]] = {
    error.code: error
    for error in (
        NotFoundError,
        AlreadyExistsError,
        InvalidArgumentError,
        FailedPreconditionError,
        UnavailableError,
        DeadlineExceededError,
        InternalError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
    )
}


def error_for_code(code: str, message: str) -> CacheError:
    """Return the taskcache error for a gRPC or Connect status code name (any case).

    Codes without a dedicated class (UNKNOWN, UNIMPLEMENTED, ...) become an
    InternalError whose message names the code.
    """
    name = code.upper()
    error_class = _ERRORS_BY_CODE.get(name)
    if error_class is None:
        return InternalError(f"{name}: {message}")
    return error_class(message)
