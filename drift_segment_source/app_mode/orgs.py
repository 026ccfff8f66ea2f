"""App mode: the directory of installed Drift orgs (routing by ``orgId`` is in
``org_routing.py``).

Each org that installed the app has a row in ``orgs`` with its OAuth tokens and Segment
write key, encrypted (``secrets_box``). The webhook endpoint only asks whether an org is
installed and has a write key, which needs no decryption; delivery decrypts, briefly cached.
"""

from __future__ import annotations

import logging
import secrets as random_secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, Row

from drift_segment_source.logs import REDACTOR
from drift_segment_source.routing import NEEDS_REINSTALL, NO_WRITE_KEY
from drift_segment_source.store.db import orgs, webhooks
from drift_segment_source.store.store import Store

from .grants import revoke_all
from .oauth_client import OAuthError, TokenGrant
from .secrets_box import SecretBox

log = logging.getLogger("drift_segment_source.orgs")

ACTIVE = "active"
# Segment's regions, each by the public host Segment gives it. An org's row stores that host
# as the name of its region (rows saved before hosts were settings hold the same values);
# delivery sends to the host the operator configured for the region (SEGMENT_HOST,
# SEGMENT_EU_HOST), so a proxy or a compatible collector can stand in for every org at once.
REGION_HOSTS = {"us": "https://api.segment.io", "eu": "https://events.eu1.segmentapis.com"}
# Access tokens last about two hours; renew a little early so a lookup never races expiry.
REFRESH_MARGIN_SECONDS = 300
# How long a process trusts what it read about an org. Short, because another process
# (the install pages, the CLI) may change it; the write paths here forget at once.
CACHE_SECONDS = 10
CACHE_SIZE = 10_000
# A webhook that read an org's row just before its write key was saved (in another process)
# may be committed as held after that save released the org's held rows; a process reading
# the ready row within this window releases again, so no webhook stays held for good.
SETTLE_SECONDS = 60

Clock = Callable[[], float]


@dataclass(frozen=True)
class Org:
    """An installed org as operators see it: never a secret, only whether each is set."""

    org_id: int
    status: str
    installed_at: float
    updated_at: float
    token_expires_at: float | None
    has_access_token: bool
    has_refresh_token: bool
    has_write_key: bool
    segment_region: str | None
    segment_host: str | None
    has_segment_secret: bool = False

    @property
    def ready(self) -> bool:
        """Its webhooks can be delivered now."""
        return self.status == ACTIVE and self.has_write_key


@dataclass(frozen=True)
class OrgSecrets:
    """An org's decrypted credentials, for delivery only."""

    status: str
    access_token: str | None
    refresh_token: str | None
    token_expires_at: float | None
    write_key: str | None
    segment_host: str | None
    segment_secret: str | None = None


