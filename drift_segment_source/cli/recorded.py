"""Recorded Drift API answers (``<case>.drift-api.json`` beside a fixture) served to the Drift
client in place of the network, so ``translate`` shows what delivery would send."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
from requests.adapters import BaseAdapter

RECORDED_SUFFIX = ".drift-api.json"


def recorded_answers_of(path: Path) -> Path | None:
    """The file of recorded Drift API answers beside a webhook file, if there is one."""
    if not path.name.endswith(".json"):
        return None
    recorded = path.with_name(path.name[: -len(".json")] + RECORDED_SUFFIX)
    return recorded if recorded.is_file() else None


class RecordedAnswers(BaseAdapter):
    """A ``requests`` adapter answering ``"GET /conversations/1"``-style requests from a
    mapping of request line to ``{"status", "json"}``; anything else gets a 404 naming the
    file."""

    def __init__(self, answers: Mapping[str, Mapping[str, Any]], base_url: str,
                 source: str) -> None:
        super().__init__()
        self.answers = answers
        self.base_url = base_url.rstrip("/")
        self.source = source

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: Any = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        """The recorded answer to ``request``."""
        url = request.url or ""
        path = url[len(self.base_url):] if url.startswith(self.base_url) else url
        answer = self.answers.get(f"{request.method} {path}")
        response = requests.Response()
        response.request = request
        response.url = url
        response.headers["Content-Type"] = "application/json"
        if answer is None:
            response.status_code = 404
            response.reason = f"{request.method} {path} is not recorded in {self.source}"
            response._content = b'{"error": "not recorded"}'
        else:
            response.status_code = int(answer.get("status", 200))
            response.reason = "recorded"
            response._content = json.dumps(answer.get("json")).encode()
        return response

    def close(self) -> None:
        """Nothing to release."""


def recorded_session(path: Path, base_url: str) -> requests.Session:
    """A session whose Drift API calls are answered from ``path``."""
    answers = json.loads(path.read_text())
    session = requests.Session()
    adapter = RecordedAnswers(answers, base_url, path.name)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
