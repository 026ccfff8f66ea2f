"""Settings are declared once (config.py) and typed per component: nothing undeclared passes
through, and each component reads its own typed settings."""

from __future__ import annotations

import pytest

from drift_segment_source.config import (
    PARSED_AS,
    SETTINGS,
    SETTINGS_BY_NAME,
    ConfigError,
    Setting,
    above,
    at_least,
    load_settings,
)
from drift_segment_source.delivery.settings import DeliverySettings, RetentionSettings


def test_an_undeclared_setting_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match="CLOCK is not a setting"):
        load_settings(environ={}, overrides={"CLOCK": lambda: 0.0})


def test_the_engine_reads_typed_settings_from_the_declared_ones() -> None:
    settings = load_settings(environ={"DELIVERY_LEASE_SECONDS": "12",
                                      "DELIVERY_BATCH_SIZE": "50",
                                      "RETENTION_INTERVAL_SECONDS": "30"})
    delivery = DeliverySettings.from_settings(settings)
    assert (delivery.lease_seconds, delivery.batch_size) == (12.0, 50)
    assert delivery.lookup_limit_seconds == 2 * delivery.drift_timeout_seconds + 1
    assert RetentionSettings.from_settings(settings).interval_seconds == 30.0


def test_a_setting_of_the_wrong_kind_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="DELIVERY_BATCH_SIZE"):
        load_settings(environ={"DELIVERY_BATCH_SIZE": "lots"})


def numeric_settings() -> list[Setting]:
    return [setting for setting in SETTINGS if PARSED_AS[setting.parse] in NUMERIC_KINDS]


NUMERIC_KINDS = ("a whole number", "a number")


def test_every_numeric_setting_declares_its_range_and_its_default_is_in_it() -> None:
    assert len(numeric_settings()) >= 20
    for setting in numeric_settings():
        assert setting.bounds is not None, setting.name
        assert setting.bounds.allows(setting.default), setting.name


@pytest.mark.parametrize("name, value, says", [
    ("WEB_CONCURRENCY", "0", "a whole number, 1 or more"),
    ("WEB_THREADS", "0", "a whole number, 1 or more"),
    ("PORT", "99999", "a whole number, from 1 to 65535"),
    ("PORT", "0", "a whole number, from 1 to 65535"),
    ("DELIVERY_BATCH_SIZE", "0", "a whole number, 1 or more"),
    ("DELIVERY_BATCH_SIZE", "-1", "a whole number, 1 or more"),
    ("DELIVERY_MAX_ATTEMPTS", "0", "a whole number, 1 or more"),
    ("DELIVERY_LEASE_SECONDS", "0", "a number, 1 or more"),
    ("DELIVERY_LEASE_SECONDS", "0.5", "a number, 1 or more"),
    ("SEGMENT_TIMEOUT_SECONDS", "0", "a number, above 0"),
    ("DRIFT_TIMEOUT_SECONDS", "-2", "a number, above 0"),
    ("DELIVERY_POLL_SECONDS", "0", "a number, above 0"),
    ("RETENTION_DAYS", "0", "a number, above 0"),
    ("DEDUPE_RETENTION_DAYS", "-1", "a number, above 0"),
    ("TRUSTED_PROXIES", "-1", "a whole number, 0 or more"),
    ("DATABASE_STATEMENT_TIMEOUT_SECONDS", "2147484", "a number, from 0 to 2147483"),
    ("DATABASE_LOCK_TIMEOUT_SECONDS", "0", "a number, above 0, at most 2147483"),
])
def test_a_value_out_of_range_is_one_line_naming_setting_value_range_and_fix(
        name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={name: f" {value} "})
    message = str(raised.value)
    default = SETTINGS_BY_NAME[name].default
    assert message.startswith(f"{name}={value!r} is out of range, it must be {says}: fix it, "
                              f"or unset it for the default {default:g} ("), message
    assert "\n" not in message


@pytest.mark.parametrize("name, value", [
    ("PORT", "1"), ("PORT", "65535"), ("TRUSTED_PROXIES", "0"), ("WEB_CONCURRENCY", "1"),
    ("DATABASE_STATEMENT_TIMEOUT_SECONDS", "0"), ("DATABASE_STATEMENT_TIMEOUT_SECONDS", "2147483"),
    ("SEGMENT_UNKNOWN_USER_RETRY_MINUTES", "0"), ("DELIVERY_LOOKUP_WAIT_SECONDS", "0"),
    ("DELIVERY_LEASE_SECONDS", "1"), ("DELIVERY_BACKOFF_SECONDS", "0.01"),
    ("RETENTION_INTERVAL_SECONDS", "0.5"), ("DELIVERY_BATCH_SIZE", "100000"),
])
def test_a_value_at_or_within_the_range_is_read_as_before(name: str, value: str) -> None:
    parsed = load_settings(environ={name: value})[name]
    assert parsed == SETTINGS_BY_NAME[name].parse(value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_number_that_is_not_finite_is_not_a_number(value: str) -> None:
    with pytest.raises(ConfigError, match=f"^DELIVERY_LEASE_SECONDS={value!r} is not a number: "
                                          "fix or unset it"):
        load_settings(environ={"DELIVERY_LEASE_SECONDS": value})


def test_overrides_are_held_to_the_same_ranges() -> None:
    # create_app(config) takes overrides: the same values are refused there as in the
    # environment, whether given as numbers or as text.
    with pytest.raises(ConfigError, match=r"^WEB_THREADS=0 is out of range"):
        load_settings(environ={}, overrides={"WEB_THREADS": 0})
    with pytest.raises(ConfigError, match=r"^DELIVERY_BATCH_SIZE='0' is out of range"):
        load_settings(environ={}, overrides={"DELIVERY_BATCH_SIZE": "0"})
    assert load_settings(environ={}, overrides={"DELIVERY_BACKOFF_SECONDS": 0.01})[
        "DELIVERY_BACKOFF_SECONDS"] == 0.01


def test_bounds_read_as_the_documentation_shows_them() -> None:
    assert str(at_least(1)) == "1 or more"
    assert str(at_least(1, 65535)) == "from 1 to 65535"
    assert str(above(0)) == "above 0"
    assert str(above(0.5, 10)) == "above 0.5, at most 10"
    assert not above(0).allows(0) and above(0).allows(1e-9)
    assert at_least(0).allows(0) and not at_least(0).allows(-1e-9)
    assert not at_least(1, 65535).allows(65536) and at_least(1, 65535).allows(65535)
    assert not at_least(0).allows(float("inf")) and not at_least(0).allows(float("nan"))
