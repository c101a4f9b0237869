"""The Flyte 2 SDK's own conversion, the reference that ``taskcache.values`` is held equal to."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from flyteidl2.core import interface_pb2, literals_pb2, types_pb2

from ci_policy import skip_or_fail


def _type_engine() -> Any:
    try:
        with warnings.catch_warnings():
            # flyte's own pydantic models (flyte.io, which conversions import when first
            # needed) warn about their class-based config as they load.
            warnings.simplefilter("ignore", DeprecationWarning)
            import flyte.io  # noqa: F401
            from flyte.types import TypeEngine
    except ImportError:
        skip_or_fail("the Flyte 2 SDK (flyte) is not installed")
    return TypeEngine


def sdk_literal_type(python_type: Any) -> types_pb2.LiteralType:
    """``TypeEngine.to_literal_type(python_type)``."""
    result: types_pb2.LiteralType = _type_engine().to_literal_type(python_type)
    return result


def sdk_literal(value: object, python_type: Any) -> literals_pb2.Literal:
    """``TypeEngine.to_literal(value, python_type, expected)``: async in Flyte 2, so run here.

    No Flyte context is needed for the types compared (none uploads anything).
    """
    engine = _type_engine()
    expected = engine.to_literal_type(python_type)
    result: literals_pb2.Literal = asyncio.run(engine.to_literal(value, python_type, expected))
    return result


def sdk_variable(python_type: Any) -> interface_pb2.Variable:
    """The interface Variable the SDK gives a task parameter of ``python_type``."""
    _type_engine()
    from flyte._internal.runtime.types_serde import transform_type

    result: interface_pb2.Variable = transform_type(python_type)
    return result
