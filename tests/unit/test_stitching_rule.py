"""Identity stitching's rule: which externalIds are the site's own user ids."""

from __future__ import annotations

from typing import Any

import pytest

from drift_segment_source import config
from drift_segment_source.app import create_app
from drift_segment_source.delivery.stitching import DRIFT_AID_PATTERN, Stitching

from ..support.webhooks import TOKEN

DRIFT_AID = "189f059b-4b5e-4c28-988c-b1764ae86fc"  # Drift's own documented example


def test_the_rule_tells_drift_aids_from_the_sites_own_ids() -> None:
    rule = Stitching.from_settings({"IDENTITY_STITCHING": "external_id"})
    assert rule is not None
    for anonymous in (DRIFT_AID, "7C3E9A21-0B5D-4F6E-9A1B-2C3D4E5F6A7B", "", "  ", None):
        assert rule.user_id(anonymous) is None
    for site_id in ("user-8841", "42", "jane@example.com", "7c3e9a21-0b5d-4f6e"):
        assert rule.user_id(site_id) == site_id
    custom = Stitching.from_settings({"IDENTITY_STITCHING": "external_id",
                                      "STITCHING_ANONYMOUS_PATTERN": r"anon-\d+"})
    assert custom is not None and custom.user_id("anon-17") is None
    assert custom.user_id(DRIFT_AID) == DRIFT_AID
    assert Stitching.from_settings({"IDENTITY_STITCHING": "off"}) is None
    assert DRIFT_AID_PATTERN


def test_a_bad_setting_stops_the_service_at_start(tmp_path: Any) -> None:
    for settings in ({"IDENTITY_STITCHING": "email"},
                     {"IDENTITY_STITCHING": "external_id", "STITCHING_ANONYMOUS_PATTERN": "("}):
        with pytest.raises(config.ConfigError, match="IDENTITY_STITCHING"):
            create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                        "DRIFT_VERIFICATION_TOKEN": TOKEN, **settings})

