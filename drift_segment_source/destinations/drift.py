"""The Drift edge of the Segment → Drift direction: Drift actions applied with the REST API.

- ``Upsert`` (identify, group): the contact is found by its exact externalId
  (``GET /contacts?idType=external&id=…``, remembered briefly) and its attributes set with
  ``PATCH /contacts/{id}``; when Drift has none and the action carries an email, it is
  created with ``POST /contacts`` (email, externalId and the attributes).
- ``Timeline`` (track, page, screen): ``POST /contacts/timeline`` by externalId or contactId.

A user Drift does not know is not an error of the Drift API but an answer: ``apply`` returns
NotYet, and the delivery loop retries the row for a while (its identify may be on the way)
before dead-lettering it with the reason. Failures are DriftApiError as for lookups: network
errors, 429 and 5xx retryable (with Retry-After), other 4xx not.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from drift_segment_source.drift_api import Credentials, DriftApi, DriftApiError
from drift_segment_source.sources.segment.translators import Action, Timeline, Upsert

# A contact's id for an externalId only changes if the contact is deleted (a PATCH then
# answers 404 and the entry is dropped), so it is kept a few minutes: a user's track, page
# and group calls then cost one call each, not two.
CACHE_SECONDS = 300
CACHE_SIZE = 10_000
# Two identifies of one new user must not both create a contact (Drift would keep both):
# writes of one user take turns on one of these locks in this process; across processes a
# refused create is followed by a second look (see _create).
USER_LOCKS = 256


@dataclass(frozen=True)
class NotYet:
    """Drift does not know the user the action is for (yet); ``reason`` says how."""

    reason: str


def scope_hint(error: DriftApiError) -> DriftApiError:
    """A 403 names the scope the writes need (an install without it gets 403 on each)."""
    if error.status != 403:
        return error
    return DriftApiError(403, f"{error.message} (writing contacts needs the Drift token's "
                              "contact_write scope)", retryable=False)


class DriftWrites:
    """Applies the actions of Segment messages to one Drift org at a time."""

    def __init__(self, drift_api: DriftApi) -> None:
        self.drift_api = drift_api
        self._contact_ids: TTLCache[tuple[int, str], Any] = TTLCache(CACHE_SIZE, CACHE_SECONDS)
        self._lock = threading.Lock()
        self._user_locks = [threading.Lock() for _ in range(USER_LOCKS)]

    def apply(self, org_id: int, actions: Sequence[Action],
              credentials: Credentials) -> NotYet | None:
        """Apply ``actions`` in order: None when all are done, NotYet when Drift does not
        know the user; raises DriftApiError."""
        try:
            for action in actions:
                outcome = (self.upsert(org_id, action, credentials) if isinstance(action, Upsert)
                           else self.timeline(org_id, action, credentials))
                if outcome is not None:
                    return outcome
        except DriftApiError as error:
            raise scope_hint(error) from None
        return None

    # -- contacts ---------------------------------------------------------------------------

    def upsert(self, org_id: int, action: Upsert, credentials: Credentials) -> NotYet | None:
        """Set the action's attributes on its contact (created when it has an email)."""
        if action.external_id is None:
            return self.patch(org_id, None, action.contact_id, action.attributes, credentials)
        external_id = action.external_id
        with self._user_locks[zlib.crc32(f"{org_id}:{external_id}".encode()) % USER_LOCKS]:
            contact_id = self.find(org_id, external_id, credentials)
            if contact_id is None:
                if action.email is None:
                    return NotYet(f"Drift has no contact with externalId {external_id!r}, and "
                                  "the call carries no email to create one with")
                contact_id = self._create(org_id, action, credentials)
                if contact_id is None:
                    return None  # created with every attribute
            return self.patch(org_id, external_id, contact_id, action.attributes, credentials)

    def find(self, org_id: int, external_id: str, credentials: Credentials) -> Any:
        """The id of the contact whose externalId is ``external_id``, or None."""
        with self._lock:
            known = self._contact_ids.get((org_id, external_id))
        if known is not None:
            return known
        contact = self.drift_api.contact_by_external_id(external_id, credentials)
        if contact is None:
            return None
        self.remember(org_id, external_id, contact.get("id"))
        return contact.get("id")

    def remember(self, org_id: int, external_id: str, contact_id: Any) -> None:
        """Keep the contact id of an externalId for the next calls about that user."""
        if contact_id is not None:
            with self._lock:
                self._contact_ids[(org_id, external_id)] = contact_id

    def _create(self, org_id: int, action: Upsert, credentials: Credentials) -> Any:
        """Create the action's contact: None when done; the id of the contact found instead
        when Drift refused the create because it exists by now (another process made it)."""
        assert action.external_id is not None and action.email is not None
        attributes = {"email": action.email, "externalId": action.external_id,
                      **{name: value for name, value in action.attributes.items()
                         if name not in ("email", "externalId")}}
        try:
            answer = self.drift_api.create_contact(attributes, credentials)
        except DriftApiError as error:
            if error.retryable:
                raise
            found = self.find(org_id, action.external_id, credentials)
            if found is None:
                raise
            return found
        created = answer.get("data") if isinstance(answer, dict) else None
        if isinstance(created, dict):
            self.remember(org_id, action.external_id, created.get("id"))
        return None

    def patch(self, org_id: int, external_id: str | None, contact_id: Any,
              attributes: dict[str, Any], credentials: Credentials) -> NotYet | None:
        """``PATCH`` the contact's attributes; NotYet when Drift has no such contact."""
        if not attributes:
            return None
        try:
            self.drift_api.update_contact(contact_id, attributes, credentials)
        except DriftApiError as error:
            if error.status != 404:
                raise
            if external_id is not None:
                with self._lock:
                    self._contact_ids.pop((org_id, external_id), None)
            return NotYet(f"Drift has no contact {contact_id}")
        return None

    # -- timeline ---------------------------------------------------------------------------

    def timeline(self, org_id: int, action: Timeline, credentials: Credentials) -> NotYet | None:
        """Add the event to its contact's timeline; NotYet when Drift has no such contact."""
        who: dict[str, Any] = ({"externalId": action.external_id}
                               if action.external_id is not None
                               else {"contactId": action.contact_id})
        try:
            self.drift_api.timeline_event(
                {**who, "event": action.event, "createdAt": action.created_at_ms}, credentials)
        except DriftApiError as error:
            if error.retryable:
                raise
            unknown = NotYet(f"Drift has no contact with {next(iter(who))} "
                             f"{next(iter(who.values()))!r}")
            if error.status == 404:
                return unknown
            # How Drift refuses an unknown externalId is not documented: when it is not a
            # 404, one lookup tells an unknown user (retried) from a refused event (dead).
            if (action.external_id is not None
                    and self.find(org_id, action.external_id, credentials) is None):
                return unknown
            raise
        return None
