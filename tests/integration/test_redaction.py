"""Secrets stay out of the logs by construction: by field name, by shape, by value.

The cost per line does not grow with the number of orgs (``bench/redaction.py`` measures
it); these tests hold the behaviour: whatever a careless log call passes, a secret comes
out as ``[redacted]``, and what is not a secret comes out as it went in.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest
import sqlalchemy
from flask import Flask

from drift_segment_source.app_mode.secrets_box import SecretBox
from drift_segment_source.logs import REDACTED
from drift_segment_source.store.db import orgs

from ..support.fake_drift import FakeDrift
from ..unit.test_redaction import log
from .app_mode import (
    ORG_A,
    SECRET_KEY,
    WRITE_KEY_A,
    install,
)

# -- an org's decrypted secrets, logged by accident -------------------------------------------


def test_org_token_decrypted_here_is_redacted_from_a_message_and_any_extra_field(
        app_mode: Callable[..., Flask], drift: FakeDrift,
        capfd: pytest.CaptureFixture[str]) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    # Another process refreshed the token: this one has never seen it until it decrypts it.
    token = "otherProcessToken" + secrets.token_hex(16)
    directory = app.extensions["routing"].directory
    with app.extensions["store"].engine.begin() as connection:
        connection.execute(sqlalchemy.update(orgs).where(orgs.c.org_id == ORG_A).values(
            access_token=SecretBox(SECRET_KEY).seal(token)))
    directory.changed(ORG_A)
    decrypted = directory.secrets(ORG_A)
    assert decrypted.access_token == token
    capfd.readouterr()
    log.warning("calling Drift with %s for %s", token, decrypted.write_key)
    log.warning("calling Drift", extra={"details": token, "org_token": token,
                                        "headers": {"Authorization": f"Bearer {token}"},
                                        "attempts": [f"tried {decrypted.write_key}"]})
    output = capfd.readouterr().err
    records = [json.loads(text) for text in output.splitlines()]
    assert token not in output and WRITE_KEY_A not in output
    assert records[0]["message"] == f"calling Drift with {REDACTED} for {REDACTED}"
    assert records[1]["details"] == records[1]["org_token"] == REDACTED
    assert records[1]["headers"] == {"Authorization": REDACTED}
    assert records[1]["attempts"] == [f"tried {REDACTED}"]


def test_tokens_issued_at_install_and_refresh_never_reach_the_log(
        app_mode: Callable[..., Flask], drift: FakeDrift,
        capfd: pytest.CaptureFixture[str]) -> None:
    app = app_mode()
    install(app.test_client(), drift, ORG_A, WRITE_KEY_A)
    drift.revoke_access(ORG_A)
    renewed = app.extensions["routing"].drift_credentials(ORG_A).refresh()
    assert renewed in drift.issued
    for issued in drift.issued:
        log.warning("careless: %s", issued, extra={"value": f"x {issued} y"})
    output = capfd.readouterr().err
    assert len(drift.issued) == 4
    assert not any(issued in output for issued in drift.issued)


# -- by field name --------------------------------------------------------------------------








# -- by shape --------------------------------------------------------------------------------










# -- by value ---------------------------------------------------------------------------------






