"""Drift's OAuth endpoints: exchange an install's code, refresh a token, ask whose it is.

Answers are read tolerantly: Drift documents snake_case fields, an older sample used
camelCase, and the org id may be missing (then ``/app/token_info`` tells it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import requests

from drift_segment_source import metrics
from drift_segment_source.drift_api import make_session

ORG_IN_USERID = re.compile(r"orgId:(\d+)")


@dataclass(frozen=True)
class TokenGrant:
    """What Drift's token endpoint granted."""

    access_token: str
    refresh_token: str | None
    expires_in: float | None
    org_id: int | None


class OAuthError(Exception):
    """Drift granted nothing. ``refused``: it said no (bad code, revoked refresh token), as
    opposed to being unreachable or answering oddly, where trying again later may help."""

    def __init__(self, status: int | None, message: str, refused: bool) -> None:
        super().__init__(f"Drift OAuth {status or 'network error'}: {message}")
        self.status = status
        self.refused = refused


class DriftOAuth:
    """The token endpoint and token_info of ``DRIFT_API_URL``, with the app's credentials."""

    def __init__(self, api_url: str, client_id: str, client_secret: str, timeout: float) -> None:
        self.api_url = api_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.timeout = timeout
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        # Made on first use, so in each gunicorn worker after fork, never in the master.
        if self._session is None:
            self._session = make_session()
        return self._session

    def exchange(self, code: str, redirect_uri: str) -> TokenGrant:
        """Trade an install's authorisation code for the org's tokens."""
        return read_grant(self._post("/oauth2/token", "oauth_token", data={
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": redirect_uri,
        }))

    def refresh(self, refresh_token: str) -> TokenGrant:
        """A new access token (and usually a new refresh token) for an org."""
        return read_grant(self._post("/oauth2/token", "oauth_token", data={
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "refresh_token": refresh_token,
            "grant_type": "refresh_token",
        }))

    def org_of(self, access_token: str) -> int:
        """The Drift org an access token belongs to, from ``/app/token_info``."""
        answer = self._post("/app/token_info", "token_info", json={"access_token": access_token})
        org_id = as_org_id(answer.get("orgId") or answer.get("org_id"))
        found = ORG_IN_USERID.search(str(answer.get("authenticated_userid", "")))
        if org_id is None and found:
            org_id = int(found.group(1))
        if org_id is None:
            raise OAuthError(200, "token_info does not name the org", refused=False)
        return org_id

    def _post(self, path: str, endpoint: str, **body: Any) -> dict[str, Any]:
        try:
            response = self.session.post(self.api_url + path, timeout=self.timeout,
                                         headers={"Accept": "application/json"}, **body)
        except requests.RequestException as error:
            metrics.DRIFT_API_CALLS.labels(endpoint=endpoint, status="network").inc()
            raise OAuthError(None, type(error).__name__, refused=False) from None
        status = response.status_code
        metrics.DRIFT_API_CALLS.labels(endpoint=endpoint, status=str(status)).inc()
        try:
            answer = response.json()
        except (ValueError, RecursionError):
            answer = None
        if status >= 400:
            # 400/401/403 is Drift saying no (invalid_grant and the like); 429/5xx may pass.
            raise OAuthError(status, drift_error(answer) or response.reason or "",
                             refused=status in (400, 401, 403))
        if not isinstance(answer, dict):
            raise OAuthError(status, "answer is not a JSON object", refused=False)
        return answer


def read_grant(answer: dict[str, Any]) -> TokenGrant:
    """A TokenGrant from a snake_case or camelCase token answer."""
    access_token = answer.get("access_token") or answer.get("accessToken")
    if not isinstance(access_token, str) or not access_token:
        raise OAuthError(200, "token answer has no access token", refused=False)
    refresh_token = answer.get("refresh_token") or answer.get("refreshToken")
    expires_in = answer.get("expires_in", answer.get("expiresIn"))
    try:
        seconds = float(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        seconds = None
    return TokenGrant(
        access_token=access_token,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expires_in=seconds,
        org_id=as_org_id(answer.get("orgId", answer.get("org_id"))),
    )


def as_org_id(value: Any) -> int | None:
    """A positive integer org id from an int or a string of digits; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return value if isinstance(value, int) and value > 0 else None


def drift_error(answer: Any) -> str:
    """Drift's short error code from an error answer (never the request, which has secrets)."""
    if not isinstance(answer, dict):
        return ""
    for key in ("error", "error_description", "message"):
        if isinstance(answer.get(key), str):
            return str(answer[key])[:200]
    return ""
