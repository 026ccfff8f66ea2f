"""Marshmallow fields for Drift payloads: ids are checked and kept as sent; times are read.

Drift's ids are 64-bit integers (some above 2**53) and its times are epoch milliseconds; the
Drift Segment Source forwards them as Drift sent them. Integration vendors' samples also
spell ids and epoch-ms times as numeric strings and times as ISO-8601 strings
(docs/event-mapping.md, "Input shapes accepted"):

- an id is kept exactly as sent (a numeric string stays a string, as Drift's app would pass
  it on); only identities read it as its number (``Spellings.canonical_ids``), so ``"123"``
  and ``123`` are one Drift event;
- a time becomes the epoch milliseconds a number would have been: numeric digits are that
  number, an ISO-8601 time with an offset is its instant; then the field's rules for numbers
  apply, so every spelling of one instant gives the same output;
- numeric strings are the digits of a JSON integer: no sign, point, exponent, space or
  leading zero. What cannot be told for sure (an ISO time without offset, a leap second,
  seconds where milliseconds are meant) is refused with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load

# Epoch milliseconds between 1973-03-03 and 2286-11-20. A value below is almost surely in
# seconds: refused with a message saying so, not silently multiplied
# (docs/event-mapping.md#the-ten-events).
MIN_EPOCH_MS = 100_000_000_000
MAX_EPOCH_MS = 9_999_999_999_999
# Drift ids and counters are 64-bit; a larger number cannot be what Drift meant, and
# Segment's API (float64 numbers) would refuse or mangle it
# (docs/reliability.md#what-every-request-gets).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The digits of a JSON integer that is not negative: a numeric string id or time.
NUMERIC = re.compile(r"0|[1-9][0-9]{0,18}")
# An ISO-8601 / RFC 3339 date and time with an offset; up to nanoseconds.
ISO_INSTANT = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))")
# A date, or a date and time, that names no offset: which instant it is cannot be told.
ISO_WITHOUT_OFFSET = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?)?")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOT_A_TIME = ("Not a time: expected epoch milliseconds (a number, or its digits as a string) "
              "or an ISO-8601 time with an offset (Z or ±hh:mm).")


def epoch_ms_of_text(text: str) -> int:
    """The epoch milliseconds a time string spells; ValueError saying why it spells none.

    Numeric digits are that number (the field then checks it as it checks numbers). An
    ISO-8601 time needs an offset; ``24:00:00`` is the next midnight, a leap second is
    refused (epoch time has no instant for it), and digits past the millisecond are dropped.
    """
    if NUMERIC.fullmatch(text):
        return int(text)
    found = ISO_INSTANT.fullmatch(text)
    if found is None:
        if ISO_WITHOUT_OFFSET.fullmatch(text):
            raise ValueError("An ISO-8601 time needs a time of day and an offset (Z or "
                             "±hh:mm): without them the instant it names is ambiguous.")
        raise ValueError(NOT_A_TIME)
    year, month, day, hour, minute, second = (int(part) for part in found.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = found.groups()[6:]
    digits = (fraction or "").ljust(3, "0")
    if second == 60:
        raise ValueError("A leap second (:60) has no instant of its own in epoch "
                         "milliseconds.")
    end_of_day = hour == 24
    if end_of_day and (minute or second or digits.strip("0")):
        raise ValueError("Only 24:00:00 (the end of the day) may use hour 24.")
    if not zulu and (int(offset_hours) > 23 or int(offset_minutes) > 59):
        raise ValueError("The offset must be under 24 hours (±hh:mm).")
    try:
        # datetime checks the calendar (no 30 February) and the clock (no 19:61).
        moment = datetime(year, month, day, 0 if end_of_day else hour, minute, second,
                          tzinfo=UTC)
        if end_of_day:
            moment += timedelta(days=1)
        if not zulu:
            offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
            moment -= offset if sign == "+" else -offset
    except (ValueError, OverflowError) as error:
        raise ValueError(f"Not a date and time: {error}.") from None
    # Whole seconds, in integers: a float of the seconds can land a millisecond off.
    return (moment - EPOCH) // timedelta(seconds=1) * 1000 + int(digits[:3])


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
    """A Drift numeric id: a non-negative integer, or its digits as a string, kept as sent."""

    default_error_messages = {
        "invalid": "Not a valid Drift id (an integer or its digits, without leading zeros).",
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
            # "0123" is not how 123 is written: as an anonymousId it would be another
            # visitor than 123, so it is refused rather than guessed.
            if not NUMERIC.fullmatch(value):
                raise self.make_error("invalid")
            return value
        raise self.make_error("invalid")


class OrgId(fields.Field[int | str]):
    """An org id inside ``data``: a 64-bit integer, or its digits as a string, kept as sent."""

    default_error_messages = {
        "invalid": "Not a valid Drift org id (an integer or its digits).",
        "too_large": "Outside the 64-bit integer range.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64_MIN <= value <= INT64_MAX:
                raise self.make_error("too_large")
            return value
        if isinstance(value, str) and NUMERIC.fullmatch(value):
            if int(value) > INT64_MAX:
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


class TimeProperty(Integer):
    """Epoch milliseconds passed on as a property (``updatedAt``, ``slotStart``…): a number
    as Drift sent it; a string is read as the number or instant it spells (``epoch_ms_of_text``)
    and becomes that number."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        if isinstance(value, str):
            try:
                value = epoch_ms_of_text(value)
            except ValueError as error:
                raise ValidationError(str(error)) from None
        number = super()._deserialize(value, attr, data, **kwargs)
        assert number is not None
        return number


