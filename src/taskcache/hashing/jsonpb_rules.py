"""Formatting rules of golang/protobuf ``jsonpb`` (v1.5) that both hashing routes share.

These reproduce what Go writes, including where Python's ``json_format`` differs or refuses:
timestamps outside years 0001-9999, 0/3/6/9 fractional digits, float32 values printed with
their shortest float32 text, and map keys printed with ``fmt.Sprint``.

Rules only: it walks no messages and hashes nothing.
"""

from __future__ import annotations

import math
import struct
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, TypeAlias

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from taskcache.errors import InvalidArgumentError

# Reflection walks both upb and pure-Python messages, whose runtime descriptor classes are not
# the ones the type stubs name; the walkers take them through these aliases.
ReflectedField: TypeAlias = Any
ReflectedMessage: TypeAlias = Any

_NANOS_PER_SECOND = 1_000_000_000
_MAX_DURATION_SECONDS = 315_576_000_000
_SECONDS_PER_DAY = 86_400
# Go's time.Time.Format works on unsigned seconds since its absolute zero year; the offset from
# Unix seconds is unixToInternal + internalToAbsolute. Timestamps near the int64 limits wrap
# around in that arithmetic, and Go prints the wrapped date.
_GO_UNIX_TO_ABSOLUTE = 62_135_596_800 + 9_223_371_966_579_724_800
_UINT64_MODULUS = 2**64

# jsonpb's wellKnownType(): only these google.protobuf messages get special JSON forms.
# Empty and FieldMask are absent on purpose: Go's jsonpb writes them as ordinary messages.
WRAPPER_TYPES = frozenset(
    f"google.protobuf.{name}"
    for name in (
        "BoolValue",
        "BytesValue",
        "StringValue",
        "Int32Value",
        "UInt32Value",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "DoubleValue",
    )
)
ANY = "google.protobuf.Any"
DURATION = "google.protobuf.Duration"
TIMESTAMP = "google.protobuf.Timestamp"
VALUE = "google.protobuf.Value"
STRUCT = "google.protobuf.Struct"
LIST_VALUE = "google.protobuf.ListValue"
NULL_VALUE_ENUM = "google.protobuf.NullValue"

SPECIAL_TYPES = WRAPPER_TYPES | {ANY, DURATION, TIMESTAMP, VALUE, STRUCT, LIST_VALUE}

# wellKnownType() also names Empty; inside an Any it selects the {"@type", "value"} form.
ANY_VALUE_FORM = SPECIAL_TYPES | {"google.protobuf.Empty"}

SIXTY_FOUR_BIT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})


def _trim_fraction(text: str) -> str:
    # Go trims a 9-digit fraction to 6, 3 or no digits, in that order.
    for suffix in ("000", "000", ".000"):
        text = text.removesuffix(suffix)
    return text


def _civil_from_days(days: int) -> tuple[int, int, int]:
    # Proleptic Gregorian calendar with astronomical years (year 0 exists), as Go's time uses.
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    year = year_of_era + era * 400
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    return (year + 1 if month <= 2 else year), month, day


def _format_year(year: int) -> str:
    return f"-{-year:04d}" if year < 0 else f"{year:04d}"


def format_timestamp(seconds: int, nanos: int) -> str:
    """Return jsonpb's text of a Timestamp (without quotes).

    Raises InvalidArgumentError when ``nanos`` is outside [0, 1e9), as Go does.
    """
    if not 0 <= nanos < _NANOS_PER_SECOND:
        raise InvalidArgumentError(f"timestamp nanos {nanos} out of range", field="nanos")
    effective = (seconds + _GO_UNIX_TO_ABSOLUTE) % _UINT64_MODULUS - _GO_UNIX_TO_ABSOLUTE
    days, second_of_day = divmod(effective, _SECONDS_PER_DAY)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    text = (
        f"{_format_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        f".{nanos:09d}"
    )
    return _trim_fraction(text) + "Z"


