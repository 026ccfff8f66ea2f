"""Migrations never import the application: the dedupe-key migration keeps its own copy of
each event's identity, which must agree with the translators'."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from drift_segment_source.sources.drift.translators import TRANSLATORS

from ..support.paths import FIXTURES

MIGRATIONS = (Path(__file__).resolve().parents[2] / "drift_segment_source" / "store"
              / "migrations" / "versions")


def test_the_frozen_identities_of_the_dedupe_key_migration_are_the_translators() -> None:
    """The migration keeps its own copy of each event's identity (it must never import the
    application); for every seed example, its copy and the translator's agree."""
    path = next(MIGRATIONS.glob("0002_*.py"))
    spec = importlib.util.spec_from_file_location("dedupe_keys_migration", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert set(migration.IDENTITIES) == set(TRANSLATORS)
    for event_type, translator in TRANSLATORS.items():
        for case in sorted((FIXTURES / event_type).glob("*.json")):
            if case.name.count(".") > 1:
                continue  # the expected batch or Drift API answers beside a webhook
            raw = json.loads(case.read_text())["data"]
            try:
                expected = translator.identity_as_sent(translator.validate(raw), 1714420800000)
            except Exception:
                continue  # a case the schema refuses: never stored
            data = translator.reshape(raw)
            assert migration.IDENTITIES[event_type](data, 1714420800000) == list(expected), \
                case

