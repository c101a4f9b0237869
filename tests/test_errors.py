"""taskcache.errors: each class's status code, the code-to-class table, and that errors
survive pickling.
"""

from __future__ import annotations

import pickle

import pytest

from taskcache import errors
from taskcache.errors import (
    CacheError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    error_for_code,
)
from taskcache.server.breaker import DatabaseDownError

CODES = {
    "NOT_FOUND": errors.NotFoundError,
    "ALREADY_EXISTS": errors.AlreadyExistsError,
    "INVALID_ARGUMENT": errors.InvalidArgumentError,
    "FAILED_PRECONDITION": errors.FailedPreconditionError,
    "UNAVAILABLE": errors.UnavailableError,
    "DEADLINE_EXCEEDED": errors.DeadlineExceededError,
    "INTERNAL": errors.InternalError,
    "PERMISSION_DENIED": errors.PermissionDeniedError,
    "UNAUTHENTICATED": errors.UnauthenticatedError,
    "RESOURCE_EXHAUSTED": errors.ResourceExhaustedError,
}


@pytest.mark.parametrize(("code", "error_class"), sorted(CODES.items()))
def test_each_class_carries_its_code_and_is_what_the_code_becomes(
    code: str, error_class: type[CacheError]
) -> None:
    assert error_class.code == code
    assert error_class.__doc__
    error = error_for_code(code.lower(), "it failed")
    assert type(error) is error_class
    assert error.message == "it failed"


def test_the_base_and_codes_without_a_class() -> None:
    assert CacheError.code == "UNKNOWN"
    error = error_for_code("unimplemented", "no such method")
    assert type(error) is InternalError
    assert error.message == "UNIMPLEMENTED: no such method"


def test_a_subclass_naming_no_code_keeps_its_bases() -> None:
    assert DatabaseDownError.code == UnavailableError.code == "UNAVAILABLE"

    class GoneError(NotFoundError):
        """A test subclass."""

    assert GoneError("x").code == "NOT_FOUND"


def test_a_subclass_may_name_its_own_code_without_changing_the_table() -> None:
    class CallCancelledError(CacheError, code="CANCELLED"):
        """A test subclass."""

    assert CallCancelledError("x").code == "CANCELLED"
    assert type(error_for_code("CANCELLED", "x")) is InternalError


@pytest.mark.parametrize("error_class", sorted(CODES.values(), key=lambda kind: kind.code))
def test_errors_survive_pickling(error_class: type[CacheError]) -> None:
    error = error_class("it failed")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is error_class
    assert copy.message == "it failed"
    assert copy.code == error_class.code


def test_an_invalid_argument_keeps_its_message_through_pickling() -> None:
    error = InvalidArgumentError("must be at least 1", field="page_size")
    assert str(error) == "page_size: must be at least 1"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InvalidArgumentError
    assert str(copy) == "page_size: must be at least 1"
