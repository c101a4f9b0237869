"""taskcache.values: numpy arrays and pandas frames are keyed by content and stored as blobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import input_key
from ci_policy import skip_or_fail
from taskcache import values
from taskcache.storage import BlobStore

try:
    import numpy as np
    import pandas as pd
except ImportError:  # pragma: no cover -- the dev extra installs both
    skip_or_fail("numpy and pandas (the 'data' extra) are not installed")


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(str(tmp_path / "blobs"))


def test_equal_arrays_have_equal_keys_whatever_their_layout() -> None:
    base = np.arange(24, dtype=np.int32).reshape(4, 6)
    fortran = np.asfortranarray(base)
    big_endian = base.astype(">i4")
    view = (np.arange(48, dtype=np.int32).reshape(4, 12) // 2)[:, ::2]
    assert not fortran.flags.c_contiguous
    assert not view.flags.c_contiguous
    np.testing.assert_array_equal(view, base)
    equal = (base, fortran, big_endian, view, base.copy())
    assert len({input_key(values.to_literal(a)) for a in equal}) == 1
    assert values.to_literal(base).hash.startswith("sha256:")


@pytest.mark.parametrize(
    "other",
    [
        np.arange(24, dtype=np.int64).reshape(4, 6),  # another dtype
        np.arange(24, dtype=np.int32).reshape(6, 4),  # another shape
        np.arange(1, 25, dtype=np.int32).reshape(4, 6),  # other bytes
    ],
)
def test_arrays_differing_in_dtype_shape_or_bytes_have_other_keys(other: Any) -> None:
    base = np.arange(24, dtype=np.int32).reshape(4, 6)
    assert input_key(values.to_literal(other)) != input_key(values.to_literal(base))


def test_an_array_is_written_to_the_store_and_read_back(store: BlobStore) -> None:
    array = np.linspace(0, 1, 10).reshape(2, 5)
    literal = values.to_literal(array, np.ndarray, store=store)
    assert literal.scalar.blob.uri.endswith(".npy")
    assert store.owns(literal.scalar.blob.uri)
    assert literal.hash == values.to_literal(array).hash
    back = values.from_literal(literal, np.ndarray)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_an_array_keyed_without_a_store_cannot_be_read_back() -> None:
    literal = values.to_literal(np.zeros(3))
    assert literal.scalar.blob.uri == ""
    with pytest.raises(TypeError, match="content digest"):
        values.from_literal(literal, np.ndarray)


def test_an_object_array_has_no_content_key() -> None:
    with pytest.raises(TypeError, match="Python objects"):
        values.to_literal(np.array([object()]))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(-1000, 1000), min_size=0, max_size=30),
    st.sampled_from(["<i8", ">i8", "<f4", "<i2"]),
)
def test_array_round_trip(numbers: list[int], dtype: str) -> None:
    array = np.array(numbers, dtype=dtype)
    store = BlobStore("memory://taskcache-values-tests")
    back = values.from_literal(values.to_literal(array, store=store), np.ndarray)
    np.testing.assert_array_equal(back, array)


def _frame() -> Any:
    return pd.DataFrame(
        {"n": [1, 2, 3], "x": [0.5, 1.5, None], "s": ["a", "b", "c"]},
        index=pd.Index([10, 20, 30], name="id"),
    )


def test_equal_frames_have_equal_keys() -> None:
    first, second = _frame(), _frame().copy(deep=True)
    assert input_key(values.to_literal(first)) == input_key(values.to_literal(second))


@pytest.mark.parametrize(
    "change",
    [
        lambda f: f.rename(columns={"n": "m"}),
        lambda f: f.astype({"n": "int32"}),
        lambda f: f.assign(s=["a", "b", "d"]),
        lambda f: f.set_axis([10, 20, 31]).rename_axis("id"),
        lambda f: f[["x", "n", "s"]],
        lambda f: f.iloc[:2],
    ],
    ids=["column-name", "dtype", "value", "index", "column-order", "rows"],
)
def test_frames_differing_in_content_have_other_keys(change: Any) -> None:
    assert input_key(values.to_literal(change(_frame()))) != input_key(values.to_literal(_frame()))


def test_a_frame_is_written_as_parquet_and_read_back(store: BlobStore) -> None:
    frame = _frame()
    literal = values.to_literal(frame, pd.DataFrame, store=store)
    assert literal.scalar.blob.uri.endswith(".parquet")
    assert literal.scalar.blob.metadata.type.format == "parquet"
    assert literal.hash == values.to_literal(frame).hash
    back = values.from_literal(literal, pd.DataFrame)
    pd.testing.assert_frame_equal(back, frame)


def test_without_pyarrow_a_frame_is_stored_as_a_pandas_pickle(
    store: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskcache.values import _data

    monkeypatch.setattr(_data, "_has_pyarrow", lambda: False)
    frame = _frame()
    literal = values.to_literal(frame, store=store)
    assert literal.scalar.blob.metadata.type.format == "pandas-pickle"
    assert literal.hash == values.to_literal(_frame()).hash
    pd.testing.assert_frame_equal(values.from_literal(literal, pd.DataFrame), frame)


def test_arrays_and_frames_nest_in_containers(store: BlobStore) -> None:
    value = {"a": np.ones(2), "b": np.zeros(3)}
    literal = values.to_literal(value, dict[str, np.ndarray], store=store)
    back = values.from_literal(literal, dict[str, np.ndarray])
    assert isinstance(back, dict)
    assert back.keys() == value.keys()
    for name, array in value.items():
        np.testing.assert_array_equal(back[name], array)
    assert values.infer_type([np.ones(1)]) == list[np.ndarray]


def test_literal_types_name_the_blob_formats() -> None:
    assert values.literal_type(np.ndarray).blob.format == "npy"
    assert values.literal_type(pd.DataFrame).blob.format == "parquet"