def format_duration(seconds: int, nanos: int) -> str:
    """Return jsonpb's text of a Duration (without quotes).

    Raises InvalidArgumentError for out-of-range seconds or nanos, or mismatched signs.
    """
    if not -_MAX_DURATION_SECONDS <= seconds <= _MAX_DURATION_SECONDS:
        raise InvalidArgumentError(f"duration seconds {seconds} out of range", field="seconds")
    if not -_NANOS_PER_SECOND < nanos < _NANOS_PER_SECOND:
        raise InvalidArgumentError(f"duration nanos {nanos} out of range", field="nanos")
    if (seconds > 0 > nanos) or (seconds < 0 < nanos):
        raise InvalidArgumentError("duration seconds and nanos have different signs")
    sign = ""
    if seconds < 0 or nanos < 0:
        sign, seconds, nanos = "-", -seconds, -nanos
    return _trim_fraction(f"{sign}{seconds}.{nanos:09d}") + "s"


_FLOAT32_INFINITY_BITS = 0x7F800000
_FLOAT32_OVERFLOW = Decimal(2) ** 128


def _float32_from_bits(bits: int) -> Decimal:
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    return Decimal(value)


def float32_as_json_double(value: float) -> float:
    """Return the double Go's JSON decoder reads back from Go's text of float32 ``value``.

    Go prints a float32 with the shortest decimal that parses back (with float32 rounding,
    ties to even) to the same float32, the closest such decimal if several; that decimal,
    read as a double, is what objecthash sees (float32 1.3 -> 1.3, not 1.2999999523...).
    """
    if value == 0 or math.isinf(value) or math.isnan(value):
        return value
    magnitude = abs(value)
    bits: int = struct.unpack("<I", struct.pack("<f", magnitude))[0]
    with localcontext() as context:
        context.prec = 400  # exact arithmetic on float32 values and their midpoints
        exact = Decimal(magnitude)
        below = _float32_from_bits(bits - 1) if bits > 1 else Decimal(0)
        above = (
            _float32_from_bits(bits + 1) if bits + 1 < _FLOAT32_INFINITY_BITS else _FLOAT32_OVERFLOW
        )
        low, high = (below + exact) / 2, (exact + above) / 2
        ties_round_here = bits % 2 == 0
        for digits in range(1, 10):
            step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
            down = (exact / step).to_integral_value(rounding=ROUND_FLOOR) * step
            inside = [
                candidate
                for candidate in (down, down + step)
                if low < candidate < high or (ties_round_here and candidate in (low, high))
            ]
            if inside:
                # Equally close candidates: Go's shortest formatting rounds half to even.
                closest = min(
                    inside,
                    key=lambda candidate: (abs(candidate - exact), (candidate / step) % 2),
                )
                return math.copysign(float(closest), value)
    return value


def map_key_text(key: Any) -> str:
    """Return ``fmt.Sprint(key)`` for a protobuf map key (bool, integer or string)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def field_json_name(field: ReflectedField) -> str:
    """Return the JSON key jsonpb writes for ``field`` (``[full.name]`` for extensions)."""
    if field.is_extension:
        return f"[{field.full_name}]"
    name: str = field.json_name
    return name


def is_map_field(field: ReflectedField) -> bool:
    """Return whether ``field`` is a protobuf map."""
    message_type = field.message_type
    return bool(
        message_type is not None and field.is_repeated and message_type.GetOptions().map_entry
    )


def nonfinite_text(value: float) -> str | None:
    """Return the string jsonpb writes for NaN/Infinity/-Infinity, or None for finite values."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return None


def unpack_any(message: ReflectedMessage) -> tuple[str, ReflectedMessage]:
    """Return an Any's type URL and its decoded payload, resolved in the default pool.

    Raises InvalidArgumentError when the type is unknown or the payload does not decode.
    """
    type_url: str = message.type_url
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url.rsplit("/", 1)[-1])
    except KeyError as error:
        raise InvalidArgumentError(f"cannot resolve Any type {type_url!r}") from error
    inner = message_factory.GetMessageClass(descriptor)()
    try:
        inner.ParseFromString(message.value)
    except DecodeError as error:
        raise InvalidArgumentError(f"cannot decode Any of type {type_url!r}") from error
    return type_url, inner
