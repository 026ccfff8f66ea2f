"""Reading every health surface of a running service the way an operator does: the landing
page's tiles, ``/readyz``, ``/status.json`` and ``drift-segment-source doctor``."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..support.service import Service

ADMIN = "admin-token-for-surfaces-0123"
TILE = re.compile(r'<div class="status" id="(?P<id>[a-z]+)">\s*<dt>.*?</dt>(?P<body>.*?)</div>',
                  re.S)
ATTENTION = re.compile(r'<div class="attention".*?<ul>(?P<items>.*?)</ul>', re.S)


def text_of(fragment: str) -> str:
    """The words of an HTML fragment, as a reader sees them."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


@dataclass
class Landing:
    """The landing page: its status tiles by id, and its list of what needs attention."""

    tiles: dict[str, str]
    attention: list[str]


def landing(service: Service) -> Landing:
    """``GET /`` read as text."""
    page = requests.get(service.url + "/", timeout=10)
    assert page.status_code == 200
    tiles = {match["id"]: text_of(match["body"]) for match in TILE.finditer(page.text)}
    found = ATTENTION.search(page.text)
    items = re.findall(r"<li>(.*?)</li>", found["items"], re.S) if found else []
    return Landing(tiles, [text_of(item) for item in items])


def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    """``GET /readyz``: status code and body."""
    answer = requests.get(service.url + "/readyz", timeout=10)
    return answer.status_code, answer.json()


def status_json(service: Service) -> dict[str, Any]:
    """``GET /status.json`` with the admin token."""
    answer = requests.get(service.url + "/status.json", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def doctor(env: dict[str, str]) -> tuple[int, str]:
    """``drift-segment-source doctor`` with the service's settings: exit status and output."""
    executable = Path(sys.executable).with_name("drift-segment-source")
    inherited = {key: value for key, value in os.environ.items()
                 if key != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run([str(executable), "doctor"], env={**inherited, **env},
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``condition`` until it is truthy (its value), for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
