"""Setup grants: what lets one browser open one org's setup page, kept in the store.

The OAuth callback makes a grant for the org that just authorised the app; the browser's
session cookie carries only its random token, and the store keeps the token's SHA-256 with
the org and an expiry. A signed cookie cannot be taken back (clearing the session clears only
the browser's copy), so the grant is what ends:

- used once: saving the write key deletes it, in a statement only one request can win;
- revoked: installing again (or removing the org) deletes every grant of the org;
- expired: ``GRANT_SECONDS`` after it was made (wall clock, since it is compared with a time
  stored by another process). A grant made after the time the clock now says (the clock
  stepped back) is refused, and every expired grant is deleted whenever one is looked at or
  made, so a clock that steps back later cannot bring it back.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection, Engine

from drift_segment_source.store.db import orgs, setup_grants

# Long enough to find the write key in Segment and paste it; short enough that a copy of
# the cookie left in a shared browser is soon worth nothing.
GRANT_SECONDS = 1800
# Processes of one service may read slightly different clocks: a grant made this little
# "in the future" is still believed.
CLOCK_SKEW_SECONDS = 5


def digest_of(token: str) -> bytes:
    """What the store keeps of a grant's token: its SHA-256."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def revoke_all(connection: Connection, org_id: int) -> None:
    """Delete every grant of ``org_id`` (in the caller's transaction)."""
    connection.execute(delete(setup_grants).where(setup_grants.c.org_id == org_id))


class SetupGrants:
    """Makes, checks and uses the grants of the ``setup_grants`` table."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time,
                 seconds: float = GRANT_SECONDS) -> None:
        self.engine = engine
        self.clock = clock
        self.seconds = seconds

    def issue(self, org_id: int) -> str:
        """A new grant for ``org_id``, every earlier one of the org revoked; its token."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.engine.begin() as connection:
            # Two installs of one org at once take turns on its row (PostgreSQL; SQLite has
            # one writer anyway), so the later one revokes the earlier one's grant.
            connection.execute(select(orgs.c.org_id).where(orgs.c.org_id == org_id)
                               .with_for_update())
            self._forget_expired(connection, now)
            revoke_all(connection, org_id)
            connection.execute(insert(setup_grants).values(
                digest=digest_of(token), org_id=org_id, created_at=now,
                expires_at=now + self.seconds))
        return token

    def org_of(self, token: object) -> int | None:
        """The org whose live grant ``token`` is, or None (no such grant, used, revoked,
        expired, or made "later" than the clock now says)."""
        if not isinstance(token, str) or not token:
            return None
        now = self.clock()
        with self.engine.begin() as connection:
            self._forget_expired(connection, now)
            org_id = connection.execute(
                select(setup_grants.c.org_id).where(
                    setup_grants.c.digest == digest_of(token),
                    setup_grants.c.created_at <= now + CLOCK_SKEW_SECONDS,
                    setup_grants.c.expires_at > now)
            ).scalar()
        return None if org_id is None else int(org_id)

    def use(self, token: object, org_id: int) -> bool:
        """Use the grant up: True for the one request that deletes it while it is live;
        False when it is gone (used, revoked, expired) or belongs to another org."""
        if not isinstance(token, str) or not token:
            return False
        now = self.clock()
        with self.engine.begin() as connection:
            used = connection.execute(
                delete(setup_grants).where(
                    setup_grants.c.digest == digest_of(token),
                    setup_grants.c.org_id == org_id,
                    setup_grants.c.created_at <= now + CLOCK_SKEW_SECONDS,
                    setup_grants.c.expires_at > now)
            ).rowcount
        return used == 1

    def _forget_expired(self, connection: Connection, now: float) -> None:
        # Expired, or from a clock that has since stepped back: neither can be used again.
        connection.execute(delete(setup_grants).where(or_(
            setup_grants.c.expires_at <= now,
            setup_grants.c.created_at > now + CLOCK_SKEW_SECONDS)))
