"""App mode's routing: each installed org's webhooks go to its own write key and Segment host,
its Drift API calls use its own OAuth token, and its setup page opens with a setup grant.

The directory of orgs is ``orgs.py``; the grants ``grants.py``.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from drift_segment_source.drift_api import Credentials, DriftApiError
from drift_segment_source.routing import NEEDS_REINSTALL, NO_WRITE_KEY, Destination, Held, Route
from drift_segment_source.store.store import Store

from .grants import SetupGrants
from .oauth_client import DriftOAuth, OAuthError
from .orgs import OrgDirectory, OrgSecrets, configured_hosts
from .secrets_box import SecretBox, SecretUnreadable

log = logging.getLogger("drift_segment_source.orgs")


class AppRouting:
    """Routing in app mode: each installed org's messages go to its own write key and host."""

    def __init__(self, directory: OrgDirectory, oauth: DriftOAuth,
                 grants: SetupGrants) -> None:
        self.directory = directory
        self.oauth = oauth
        self.grants = grants

    # An org without a write key has its webhooks held, never dry-run.
    dry_run = False

    @classmethod
    def from_settings(cls, settings: dict[str, Any], store: Store) -> AppRouting:
        """App-mode routing over ``store``'s database, with the app's OAuth credentials."""
        clock = store.clock.wall
        directory = OrgDirectory(store.engine, SecretBox(settings["SECRET_KEY"]), store, clock,
                                 configured_hosts(settings))
        oauth = DriftOAuth(settings["DRIFT_API_URL"], settings["DRIFT_CLIENT_ID"],
                           settings["DRIFT_CLIENT_SECRET"], settings["DRIFT_TIMEOUT_SECONDS"])
        return cls(directory, oauth, SetupGrants(store.engine, clock))

    def release_ready(self) -> int:
        """Release webhooks still held for want of a write key that is now saved."""
        return sum(self.directory.store.release_held(NO_WRITE_KEY, org.org_id)
                   for org in self.directory.all() if org.ready)

    def route(self, org_id: int) -> Route:
        """Ignore orgs that never installed; hold webhooks of orgs not ready yet."""
        org = self.directory.get(org_id, cached=True)
        if org is None:
            return Route(ignore="org not installed")
        if org.status == NEEDS_REINSTALL:
            return Route(hold=NEEDS_REINSTALL)
        if not org.has_write_key:
            return Route(hold=NO_WRITE_KEY)
        return Route()

    def destination(self, org_id: int) -> Destination:
        """The org's write key and Segment host; Held while it has none or must re-install."""
        secrets = self._secrets(org_id)
        if not secrets.write_key:
            raise Held(NO_WRITE_KEY, "the org has not saved its Segment write key yet")
        return Destination(secrets.write_key, secrets.segment_host or self.directory.hosts["us"])

    def segment_secret(self, org_id: int) -> str | None:
        """The shared secret of the org's ``/webhooks/segment/<orgId>``; None when the org
        is not installed, has none yet, or its secrets cannot be read."""
        try:
            secrets = self.directory.secrets(org_id)
        except SecretUnreadable:
            log.error("cannot read the org's stored secrets", extra={"org_id": org_id})
            return None
        return None if secrets is None else secrets.segment_secret

    def drift_credentials(self, org_id: int) -> Credentials | None:
        """The org's access token, and whether to renew it first (it is about to expire)."""
        secrets = self._secrets(org_id)
        token = secrets.access_token
        if not token:
            raise Held(NEEDS_REINSTALL, "no Drift token stored; re-install the app in the org")
        # Renewal is a network call: the Drift client makes it where the lookup runs, off
        # the delivery round, so a slow refresh holds up no other row.
        return Credentials(token, refresh=functools.partial(self._renew, org_id, token),
                           renew_first=self.directory.expiring(secrets.token_expires_at))

    def readiness(self) -> dict[str, Any]:
        """How many orgs are installed, and which must re-install (for ``/readyz``)."""
        try:
            installed = self.directory.all()
        except Exception as error:  # readiness reports, it never fails the probe itself
            return {"orgs": {"ok": False, "error": type(error).__name__}}
        return {"orgs": {
            "ok": True,
            "installed": len(installed),
            "awaiting_write_key": sum(1 for org in installed if not org.has_write_key),
            # A count: /readyz answers anyone; `orgs list` and /status name the orgs.
            "needs_reinstall": sum(1 for org in installed if org.status == NEEDS_REINSTALL),
        }}

    def _secrets(self, org_id: int) -> OrgSecrets:
        try:
            secrets = self.directory.secrets(org_id)
        except SecretUnreadable as error:
            log.error("cannot read the org's stored secrets", extra={"org_id": org_id})
            raise Held(NEEDS_REINSTALL, str(error)) from None
        if secrets is None:
            raise Held(NEEDS_REINSTALL, "the org is not installed (removed?); re-install the app")
        if secrets.status == NEEDS_REINSTALL:
            raise Held(NEEDS_REINSTALL, "Drift refused the org's token; re-install the app")
        return secrets

    def _renew(self, org_id: int, stale_access_token: str) -> str:
        """Refresh the org's token; a refusal marks the org for re-install and holds its rows."""
        try:
            return self.directory.renew_tokens(org_id, stale_access_token, self.oauth.refresh)
        except LookupError:
            raise Held(NEEDS_REINSTALL, "the org is not installed (removed?)") from None
        except SecretUnreadable as error:
            raise Held(NEEDS_REINSTALL, str(error)) from None
        except OAuthError as error:
            if not error.refused:
                raise DriftApiError(error.status, f"token refresh failed: {error}",
                                    retryable=True) from None
            self.directory.mark_needs_reinstall(org_id)
            log.warning("Drift refused to refresh the org's token: the org must re-install "
                        "the app", extra={"org_id": org_id, "status": error.status,
                                          "reason": str(error)})
            raise Held(NEEDS_REINSTALL, "Drift refused the token refresh; "
                                        "re-install the app in the org") from None
