"""EnvironmentReader: what the hot path reads instead of ``os.environ.get`` is exactly it."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskcache.environment import EnvironmentReader

NAMES = ("TASKCACHE_TEST_READER_A", "TASKCACHE_TEST_READER_B", "TASKCACHE_TEST_READER_C")


def _expected() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in NAMES)


@pytest.fixture(autouse=True)
def _unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


# One step: set a variable (to text that may be empty or non-ASCII) or delete it.
_steps = st.lists(
    st.tuples(
        st.sampled_from(NAMES),
        st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
    ),
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(_steps)
def test_every_read_equals_os_environ_get(steps: list[tuple[str, str | None]]) -> None:
    reader = EnvironmentReader(NAMES)
    try:
        for name, value in steps:
            assert reader.read() == _expected()
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
            assert reader.read() == _expected()
    finally:
        for name in NAMES:
            os.environ.pop(name, None)


def test_an_unchanged_environment_returns_the_same_tuple(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = EnvironmentReader(NAMES)
    first = reader.read()
    assert first == (None, None, None)
    monkeypatch.setenv("TASKCACHE_UNRELATED_VARIABLE", "x")  # not one of ours: no change
    assert reader.read() is first
    monkeypatch.setenv(NAMES[1], "b")
    changed = reader.read()
    assert changed == (None, "b", None)
    assert reader.read() is changed
    monkeypatch.setenv(NAMES[1], "b")  # set again to the same value: still equal
    assert reader.read() == changed


def test_a_replaced_os_environ_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = EnvironmentReader(NAMES)
    monkeypatch.setenv(NAMES[0], "real")
    assert reader.read()[0] == "real"
    # A plain dict (no backing store to look into) is read through its own get.
    monkeypatch.setattr(os, "environ", {NAMES[0]: "replaced", NAMES[2]: "c"})
    assert reader.read() == ("replaced", None, "c")
    os.environ[NAMES[0]] = "again"
    assert reader.read() == ("again", None, "c")
    monkeypatch.undo()
    assert reader.read() == _expected()
