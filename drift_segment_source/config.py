"""Every setting of the service, declared once: name, default, parser and a one-line doc.

Settings are read from the environment only (``create_app(config)`` may override them for
tests). ``drift-segment-source config`` prints this table with secrets masked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def _text(raw: str) -> str:
    return raw.strip()


def _integer(raw: str) -> int:
    return int(raw.strip())


def _number(raw: str) -> float:
    value = float(raw.strip())
    if not math.isfinite(value):  # nan, inf: no wait, count or age is either
        raise ValueError(f"expected a finite number, got {raw!r}")
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _token_list(raw: str) -> tuple[str, ...]:
    return tuple(token.strip() for token in raw.split(",") if token.strip())


PARSED_AS: dict[Callable[[str], Any], str] = {
    _text: "text", _integer: "a whole number", _number: "a number",
    _flag: "true or false", _token_list: "a comma-separated list"}


def _shown(number: float) -> str:
    """A number as a user would write it: 8000, not 8000.0."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: ``low`` (excluded when ``above``) up to ``high``
    (included). Every numeric setting has some: a count of 0, a timeout of 0 or a port past
    65535 gives a service that starts and does nothing, or never starts at all."""

    low: float
    high: float | None = None
    above: bool = False

    def allows(self, value: float) -> bool:
        """Whether ``value`` is within the bounds."""
        if not math.isfinite(value) or value < self.low or (self.above and value == self.low):
            return False
        return self.high is None or value <= self.high

    def __str__(self) -> str:
        low, high = _shown(self.low), None if self.high is None else _shown(self.high)
        if self.above:
            return f"above {low}" + (f", at most {high}" if high else "")
        return f"from {low} to {high}" if high else f"{low} or more"


def at_least(low: float, high: float | None = None) -> Bounds:
    """``low`` to ``high`` (or no end), both included."""
    return Bounds(low, high)


def above(low: float, high: float | None = None) -> Bounds:
    """Over ``low`` (a timeout or an interval of 0 is none), up to ``high`` included."""
    return Bounds(low, high, above=True)


# The longest wait PostgreSQL and SQLite take, in whole milliseconds that fit in 32 bits
# (about 24.8 days): past it PostgreSQL refuses the connection's options, and SQLite's busy
# timeout overflows.
LONGEST_DATABASE_WAIT_SECONDS = 2_147_483


@dataclass(frozen=True)
class Setting:
    """One environment variable: how to read it and what it means."""

    name: str
    default: Any
    doc: str
    parse: Callable[[str], Any] = _text
    secret: bool = False
    required_in: str | None = None
    # Numeric settings only: the values the service can work with (checked at start-up).
    bounds: Bounds | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("SEGMENT_WRITE_KEY", None,
            "Write key of the Segment source; unset means dry-run (messages logged, not sent).",
            secret=True),
    Setting("SEGMENT_HOST", "https://api.segment.io",
            "Segment API base URL (EU workspaces: https://events.eu1.segmentapis.com)."),
    Setting("SEGMENT_EU_HOST", "https://events.eu1.segmentapis.com",
            "App mode: Segment API base URL of orgs whose workspace is in the EU region."),
    Setting("DRIFT_VERIFICATION_TOKEN", (),
            "Verification token(s) of the Drift app, comma-separated during rotation.",
            parse=_token_list, secret=True, required_in="all modes"),
    Setting("SEGMENT_SHARED_SECRET", (),
            "Shared secret(s) of Segment's Webhooks destination, comma-separated during "
            "rotation; enables POST /webhooks/segment (self-hosted).",
            parse=_token_list, secret=True),
    Setting("SEGMENT_BATCH_SIGNATURE_MAX_AGE_HOURS", 12.0,
            "A Segment batch signed over its first element only (Actions batching) is "
            "accepted when that element's receivedAt (else sentAt) is at most this old, so a "
            "captured signed message cannot authenticate forged elements later.",
            parse=_number, bounds=above(0)),
    Setting("SEGMENT_UNKNOWN_USER_RETRY_MINUTES", 60.0,
            "How long a Segment event for a user Drift does not know yet is retried (its "
            "identify may be on the way), counted from receipt, before it is dead-lettered "
            "(0: at its first answer).",
            parse=_number, bounds=at_least(0)),
    Setting("DRIFT_ACCESS_TOKEN", None,
            "Bearer token for the Drift API, used to look up conversations.", secret=True),
    Setting("DRIFT_API_URL", "https://driftapi.com", "Drift API base URL."),
    Setting("IDENTITY_STITCHING", "off",
            "`off` (Drift app parity: anonymousId only) or `external_id` (join contacts the "
            "site identified to their userId)."),
    Setting("STITCHING_ANONYMOUS_PATTERN", None,
            "Regular expression of externalIds that are Drift's own (never a userId); unset: "
            "the UUID-like drift_aid shape."),
    Setting("DRIFT_CLIENT_ID", None, "Drift app client id; with the secret, enables app mode."),
    Setting("DRIFT_CLIENT_SECRET", None, "Drift app client secret (app mode).", secret=True),
    Setting("DRIFT_AUTHORIZE_URL", "https://dev.drift.com/authorize",
            "Drift OAuth authorize page (app mode)."),
    Setting("DRIFT_SETTINGS_URL", "https://app.drift.com/settings/integrations",
            "Where an org admin is sent after saving the write key (app mode)."),
    Setting("PUBLIC_URL", None,
            "The service's public base URL, for the OAuth redirect; derived from the request."),
    Setting("TRUSTED_PROXIES", 1,
            "Proxies in front (Heroku's router: 1) whose X-Forwarded-Proto/Host/For are "
            "trusted; 0 when clients reach gunicorn directly.", parse=_integer, bounds=at_least(0)),
    Setting("DATABASE_URL", None,
            "sqlite:///path or postgres://...; unset means a SQLite file in INSTANCE_PATH.",
            secret=True),
    Setting("INSTANCE_PATH", None,
            "Folder of the default SQLite database; unset means ./instance of the current "
            "directory (`config` and `doctor` print where it is)."),
    Setting("DATABASE_CONNECT_TIMEOUT_SECONDS", 5.0,
            "PostgreSQL: how long connecting may take (libpq counts whole seconds, at least "
            "2).", parse=_number, bounds=above(0, LONGEST_DATABASE_WAIT_SECONDS)),
    Setting("DATABASE_STATEMENT_TIMEOUT_SECONDS", 30.0,
            "PostgreSQL: longest a statement may run before it is cancelled (0: no limit, "
            "e.g. for a long migration).",
            parse=_number, bounds=at_least(0, LONGEST_DATABASE_WAIT_SECONDS)),
    Setting("DATABASE_LOCK_TIMEOUT_SECONDS", 5.0,
            "SQLite: longest a write waits for another writer (another process's commit, a "
            "stopped worker) before giving up; a webhook then gets 503 store_unavailable.",
            parse=_number, bounds=above(0, LONGEST_DATABASE_WAIT_SECONDS)),
    Setting("SECRET_KEY", None,
            "Signs sessions and OAuth state, encrypts secrets at rest.", secret=True,
            required_in="app mode"),
    Setting("ADMIN_TOKEN", None,
            "Bearer token for the status page and admin API; unset disables them.", secret=True),
    Setting("BIND_HOST", "0.0.0.0",
            "Address `serve` binds: every interface by default (Heroku's router needs it); "
            "scripts/run binds 127.0.0.1 unless this is set."),
    Setting("PORT", 8000, "Port `serve` binds.", parse=_integer, bounds=at_least(1, 65535)),
    Setting("WEB_CONCURRENCY", 2, "gunicorn worker processes.", parse=_integer, bounds=at_least(1)),
    Setting("WEB_THREADS", 4, "Threads per gunicorn worker (gthread).",
            parse=_integer, bounds=at_least(1)),
    Setting("MAX_BODY_BYTES", 1024 * 1024, "Largest webhook body accepted (413 above).",
            parse=_integer, bounds=at_least(1)),
    Setting("REQUEST_READ_TIMEOUT_SECONDS", 5.0,
            "Longest a client may take to send a request, head and body (serve); a slower "
            "one is cut off (a webhook body with 408), so slow clients cannot hold threads.",
            parse=_number, bounds=above(0)),
    Setting("DELIVERY_IN_WEB", True,
            "Run the delivery loop inside the web workers (off when a `worker` process runs it).",
            parse=_flag),
    Setting("DELIVERY_BATCH_SIZE", 500, "Webhooks claimed per delivery round.",
            parse=_integer, bounds=at_least(1)),
    Setting("DELIVERY_POLL_SECONDS", 0.5, "Idle wait between delivery rounds.",
            parse=_number, bounds=above(0)),
    Setting("DELIVERY_LEASE_SECONDS", 60.0,
            "How long a claim lasts; a crashed worker's rows are retried after it.",
            parse=_number, bounds=at_least(1)),
    Setting("DELIVERY_MAX_ATTEMPTS", 300,
            "Attempts before a row is dead-lettered (with the defaults, the age limit "
            "comes first).",
            parse=_integer, bounds=at_least(1)),
    Setting("DELIVERY_MAX_AGE_HOURS", 72.0, "Age after which an undelivered row is dead-lettered.",
            parse=_number, bounds=above(0)),
    Setting("DELIVERY_BACKOFF_SECONDS", 2.0, "First retry delay; doubles per attempt, jittered.",
            parse=_number, bounds=above(0)),
    Setting("DELIVERY_BACKOFF_MAX_SECONDS", 900.0, "Ceiling of the retry delay.",
            parse=_number, bounds=above(0)),
    Setting("SEGMENT_TIMEOUT_SECONDS", 15.0, "Timeout of one batch post to Segment.",
            parse=_number, bounds=above(0)),
    Setting("DRIFT_TIMEOUT_SECONDS", 10.0, "Timeout of one Drift API call.",
            parse=_number, bounds=above(0)),
    Setting("DELIVERY_LOOKUP_WAIT_SECONDS", 0.25,
            "How long a delivery round waits for its Drift API lookups before the rows that "
            "need them go back to wait (other rows never wait on lookups; 0: no round waits).",
            parse=_number, bounds=at_least(0)),
    Setting("RETENTION_DAYS", 7.0, "Delivered rows are pruned after this many days.",
            parse=_number, bounds=above(0)),
    Setting("RETENTION_INTERVAL_SECONDS", 600.0,
            "How often retention runs; the first pass waits one interval after start, so a "
            "process started on a wrong clock deletes nothing before it could be set right.",
            parse=_number, bounds=above(0)),
    Setting("HELD_MAX_AGE_HOURS", 168.0,
            "Held rows (waiting for a write key or Drift token) become dead letters, with the "
            "reason, after this many hours.", parse=_number, bounds=above(0)),
    Setting("DEAD_LETTER_RETENTION_DAYS", 30.0,
            "Dead letters are deleted this many days after they died.",
            parse=_number, bounds=above(0)),
    Setting("QUARANTINE_RETENTION_DAYS", 30.0,
            "Quarantined payloads are deleted this many days after they arrived.",
            parse=_number, bounds=above(0)),
    Setting("METRICS_TOKEN", None,
            "Bearer token that /metrics then requires; unset: /metrics is open.", secret=True),
    Setting("DEDUPE_RETENTION_DAYS", 90.0,
            "Dedupe keys (16 bytes per event) are kept this long; an event older than the "
            "keys kept is refused rather than sent twice.",
            parse=_number, bounds=above(0)),
    Setting("SEGMENT_TRANSPORT", "http",
            "Segment transport: http, or `failing` to inject faults (tests, drills)."),
    Setting("STORE_FAULT", "",
            "Fault injection for the store: `unavailable` makes every write fail (tests, drills)."),
    Setting("LOG_LEVEL", "INFO", "Log level of the service's JSON logs."),
)

SETTINGS_BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

# Verification tokens anyone can know: earlier versions of scripts/run used this one and the
# README showed it. It may guard a dry run on one's own machine, never real delivery.
PUBLIC_TOKENS = frozenset({"local-dev-token"})


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read every declared setting from the environment, then apply overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or raw.strip() == "":
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError:
            raise ConfigError(f"{setting.name}={raw.strip()!r} is not {PARSED_AS[setting.parse]}: "
                              f"fix or unset it ({setting.doc})") from None
        check_bounds(setting, values[setting.name], raw.strip())
    for name, value in (overrides or {}).items():
        declared = SETTINGS_BY_NAME.get(name)
        if declared is None:
            # Only declared settings reach the components (a clock or a transport is handed
            # to create_app as such, never through the settings).
            raise ConfigError(f"{name} is not a setting of this service (see `config`)")
        given = value
        if isinstance(value, str) and declared.parse is not _text:
            value = declared.parse(value)
        check_bounds(declared, value, given)
        values[name] = value
    return values


def check_bounds(setting: Setting, value: Any, given: Any) -> None:
    """ConfigError, in one line naming the setting, the value, the range and the fix, when a
    numeric setting's ``value`` (read from ``given``) is out of its bounds."""
    if (setting.bounds is None or isinstance(value, bool)
            or not isinstance(value, int | float) or setting.bounds.allows(value)):
        return
    raise ConfigError(f"{setting.name}={given!r} is out of range, it must be "
                      f"{PARSED_AS[setting.parse]}, {setting.bounds}: fix it, or unset it for "
                      f"the default {_shown(setting.default)} ({setting.doc})")


