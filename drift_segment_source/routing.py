"""Which Drift org's webhooks are taken, and where their messages go.

Self-hosted (one org, env settings): every org's webhooks go to ``SEGMENT_WRITE_KEY``, or
are logged in dry-run without it. App mode (many orgs) routes by ``orgId`` through the
installed orgs in the store (see ``orgs.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from flask import current_app

from .drift_api import Credentials

# Hold reasons: a row waits in state "held" until what it lacks is configured.
NO_WRITE_KEY = "no_write_key"
NO_DRIFT_TOKEN = "no_drift_token"
NEEDS_REINSTALL = "needs_reinstall"


@dataclass(frozen=True)
class Route:
    """What the webhook endpoint does with an org's webhook: ignore, hold, or queue it."""

    ignore: str | None = None
    hold: str | None = None


@dataclass(frozen=True)
class Destination:
    """Where an org's messages go; no write key means dry-run (logged, not sent)."""

    write_key: str | None
    host: str

    @property
    def dry_run(self) -> bool:
        return self.write_key is None


class Held(Exception):
    """The org lacks something delivery needs; its rows wait in state ``held``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Routing(Protocol):
    """What webhooks and delivery ask about an org."""

    def route(self, org_id: int) -> Route: ...

    def destination(self, org_id: int) -> Destination: ...

    def drift_credentials(self, org_id: int) -> Credentials | None: ...

    def segment_secret(self, org_id: int) -> str | None:
        """The shared secret of an org's own Segment → Drift endpoint (app mode only)."""
        ...

    def readiness(self) -> dict[str, Any]: ...

    @property
    def dry_run(self) -> bool:
        """Whether webhooks taken in now are a dry run (no write key: logged, not sent)."""
        ...


class SelfHostedRouting:
    """One Segment source and one Drift token from the environment, for any orgId."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._destination = Destination(settings.get("SEGMENT_WRITE_KEY") or None,
                                        settings["SEGMENT_HOST"])
        token = settings.get("DRIFT_ACCESS_TOKEN")
        self._credentials = Credentials(token) if token else None

    def route(self, org_id: int) -> Route:
        return Route()

    @property
    def dry_run(self) -> bool:
        return self._destination.dry_run

    def destination(self, org_id: int) -> Destination:
        return self._destination

    def drift_credentials(self, org_id: int) -> Credentials | None:
        return self._credentials

    def segment_secret(self, org_id: int) -> str | None:
        return None  # one org: its Segment → Drift endpoint uses SEGMENT_SHARED_SECRET

    def readiness(self) -> dict[str, Any]:
        return {}


def current_routing() -> Routing:
    """The routing of the app handling the current request."""
    routing: Routing = current_app.extensions["routing"]
    return routing
