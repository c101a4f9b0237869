"""Malformed arguments in-process: key inputs, time ranges, the put cutoff, body decoding and
the rate-limited rejection log (the wire side is fuzzed in test_malformed_requests.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from flyteidl.core import literals_pb2 as literals_pb2_v1
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from builders import int_map, make_identifier, make_interface
from taskcache import InvalidArgumentError, Key, hashing
from taskcache.manager import replacement_cutoff
from taskcache.server import calls
from taskcache.server.decoding import decode_binary, decode_json
from taskcache.wiretime import as_interval, duration_to_timedelta, timestamp_to_datetime


def _key(inputs: object) -> Key:
    return Key(make_identifier(), "1", make_interface("n"), inputs=inputs)  # type: ignore[arg-type]


def test_key_inputs_are_a_literal_map_or_a_reader() -> None:
    for wrong in ({"n": 12}, 12, "n=12", int_map(n=1).literals["n"]):
        with pytest.raises(TypeError, match="Key inputs must be a LiteralMap or an InputReader"):
            _key(wrong)
    v1 = literals_pb2_v1.LiteralMap.FromString(int_map(n=12).SerializeToString())
    assert hashing.cache_key(_key(v1)) == hashing.cache_key(_key(int_map(n=12)))

    class Reader:
        def get(self) -> object:
            return {"n": 12}

    with pytest.raises(TypeError, match=r"get\(\) must return a LiteralMap, not dict"):
        hashing.cache_key(_key(Reader()))


def test_interval_arguments() -> None:
    assert as_interval(3, "x") == timedelta(seconds=3)
    assert as_interval(timedelta(minutes=1), "x") == timedelta(minutes=1)
    with pytest.raises(TypeError, match=r"x must be a datetime\.timedelta or seconds"):
        as_interval(False, "x")
    with pytest.raises(InvalidArgumentError, match=r"^x: "):
        as_interval(-(10**12), "x")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**63 - 1, 0), (-(2**63), 0), (315_576_000_001, 0), (1, -1), (-1, 1), (0, 10**9)],
)
def test_durations_out_of_range_name_the_field(seconds: int, nanos: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^heartbeat_interval: "):
        duration_to_timedelta(Duration(seconds=seconds, nanos=nanos), "heartbeat_interval")


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(0, -1), (0, 10**9), (253_402_300_800, 0), (-62_135_596_801, 0)]
)
def test_timestamps_out_of_range_name_the_field(seconds: int, nanos: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^created_at: "):
        timestamp_to_datetime(Timestamp(seconds=seconds, nanos=nanos), "created_at")


def test_the_edges_of_the_ranges_convert() -> None:
    longest = Duration(seconds=-315_576_000_000, nanos=-999_999_999)
    assert duration_to_timedelta(longest, "d") < timedelta(days=-3_652_000)
    assert timestamp_to_datetime(Timestamp(seconds=253_402_300_799), "t").year == 9999
    assert timestamp_to_datetime(Timestamp(seconds=-62_135_596_800), "t").year == 1


def test_a_max_age_before_year_one_has_no_cutoff() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert replacement_cutoff(now, None) is None
    assert replacement_cutoff(now, timedelta(seconds=10**11)) is None
    assert replacement_cutoff(now, timedelta(days=1)) == now - timedelta(days=1)
    since_year_one = now - datetime.min.replace(tzinfo=UTC)
    assert replacement_cutoff(now, since_year_one) == datetime.min.replace(tzinfo=UTC)


def test_decoding_errors_name_what_they_can() -> None:
    request = v2_pb2.GetCacheRequest()
    request.base_request.key = "ab"
    bad_utf8 = request.SerializeToString().replace(b"ab", b"\xc3\x28")
    with pytest.raises(InvalidArgumentError, match=r"^base_request\.key: .*UTF-8"):
        decode_binary(bad_utf8, v2_pb2.GetCacheRequest())
    with pytest.raises(InvalidArgumentError, match="in protobuf binary") as corrupt:
        decode_binary(b"\xd6", v2_pb2.GetCacheRequest())
    assert "Error" not in corrupt.value.message
    with pytest.raises(InvalidArgumentError, match=r"^baseRequest\.key: ") as typed:
        decode_json(b'{"baseRequest": {"key": 5}}', v2_pb2.GetCacheRequest())
    assert "Error" not in typed.value.message
    with pytest.raises(InvalidArgumentError, match="duplicate key 'key'"):
        decode_json(b'{"baseRequest": {"key": "a", "key": "b"}}', v2_pb2.GetCacheRequest())
    with pytest.raises(InvalidArgumentError, match="must be a JSON object, not int"):
        decode_json(b"5", v2_pb2.GetCacheRequest())
    deep = b'{"baseRequest":' * 200 + b"{}" + b"}" * 200
    with pytest.raises(InvalidArgumentError) as nested:
        decode_json(deep, v2_pb2.GetCacheRequest())
    assert len(nested.value.message) < 400


def test_rejections_are_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(calls.time, "monotonic", lambda: clock[0])
    log = calls.RejectionLog(per_second=3)
    with caplog.at_level(logging.WARNING, logger=calls.logger.name):
        for _ in range(10):
            log.record("grpc", "svc", "Get", "INVALID_ARGUMENT", "bad")
        assert len(caplog.records) == 3
        clock[0] += 1
        log.record("grpc", "svc", "Get", "INVALID_ARGUMENT", "bad")
    assert len(caplog.records) == 4
    assert caplog.records[-1].getMessage().endswith("(7 more rejections not logged)")
    assert "rejected -> INVALID_ARGUMENT: bad" in caplog.records[0].getMessage()