def app_mode(settings: Mapping[str, Any]) -> bool:
    """App mode (many Drift orgs, OAuth install) is on when the client id and secret are set."""
    return bool(settings.get("DRIFT_CLIENT_ID") and settings.get("DRIFT_CLIENT_SECRET"))


def missing(settings: Mapping[str, Any]) -> list[str]:
    """Names of settings the current mode needs that are unset, each with why."""
    problems = []
    if not settings.get("DRIFT_VERIFICATION_TOKEN"):
        problems.append("DRIFT_VERIFICATION_TOKEN is unset, so every webhook gets 401: set it "
                        "to the verification token of your Drift app")
    if app_mode(settings) and not settings.get("SECRET_KEY"):
        problems.append(SECRET_KEY_MISSING)
    return problems


SECRET_KEY_MISSING = (
    "SECRET_KEY is unset, and app mode (DRIFT_CLIENT_ID and DRIFT_CLIENT_SECRET are set) needs "
    "it to sign sessions and encrypt tokens: set it to a long random value, e.g. the output of "
    "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")


def instance_path(settings: Mapping[str, Any]) -> str:
    """The absolute instance folder: INSTANCE_PATH, or ./instance of the current directory.

    Not Flask's default: installed with ``pip install .`` that is a folder inside the
    virtualenv, where nobody looks for (or backs up) a database.
    """
    return os.path.abspath(settings.get("INSTANCE_PATH") or "instance")


