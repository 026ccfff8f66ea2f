"""Every answer is true whatever the requests committed with it do
(docs/reliability.md#what-every-request-gets): concurrent webhooks share group commits, and a
row the store refuses fails alone."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask

from drift_segment_source.app import make_delivery
from drift_segment_source.store.commits import GroupCommit, StoreUnavailable

from ..support.fake_segment import FakeSegment
from .conftest import TOKEN, AppFactory, webhook
from .live_server import serving

SURROGATE = "\\ud83d"  # a truncated emoji, as a JSON escape: json.loads accepts it


def conversation_body(number: int, note: str = "") -> bytes:
    """A distinct new_conversation webhook; ``note`` is spliced raw into an unused field."""
    body = webhook("new_conversation", {"id": 7_000_000 + number, "contactId": 10_000 + number,
                                        "createdAt": 1714419312425 + number, "status": "open",
                                        "note": "NOTE"})
    return json.dumps(body).replace('"NOTE"', f'"{note}"').encode()


def post_all(url: str, bodies: list[bytes], threads: int = 24) -> list[tuple[int, dict[str, Any]]]:
    """POST every body from ``threads`` connections at once; the answers, in order."""
    def send(body: bytes) -> tuple[int, dict[str, Any]]:
        answer = requests.post(url + "/webhooks/drift", data=body, timeout=60,
                               headers={"Content-Type": "application/json",
                                        "X-Verification-Token": TOKEN})
        return answer.status_code, answer.json()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(send, bodies))


def stored_ids(app: Flask) -> set[int]:
    with app.extensions["store"].engine.connect() as connection:
        payloads = connection.exec_driver_sql("SELECT payload FROM webhooks").scalars()
        return {json.loads(payload)["data"]["id"] for payload in payloads}


def test_surrogates_in_concurrent_webhooks_fail_alone_and_nothing_is_answered_duplicate(
        make_app: AppFactory, segment: FakeSegment) -> None:
    # As attacks/surrogates.py measures it: 480 webhooks from 24 connections, 1 in 6 with a
    # lone surrogate escape in a field nobody reads.
    app = make_app(SEGMENT_HOST=segment.url)
    bodies = [conversation_body(n, SURROGATE if n % 6 == 0 else "fine") for n in range(480)]
    with serving(app) as url:
        answers = post_all(url, bodies)
    outcomes = Counter(body.get("status") or body.get("error") for _, body in answers)
    assert outcomes == {"accepted": 400, "invalid_unicode": 80}
    assert all(status < 500 for status, _ in answers)
    accepted = {7_000_000 + n for n, (_, body) in enumerate(answers)
                if body.get("status") == "accepted"}
    assert stored_ids(app) == accepted
    delivery = make_delivery(app)
    while delivery.run_round():
        pass
    assert len(segment.message_id_counts()) == 400
    assert set(segment.message_id_counts().values()) == {1}


def refusing(error: BaseException, marker: str = "poison") -> Callable[[Any], Any]:
    """An insert seam that raises ``error`` for any batch holding a row with ``marker``."""
    def install(app: Flask) -> None:
        group: GroupCommit = app.extensions["store"]._group_commit
        original = group._insert

        def insert(rows: list[tuple[Any, ...]]) -> list[int | None]:
            if any(marker in row[3] for row in rows):
                raise error
            return original(rows)

        group._insert = insert
    return install


@pytest.mark.parametrize("error", [
    UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed"),
    RuntimeError("nobody expected this"),
    KeyError("dedupe_key"),
    sqlite3.DataError("value refused"),
    StoreUnavailable("OperationalError"),
], ids=lambda error: type(error).__name__)
def test_an_insert_that_raises_anything_fails_only_its_own_row(
        make_app: AppFactory, error: BaseException) -> None:
    app = make_app()
    refusing(error)(app)
    bodies = [conversation_body(n, "poison" if n % 6 == 0 else "fine") for n in range(240)]
    with serving(app) as url:
        answers = post_all(url, bodies)
    accepted = set()
    for n, (status, body) in enumerate(answers):
        assert body.get("status") != "duplicate", "every webhook here is a new event"
        if n % 6 == 0:
            assert status != 200 and "error" in body, body
        elif isinstance(error, StoreUnavailable):
            # The store reported itself down: the whole commit failed, and each of its
            # requests was told so (503, Drift may retry), none was told "accepted".
            assert (status, body.get("status", body.get("error"))) in (
                (200, "accepted"), (503, "store_unavailable")), body
        else:
            assert (status, body.get("status")) == (200, "accepted"), body
        if body.get("status") == "accepted":
            accepted.add(7_000_000 + n)
    assert stored_ids(app) == accepted


def test_group_commit_gives_every_waiter_the_outcome_of_the_commit_that_held_its_row() -> None:
    # Deterministic: hold the first commit until every other caller has queued its row, so
    # they are all committed (and fail or succeed) together.
    queued = threading.Barrier(6)
    release = threading.Event()
    calls: list[list[str]] = []

    def insert(rows: list[tuple[Any, ...]]) -> list[int | None]:
        calls.append([row[0] for row in rows])
        if len(calls) == 1:
            release.wait(10)
        if any(row[0] == "poison" for row in rows):
            raise TypeError("a value the driver cannot bind")
        return [hash(row[0]) % 1000 for row in rows]

    group = GroupCommit(insert)
    results: dict[str, Any] = {}

    def submit(name: str) -> None:
        if name != "first":
            queued.wait(10)
        try:
            results[name] = group.submit((name,))
        except Exception as error:  # the outcome under test
            results[name] = error

    names = ["first", "a", "b", "poison", "c", "d"]
    threads = [threading.Thread(target=submit, args=(name,)) for name in names]
    threads[0].start()
    while not calls:
        threading.Event().wait(0.01)
    for thread in threads[1:]:
        thread.start()
    queued.wait(10)  # the five others are about to queue
    threading.Event().wait(0.2)
    release.set()
    for thread in threads:
        thread.join(10)
    assert isinstance(results.pop("poison"), TypeError)
    assert results == {name: hash(name) % 1000 for name in names if name != "poison"}
    assert None not in results.values(), "no new row may be answered as a duplicate"
