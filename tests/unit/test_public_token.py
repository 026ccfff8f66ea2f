"""The public development token never goes with real delivery."""

from __future__ import annotations

from pathlib import Path

import pytest

from drift_segment_source import create_app
from drift_segment_source.config import ConfigError
from drift_segment_source.config import public_token_problem as problem_of

PUBLIC_TOKEN = "local-dev-token"


REAL_LOOKING_KEY = "AAAAwriteKeyOrgA0123456789abcdef"


def test_the_public_token_alone_is_allowed_for_a_dry_run() -> None:
    assert problem_of({"DRIFT_VERIFICATION_TOKEN": (PUBLIC_TOKEN,)}) is None
    assert problem_of({"DRIFT_VERIFICATION_TOKEN": ("mine",),
                       "SEGMENT_WRITE_KEY": REAL_LOOKING_KEY}) is None


@pytest.mark.parametrize("settings", [
    {"SEGMENT_WRITE_KEY": REAL_LOOKING_KEY},
    {"DRIFT_CLIENT_ID": "id", "DRIFT_CLIENT_SECRET": "secret", "SECRET_KEY": "k" * 32},
])
def test_the_public_token_with_a_write_key_or_in_app_mode_is_a_start_up_error(
        tmp_path: Path, settings: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="DRIFT_VERIFICATION_TOKEN.*local-dev-token"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'never.sqlite3'}",
                    "DRIFT_VERIFICATION_TOKEN": PUBLIC_TOKEN, **settings})
    assert not (tmp_path / "never.sqlite3").exists()

