"""Marshmallow fields for Drift payloads: values are checked, never converted.

Drift's ids are 64-bit integers (some above 2**53) and its times are epoch milliseconds; the
Drift Segment Source forwards them as Drift sent them, so these fields validate and return
the value unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load

# Epoch milliseconds between 1973-03-03 and 2286-11-20. A value below is almost surely in
# seconds: refused with a message saying so, not silently multiplied (SPEC §3).
MIN_EPOCH_MS = 100_000_000_000
MAX_EPOCH_MS = 9_999_999_999_999
# Drift ids and counters are 64-bit; a larger number cannot be what Drift meant, and
# Segment's API (float64 numbers) would refuse or mangle it (SPEC §4).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def fits_64_bits(value: Any) -> bool:
    """Every integer in a JSON value is within the signed 64-bit range."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not INT64_MIN <= item <= INT64_MAX:
                return False
    return True


class DriftSchema(Schema):
    """Base of every Drift ``data`` schema: unknown fields are accepted and dropped."""

    class Meta:
        unknown = EXCLUDE


class DriftId(fields.Field[int | str]):
    """A Drift numeric id: a non-negative integer, or a string of digits, kept as sent."""

    default_error_messages = {
        "invalid": "Not a valid Drift id (an integer or digit string).",
        "too_large": "Too large for a 64-bit Drift id.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | str:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int) and value >= 0:
            if value > INT64_MAX:
                raise self.make_error("too_large")
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit():
            # Length first: int() of thousands of digits is slow (and refused past 4,300).
            if len(value) > 19 or int(value) > INT64_MAX:
                raise self.make_error("too_large")
            return value
        raise self.make_error("invalid")


class Integer(fields.Integer):
    """A 64-bit integer as JSON has it: ``true`` and ``1.0`` are not integers."""

    default_error_messages = {"too_large": "Outside the 64-bit integer range."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        number = super()._validated(value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise self.make_error("too_large")
        return number


class Numeric(fields.Field[int | float]):
    """A JSON number (not a boolean, not NaN), kept as sent: ``34`` stays ``34``."""

    default_error_messages = {"invalid": "Not a valid number."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise self.make_error("invalid")
        if not fits_64_bits(value) or value in (float("inf"), float("-inf")):
            raise self.make_error("invalid")
        return value


class AnyJson(fields.Raw):
    """Any JSON value Segment can carry: integers within 64 bits (contact attributes)."""

    default_error_messages = {"too_large": "Holds an integer outside the 64-bit range."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if not fits_64_bits(value):
            raise self.make_error("too_large")
        return value


class Boolean(fields.Field[bool]):
    """A JSON boolean; marshmallow's own also takes "yes" and 1 and converts them."""

    default_error_messages = {"invalid": "Not a valid boolean."}

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class EventTime(Integer):
    """Epoch milliseconds used as the Segment ``timestamp``: range-checked."""

    default_error_messages = {
        "range": "Expected epoch milliseconds (1973–2286), got {value}.",
        "seconds": "Got {value}, which looks like epoch seconds; Drift sends epoch milliseconds.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        number = super()._deserialize(value, attr, data, **kwargs)
        assert number is not None
        if 1_000_000_000 <= number < MIN_EPOCH_MS:
            raise self.make_error("seconds", value=number)
        if not MIN_EPOCH_MS <= number <= MAX_EPOCH_MS:
            raise self.make_error("range", value=number)
        return number


class IdList(fields.List):  # type: ignore[type-arg]
    """A list of Drift ids (participants, added/removed users)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(DriftId(), **kwargs)


def flatten_nested_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a payload nested one level under ``data.data`` into the outer ``data``."""
    inner = data.get("data")
    if not isinstance(inner, Mapping):
        return dict(data)
    merged = {key: value for key, value in data.items() if key != "data"}
    merged.update(inner)
    return merged


class FlattenedSchema(DriftSchema):
    """A schema whose fields may arrive flat or nested one level under ``data.data``."""

    @pre_load
    def _flatten(self, data: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise ValidationError("data must be an object")
        return flatten_nested_data(data)
