"""``wiretime.set_timestamp`` is ``Timestamp.FromDatetime``, only cheaper: same message for
every datetime a Timestamp can hold (naive ones count as UTC, aware ones in any zone).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from taskcache.wiretime import set_timestamp

_ZONES = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), _ZONES)
def test_set_timestamp_equals_from_datetime(moment: datetime, zone: timezone | None) -> None:
    value = moment if zone is None else moment.replace(tzinfo=zone)
    expected, actual = Timestamp(), Timestamp()
    expected.FromDatetime(value)
    set_timestamp(actual, value)
    assert (actual.seconds, actual.nanos) == (expected.seconds, expected.nanos)