class OrgDirectory:
    """Reads and writes of the ``orgs`` table; secrets are sealed before they are stored."""

    def __init__(self, engine: Engine, box: SecretBox, store: Store,
                 clock: Clock = time.time, hosts: Mapping[str, str] = REGION_HOSTS) -> None:
        self.engine = engine
        self.box = box
        self.store = store
        self.clock = clock
        self.hosts = dict(hosts)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._orgs: TTLCache[int, Org] = TTLCache(CACHE_SIZE, CACHE_SECONDS)
        self._secrets: TTLCache[int, OrgSecrets] = TTLCache(CACHE_SIZE, CACHE_SECONDS)
        # The caches are shared by the web threads (gthread) and are not thread-safe.
        self._lock = threading.Lock()
        self._renewing: dict[int, threading.Lock] = {}  # one token refresh per org at a time

    # -- reading ----------------------------------------------------------------------------

    def get(self, org_id: int, cached: bool = False) -> Org | None:
        """The org's row without its secrets, or None when it never installed."""
        if cached:
            with self._lock:
                known = self._orgs.get(org_id)
            if known is not None:
                return known
        row = self._row(org_id)
        if row is None:
            return None
        org = self.as_org(row)
        if org.ready:
            # Only a ready org is cached: a fresh install or write key must count at once.
            with self._lock:
                self._orgs[org_id] = org
            if self.clock() - org.updated_at < SETTLE_SECONDS:
                self.store.release_held(NO_WRITE_KEY, org_id)
                self.store.release_held(NEEDS_REINSTALL, org_id)
        return org

    def _row(self, org_id: int) -> Row[Any] | None:
        """The org's row as stored (secrets still sealed), or None."""
        with self.engine.connect() as connection:
            return connection.execute(select(orgs).where(orgs.c.org_id == org_id)).one_or_none()

    def all(self) -> list[Org]:
        """Every installed org, in id order."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(orgs).order_by(orgs.c.org_id)).all()
        return [self.as_org(row) for row in rows]

    def secrets(self, org_id: int) -> OrgSecrets | None:
        """The org's decrypted credentials (SecretUnreadable if SECRET_KEY changed)."""
        with self._lock:
            known = self._secrets.get(org_id)
        if known is not None:
            return known
        row = self._row(org_id)
        if row is None:
            return None
        found = OrgSecrets(
            status=row.status,
            access_token=self._open(row.access_token),
            refresh_token=self._open(row.refresh_token),
            token_expires_at=row.token_expires_at,
            write_key=self._open(row.write_key),
            segment_host=self.host_of(row.segment_host),
            segment_secret=self._open(row.segment_secret),
        )
        with self._lock:
            self._secrets[org_id] = found
        return found

    def held(self, org_id: int) -> dict[str, int]:
        """How many of the org's webhooks wait, by hold reason."""
        statement = (
            select(webhooks.c.hold_reason, func.count())
            .where(webhooks.c.state == "held", webhooks.c.org_id == org_id)
            .group_by(webhooks.c.hold_reason)
        )
        with self.engine.connect() as connection:
            return {str(row[0]): int(row[1]) for row in connection.execute(statement)}

    # -- writing ----------------------------------------------------------------------------

    def save_tokens(self, org_id: int, grant: TokenGrant) -> None:
        """Store an install's (or re-install's) tokens; the org becomes active again."""
        now = self.clock()
        values: dict[str, Any] = {
            "access_token": self._seal(grant.access_token),
            "token_expires_at": None if grant.expires_in is None else now + grant.expires_in,
            "status": ACTIVE,
            "updated_at": now,
        }
        if grant.refresh_token:
            values["refresh_token"] = self._seal(grant.refresh_token)
        statement = (
            self._insert(orgs)
            .values(org_id=org_id, installed_at=now, **values)
            .on_conflict_do_update(index_elements=["org_id"], set_=values)
        )
        with self.engine.begin() as connection:
            connection.execute(statement)
            # The Segment → Drift secret is made once: a re-install keeps it, so the
            # Webhooks destination the org configured in Segment keeps working.
            has_secret = connection.execute(select(orgs.c.segment_secret.is_not(None))
                                            .where(orgs.c.org_id == org_id)).scalar()
            if not has_secret:
                connection.execute(update(orgs).where(orgs.c.org_id == org_id).values(
                    segment_secret=self._seal(random_secrets.token_urlsafe(32))))
        self.changed(org_id)
        # Rows held while the org needed a re-install can go now (or wait for a write key).
        self.store.release_held(NEEDS_REINSTALL, org_id)

    def save_write_key(self, org_id: int, write_key: str, region: str) -> None:
        """Store the org's Segment write key and region, and release its held webhooks."""
        with self.engine.begin() as connection:
            connection.execute(
                update(orgs).where(orgs.c.org_id == org_id).values(
                    write_key=self._seal(write_key), segment_host=REGION_HOSTS[region],
                    updated_at=self.clock())
            )
        self.changed(org_id)
        self.store.release_held(NO_WRITE_KEY, org_id)

    def renew_tokens(self, org_id: int, stale_access_token: str,
                     renew: Callable[[str], TokenGrant]) -> str:
        """A fresh access token: renewed with ``renew`` unless another thread or process
        just did.

        Lookups of one org run in several threads, and Drift accepts a refresh token once:
        they take turns on a lock of the org in this process, and the row is locked too
        (PostgreSQL) for other processes. Whoever comes second finds the new token.
        """
        with self._lock:
            org_lock = self._renewing.setdefault(org_id, threading.Lock())
        with org_lock:
            return self._renew_once(org_id, stale_access_token, renew)

    def _renew_once(self, org_id: int, stale_access_token: str,
                    renew: Callable[[str], TokenGrant]) -> str:
        with self.engine.begin() as connection:
            row = connection.execute(
                select(orgs).where(orgs.c.org_id == org_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise LookupError(f"org {org_id} is not installed")
            current = self._open(row.access_token)
            if (current and current != stale_access_token
                    and not self.expiring(row.token_expires_at)):
                return current
            refresh_token = self._open(row.refresh_token)
            if not refresh_token:
                raise OAuthError(None, "no refresh token stored", refused=True)
            grant = renew(refresh_token)
            now = self.clock()
            connection.execute(
                update(orgs).where(orgs.c.org_id == org_id).values(
                    access_token=self._seal(grant.access_token),
                    # Drift usually rotates the refresh token: keep the newest one.
                    refresh_token=self._seal(grant.refresh_token or refresh_token),
                    token_expires_at=None if grant.expires_in is None else now + grant.expires_in,
                    updated_at=now,
                )
            )
        self.changed(org_id)
        return grant.access_token

    def mark_needs_reinstall(self, org_id: int) -> None:
        """Drift refused the org's refresh token: only a re-install can fix it."""
        with self.engine.begin() as connection:
            connection.execute(update(orgs).where(orgs.c.org_id == org_id)
                               .values(status=NEEDS_REINSTALL, updated_at=self.clock()))
        self.changed(org_id)

    def remove(self, org_id: int) -> bool:
        """Forget an org, its secrets and its setup grants; False when it was not installed."""
        with self.engine.begin() as connection:
            removed = connection.execute(delete(orgs).where(orgs.c.org_id == org_id)).rowcount
            revoke_all(connection, org_id)
        self.changed(org_id)
        return bool(removed)

    def changed(self, org_id: int) -> None:
        """Drop what this process cached about the org."""
        with self._lock:
            self._orgs.pop(org_id, None)
            self._secrets.pop(org_id, None)

    # -- helpers ----------------------------------------------------------------------------

    def host_of(self, stored: str | None) -> str | None:
        """Where messages of an org whose row holds ``stored`` go: its region's configured host."""
        region = region_of(stored)
        # A host that names no region (set by hand) is kept as it is.
        return self.hosts[region] if region is not None else stored

    def as_org(self, row: Row[Any]) -> Org:
        """An Org from a row of ``orgs``."""
        return Org(
            org_id=int(row.org_id),
            status=row.status,
            installed_at=row.installed_at,
            updated_at=row.updated_at,
            token_expires_at=row.token_expires_at,
            has_access_token=row.access_token is not None,
            has_refresh_token=row.refresh_token is not None,
            has_write_key=row.write_key is not None,
            segment_region=region_of(row.segment_host),
            segment_host=self.host_of(row.segment_host),
            has_segment_secret=row.segment_secret is not None,
        )

    def expiring(self, expires_at: float | None) -> bool:
        """The access token ends within the refresh margin (unknown expiry: never)."""
        return expires_at is not None and expires_at - self.clock() < REFRESH_MARGIN_SECONDS

    def _seal(self, secret: str) -> bytes:
        REDACTOR.add([secret])
        return self.box.seal(secret)

    def _open(self, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        secret = self.box.open(sealed)
        # Another process may have stored it: scrub it from this process's logs too.
        REDACTOR.add([secret])
        return secret


def region_of(stored: str | None) -> str | None:
    """The region an org's stored Segment host names, if it names one."""
    for region, host in REGION_HOSTS.items():
        if stored == host:
            return region
    return None


def configured_hosts(settings: Mapping[str, Any]) -> dict[str, str]:
    """Region → where its orgs' messages go, from the operator's settings."""
    return {"us": settings["SEGMENT_HOST"], "eu": settings["SEGMENT_EU_HOST"]}
