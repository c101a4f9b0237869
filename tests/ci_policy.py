"""What a test does when its environment lacks something: skip on a developer's machine,
fail under ``CI=true`` (``.ci/run`` exports it), so that CI never goes green on a suite that
silently ran less than it claims.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the suite runs under CI (``CI=true``, as ``.ci/run`` sets it)."""
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(message: str) -> NoReturn:
    """Skip with ``message``; under ``CI=true`` fail with it instead."""
    if in_ci():
        pytest.fail(f"CI=true and {message}", pytrace=False)
    pytest.skip(message)
