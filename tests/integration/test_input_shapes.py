"""Input shapes integration vendors publish for Drift webhooks (docs/event-mapping.md, "Input
shapes accepted"): ids and epoch-millisecond times as numeric strings, times as ISO-8601
strings with an offset. What is unambiguous is read as the id or instant it spells; what is
not (an ISO time without offset, seconds that could be milliseconds, junk) is refused with
the same field errors as before.

- ids are kept exactly as sent (``"1234"`` stays a string in the Segment output);
- times become the epoch milliseconds a number would have been: numeric input gives the same
  bytes as before, and every spelling of one instant gives the same output;
- ``"123"`` and ``123`` are the same Drift event: the same messageId and dedupe key.

The translator tests need no database or socket; the last tests post to the endpoint.
"""

from __future__ import annotations

import json

from drift_segment_source.sources.drift.translators import TRANSLATORS, dedupe_key

from ..unit.test_input_shapes import (
    ORG,
    key_of,
    seed,
    stringified,
)
from .conftest import AppFactory, webhook

# -- reading a time ---------------------------------------------------------------------------






# -- through the translators ------------------------------------------------------------------


























# -- through the endpoint ---------------------------------------------------------------------


def test_the_same_event_sent_again_with_string_ids_is_a_duplicate(make_app: AppFactory) -> None:
    client = make_app().test_client()
    data = seed("new_conversation")
    first = client.post("/webhooks/drift", json=webhook("new_conversation", data))
    again = client.post("/webhooks/drift", json=webhook("new_conversation", {
        **stringified(data), "createdAt": "2024-04-29T21:35:12.425+02:00"}))
    assert first.get_json()["status"] == "accepted"
    assert (again.status_code, again.get_json()) == (200, {"status": "duplicate"})


def test_an_ambiguous_time_is_a_422_naming_the_field(make_app: AppFactory) -> None:
    client = make_app().test_client()
    answer = client.post("/webhooks/drift", json=webhook("new_conversation", {
        **seed("new_conversation"), "createdAt": "2024-04-29T19:35:12.425"}))
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["error"] == "invalid_data"
    assert "offset" in body["fields"]["createdAt"][0]


def test_an_event_stored_with_a_string_id_by_an_earlier_version_stays_a_duplicate(
        make_app: AppFactory) -> None:
    # Earlier versions made the dedupe key of ids as sent ("123" and 123 apart); a Drift
    # retry of such an event after the upgrade must not be delivered a second time.
    app = make_app()
    data = {**seed("new_conversation"), "id": "3969707702", "contactId": "21760538950"}
    translator = TRANSLATORS["new_conversation"]
    earlier_key = dedupe_key(ORG, "new_conversation",
                             translator.identity_as_sent(translator.validate(data), 0))
    assert earlier_key != key_of("new_conversation", data)
    store = app.extensions["store"]
    store.accept(ORG, "new_conversation", earlier_key, json.dumps(webhook(
        "new_conversation", data, token=None)), received_at=1714420000.0)
    again = app.test_client().post("/webhooks/drift", json=webhook("new_conversation", data))
    assert (again.status_code, again.get_json()) == (200, {"status": "duplicate"})
    assert store.counts() == {("new_conversation", "pending"): 1}