class EventTime(TimeProperty):
    """Epoch milliseconds used as the Segment ``timestamp``: range-checked, whatever the
    spelling."""

    default_error_messages = {
        "range": "Expected epoch milliseconds (1973–2286), got {value}.",
        "seconds": "Got {value}, which looks like epoch seconds; Drift sends epoch milliseconds.",
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> int:
        number = super()._deserialize(value, attr, data, **kwargs)
        if 1_000_000_000 <= number < MIN_EPOCH_MS:
            raise self.make_error("seconds", value=number)
        if not MIN_EPOCH_MS <= number <= MAX_EPOCH_MS:
            raise self.make_error("range", value=number)
        return number


@dataclass(frozen=True)
class Spellings:
    """Where a schema keeps ids and times, so that data can be put in one spelling without
    running the schema: times as the epoch ms validation gives (delivery reads stored
    webhooks without re-validating), ids as numbers (for identities only)."""

    times: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    id_lists: tuple[str, ...] = ()
    nested: tuple[tuple[str, Spellings], ...] = ()

    @classmethod
    def of(cls, schema: Schema) -> Spellings:
        """The spellings of ``schema``'s declared fields, nested schemas included."""
        times, ids, id_lists, nested = [], [], [], []
        for name, field in schema.fields.items():
            if isinstance(field, TimeProperty):
                times.append(name)
            elif isinstance(field, DriftId | OrgId):
                ids.append(name)
            elif isinstance(field, fields.List) and isinstance(field.inner, DriftId):
                id_lists.append(name)
            elif isinstance(field, fields.Nested) and isinstance(field.schema, Schema):
                inner = cls.of(field.schema)
                if inner != cls():
                    nested.append((name, inner))
        return cls(tuple(times), tuple(ids), tuple(id_lists), tuple(nested))

    def numeric_times(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with its time strings (already validated) as epoch milliseconds."""
        if not self._spelled_as_text(data, self.times):
            return dict(data)  # the usual case: nothing to read again
        found = dict(data)
        for name in self.times:
            if isinstance(found.get(name), str):
                found[name] = epoch_ms_of_text(found[name])
        for name, inner in self.nested:
            if isinstance(found.get(name), Mapping):
                found[name] = inner.numeric_times(found[name])
        return found

    def _spelled_as_text(self, data: Mapping[str, Any], names: tuple[str, ...]) -> bool:
        """Whether any of ``names`` (or anything nested) holds text: only then is there a
        spelling to change, and a copy of ``data`` to make. (Plain loops: this runs for
        every row delivery translates.)"""
        for name in names:
            if type(data.get(name)) is str:
                return True
        for name in self.id_lists:
            value = data.get(name)
            if type(value) is list:
                for item in value:
                    if type(item) is str:
                        return True
        for name, _ in self.nested:
            if isinstance(data.get(name), Mapping):
                return True
        return False

    def ids_as_text(self, data: Mapping[str, Any]) -> bool:
        """Whether any id of ``data`` is spelled as text (``"123"``)."""
        return self._spelled_as_text(data, self.ids)

    def canonical_ids(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` with its ids as numbers: ``"123"`` and ``123`` name one Drift object."""
        if not self._spelled_as_text(data, self.ids):
            # The usual case, ids sent as numbers: read as it is (identities only read it).
            return data if isinstance(data, dict) else dict(data)
        found = dict(data)
        for name in self.ids:
            if isinstance(found.get(name), str) and NUMERIC.fullmatch(found[name]):
                found[name] = int(found[name])
        for name in self.id_lists:
            if isinstance(found.get(name), list):
                found[name] = [int(item) if isinstance(item, str) and NUMERIC.fullmatch(item)
                               else item for item in found[name]]
        for name, inner in self.nested:
            if isinstance(found.get(name), Mapping):
                found[name] = inner.canonical_ids(found[name])
        return found


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
