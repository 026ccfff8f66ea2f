"""Helpers of the reliability tests: distinct webhooks of several types, posted in bulk."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, text

from drift_segment_source.sources.drift.translators import TRANSLATORS, message_id

from .conftest import ROOT, TOKEN, webhook

ORG = 5000883
ARTIFACTS = ROOT / "test-artifacts"


def distinct_webhooks(count: int, start: int = 1) -> list[dict[str, Any]]:
    """``count`` different Drift events of five types that need no Drift API lookup."""
    bodies = []
    for n in range(start, start + count):
        contact = 20_000_000_000 + n
        kind = n % 5
        if kind == 0:
            data = {"id": n, "contactId": contact, "createdAt": 1714419312425 + n,
                    "status": "open", "inboxId": 642330}
            bodies.append(webhook("new_conversation", data, ORG))
        elif kind == 1:
            data = {"id": n, "body": f"Yes please {n}", "author": {"id": contact,
                    "type": "contact"}, "conversationId": n, "createdAt": 1714419312425 + n}
            bodies.append(webhook("button_clicked", data, ORG))
        elif kind == 2:
            data = {"conversationId": n, "contactId": contact, "playbookId": 2310900,
                    "goalId": f"goal-{n}", "goalName": "Good Lead", "contactEmail": ""}
            bodies.append(webhook("playbook_goal_met", data, ORG))
        elif kind == 3:
            data = {"endUserId": contact, "timestamp": 1714419312425 + n,
                    "diff": [{"name": "attributes._classification", "previous": None,
                              "updated": f"Engaged {n}"}]}
            bodies.append(webhook("contact_updated", data, ORG))
        else:
            data = {"eventId": f"event-{n}", "schedulerId": contact, "agentId": 2322756,
                    "scheduledAt": 1714422076000 + n, "slotStart": 1714482000000,
                    "slotEnd": 1714483800000, "status": "ACTIVE"}
            bodies.append(webhook("new_meeting", data, ORG))
    return bodies


def expected_message_id(body: dict[str, Any]) -> str:
    """The messageId the service must give this webhook's (single) call."""
    translator = TRANSLATORS[body["type"]]
    data = translator.validate(body["data"])
    # None of these types needs the receipt time for its identity.
    return message_id(body["orgId"], body["type"], translator.identity(data, 0), 0)


@dataclass
class PostReport:
    """What the service answered to a bulk post."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)


def post_concurrently(url: str, bodies: list[dict[str, Any]], threads: int = 16) -> PostReport:
    """POST every body from ``threads`` connections at once; sort them by answer."""
    report = PostReport()

    def send(body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        try:
            answer = requests.post(url + "/webhooks/drift", data=json.dumps(body),
                                   headers={"Content-Type": "application/json",
                                            "X-Verification-Token": TOKEN}, timeout=30)
        except requests.RequestException as error:
            return body, type(error).__name__
        return body, answer.json().get("status") or answer.json().get("error", "?")

    with ThreadPoolExecutor(threads) as pool:
        for body, outcome in pool.map(send, bodies):
            report.answers[outcome] = report.answers.get(outcome, 0) + 1
            if outcome == "accepted":
                report.accepted.append(body)
    return report


def states(database_url: str) -> dict[str, int]:
    """Stored webhooks per delivery state, read straight from the database."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT state, count(*) FROM webhooks GROUP BY state"))
            return {state: int(count) for state, count in rows}
    finally:
        engine.dispose()


def save_report(name: str, report: dict[str, Any]) -> None:
    """Keep the counts of a reliability run as a test artefact (and print them)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path: Path = ARTIFACTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(report, sort_keys=True)}")
