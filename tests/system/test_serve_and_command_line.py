"""``serve`` as operators run it, and the command line against a running service: replay,
refusing an unsafe app-mode setting at start, trusting the router's forwarded headers (see
docs/operations.md)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from ..support.service import run_command
from .conftest import StartService, service_env

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "drift"
APP_MODE = {"DRIFT_CLIENT_ID": "test-client-id",
            "DRIFT_CLIENT_SECRET": "test-client-secret-0123456789",
            "SECRET_KEY": "test-secret-key-for-app-mode-0123456789"}
ROUTER_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "relay.example.com",
                  "X-Forwarded-Port": "443", "X-Forwarded-For": "203.0.113.9"}


def test_replay_posts_fixture_payloads_to_a_running_service(start_service: StartService,
                                                            tmp_path: Path) -> None:
    env = service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}", DELIVERY_IN_WEB="false")
    service = start_service(env)
    folder = str(FIXTURES / "new_meeting")
    for expected in ({"accepted": 3}, {"duplicate": 3}):
        done = run_command(env, "replay", folder, "--url", service.url + "/webhooks/drift")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_serve_refuses_app_mode_with_an_http_public_url(start_service: StartService,
                                                       tmp_path: Path) -> None:
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}",
                                        PUBLIC_URL="http://relay.example.com", **APP_MODE),
                            ready=False)
    assert service.process.wait(timeout=30) != 0
    assert "PUBLIC_URL must be an https URL in app mode" in service.log_text()


def test_serve_behind_a_router_answers_with_https_urls_and_secure_cookies(
        start_service: StartService, tmp_path: Path) -> None:
    service = start_service(service_env(f"sqlite:///{tmp_path / 'store.sqlite3'}",
                                        **APP_MODE))
    answer = requests.get(service.url + "/oauth/install", headers=ROUTER_HEADERS,
                          allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    redirect_uri = parse_qs(urlsplit(answer.headers["Location"]).query)["redirect_uri"][0]
    assert redirect_uri == "https://relay.example.com/oauth/callback"
    assert "Secure" in answer.headers["Set-Cookie"]
    assert service.stop() == 0
