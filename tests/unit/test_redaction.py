"""Secrets never reach the logs: the redactor hides configured secrets, fields named like
secrets and known secret shapes, and leaves prose and ordinary values alone."""

from __future__ import annotations

import json
import logging
import secrets

import pytest

from drift_segment_source import logs
from drift_segment_source.app_mode.secrets_box import SecretBox
from drift_segment_source.logs import REDACTED, JsonLines, Redactor

log = logging.getLogger("drift_segment_source.test")


def line(message: str, *args: object, **extra: object) -> dict[str, object]:
    """What the service's formatter writes for one log call, read back."""
    record = logging.LogRecord(log.name, logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    parsed: dict[str, object] = json.loads(JsonLines().format(record))
    return parsed


def test_a_field_named_like_a_secret_is_redacted_whatever_its_value() -> None:
    entry = line("saving", access_token="short", refresh_token=["a", "b"], write_key="wk",
                 client_secret={"nested": "x"}, password="p", Authorization="anything",
                 **{"X-Verification-Token": "tok"})
    for name in ("access_token", "refresh_token", "write_key", "client_secret", "password",
                 "Authorization", "X-Verification-Token"):
        assert entry[name] == REDACTED, name


def test_flags_counts_and_times_named_like_secrets_are_kept() -> None:
    entry = line("org", has_access_token=True, token_expires_at=1714420800.5, write_key_set=False,
                 access_token=None, tokens=3)
    assert (entry["has_access_token"], entry["token_expires_at"], entry["write_key_set"],
            entry["access_token"], entry["tokens"]) == (True, 1714420800.5, False, None, 3)


def test_secret_fields_inside_nested_values_are_redacted() -> None:
    entry = line("answer", answer={"access_token": "abc", "expires_in": 7200,
                                   "items": [{"refreshToken": "def", "id": 1}]})
    assert entry["answer"] == {"access_token": REDACTED, "expires_in": 7200,
                               "items": [{"refreshToken": REDACTED, "id": 1}]}


@pytest.mark.parametrize("written, shown", [
    ("Authorization: Bearer abcDEF0123456789xyz", f"Authorization: Bearer {REDACTED}"),
    ("sent bearer abcDEF0123456789.xyz_~+/= too", f"sent bearer {REDACTED} too"),
    ("Basic d3JpdGVLZXk6 header", f"Basic {REDACTED} header"),
    ("GET /x?access_token=s3cr3t-value&limit=1", f"GET /x?access_token={REDACTED}&limit=1"),
    ("refresh_token: r-123456", f"refresh_token: {REDACTED}"),
    ('answer {"access_token": "a1b2c3d4", "expires_in": 7200}',
     f'answer {{"access_token": "{REDACTED}", "expires_in": 7200}}'),
    ("writeKey=AAAAwriteKeyOrgA0123456789abcdef", f"writeKey={REDACTED}"),
    ("PASSWORD=hunter22 and api_key='k-9999'", f"PASSWORD={REDACTED} and api_key='{REDACTED}'"),
    ("JWT eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3 end",
     f"JWT {REDACTED} end"),
])
def test_secrets_written_in_known_shapes_are_redacted(written: str, shown: str) -> None:
    assert line(written)["message"] == shown


def test_sealed_secrets_are_redacted_by_their_fernet_shape() -> None:
    sealed = SecretBox("any-key").seal("a secret").decode()
    assert line(f"row {sealed}.")["message"] == f"row {REDACTED}."


@pytest.mark.parametrize("text", [
    "webhook accepted",
    "request 0123456789abcdef0123456789abcdef done",
    "messageId drift-new_conversation-9f2c4e1a0b7d4c3e8a6f5b2d1c0e9f8a",
    "no refresh token stored",
    "Drift refused the token; re-install the app",
    "token_expires_at=1714420800 and write_key_set=true",
    "configuration incomplete: DRIFT_VERIFICATION_TOKEN: required to accept webhooks",
    "SECRET_KEY: Required in app mode. Secret: none yet",
    "the token: missing, so the password: unknown",
    "HTTP Basic authentication or a Bearer credential",
])
def test_what_is_not_a_secret_is_left_alone(text: str) -> None:
    assert line(text)["message"] == text


@pytest.mark.parametrize("written, shown", [
    ("token: required1", f"token: {REDACTED}"),  # a word with a digit is a value
    ("token=required", f"token={REDACTED}"),  # after "=" always a value
    ('{"token": "required"}', f'{{"token": "{REDACTED}"}}'),  # quoted: always a value
    ("secret: OpenSesame", f"secret: {REDACTED}"),  # mixed case: not a word of prose
])
def test_prose_is_told_from_values_by_their_shape(written: str, shown: str) -> None:
    assert line(written)["message"] == shown


def test_configured_secrets_of_any_shape_are_redacted_also_json_escaped() -> None:
    redactor = Redactor()
    database_url = 'postgresql://relay:p"w@db:5432/relay'
    redactor.add_configured(["fixture-verification-token", database_url])
    assert redactor.scrub("token fixture-verification-token.") == f"token {REDACTED}."
    assert redactor.scrub(json.dumps({"url": database_url})) == json.dumps({"url": REDACTED})


def test_an_org_secret_is_redacted_where_it_stands_as_a_word() -> None:
    redactor = Redactor()
    write_key = "AAAAwriteKeyOrgA0123456789abcdef"
    redactor.add([write_key, "drift-at-" + "0123456789abcdef01234567"])
    assert redactor.scrub(f"key={write_key};") == f"key={REDACTED};"
    assert redactor.scrub(f'"{write_key}"') == f'"{REDACTED}"'
    # Dashes and underscores split words, so a secret is found inside such a compound too.
    assert redactor.scrub("drift-at-0123456789abcdef01234567") == f"drift-at-{REDACTED}"
    assert redactor.scrub(f"x_{write_key}_y") == f"x_{REDACTED}_y"


def test_org_secrets_are_bounded_least_recently_used_forgotten_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_ORG_SECRETS", 3)
    redactor = Redactor()
    first, second, third, fourth = (secrets.token_hex(16) for _ in range(4))
    redactor.add([first, second, third])
    redactor.add([first])  # decrypted again: used recently
    redactor.add([fourth])  # over the bound: the least recently used (second) goes
    assert [redactor.scrub(word) == REDACTED for word in (first, second, third, fourth)] == [
        True, False, True, True]