def bind_addresses(settings: Mapping[str, Any]) -> list[str]:
    """The ``host:port`` addresses ``serve`` binds: BIND_HOST and PORT (an IPv6 host in
    brackets), as gunicorn takes them."""
    host, port = settings["BIND_HOST"], settings["PORT"]
    return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]


def public_token_problem(settings: Mapping[str, Any]) -> str | None:
    """Why the settings pair a public verification token with real delivery, if they do."""
    public = sorted(set(settings.get("DRIFT_VERIFICATION_TOKEN") or ()) & PUBLIC_TOKENS)
    if not public or dry_run(settings):
        return None
    return (f"DRIFT_VERIFICATION_TOKEN: {public[0]!r} is public, and with SEGMENT_WRITE_KEY "
            "set (or in app mode) anyone could send events that go out with your write key. "
            "Set your Drift app's own verification token, or unset it and scripts/run makes "
            "a random one.")


def dry_run(settings: Mapping[str, Any]) -> bool:
    """Without a write key (and outside app mode) messages are built and logged, not sent."""
    return not settings.get("SEGMENT_WRITE_KEY") and not app_mode(settings)


def mask(value: Any) -> str:
    """Show that a secret is set without showing it."""
    if value in (None, "", ()):
        return "(unset)"
    if isinstance(value, tuple):
        return ", ".join(mask(item) for item in value)
    text = str(value)
    return f"{text[:2]}…({len(text)} chars)" if len(text) > 8 else "****"


def secret_values(settings: Mapping[str, Any]) -> list[str]:
    """Every secret value currently configured, for the log redaction filter."""
    found: list[str] = []
    for setting in SETTINGS:
        value = settings.get(setting.name)
        if not setting.secret or not value:
            continue
        found.extend(value if isinstance(value, tuple) else [str(value)])
    return [secret for secret in found if len(secret) >= 4]


def normalise_database_url(url: str) -> str:
    """Accept Heroku's ``postgres://`` spelling and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url
