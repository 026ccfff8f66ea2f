"""Settings are declared once (config.py) and typed per component: nothing undeclared passes
through, and each component reads its own typed settings."""

from __future__ import annotations

import pytest

from drift_segment_source.config import ConfigError, load_settings
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
