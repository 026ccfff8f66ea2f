"""A loopback fake of Drift: the OAuth authorize page, the token endpoint, token_info, the
conversations API and the integration settings page, on 127.0.0.1 (real HTTP).

``authorizing_org`` is the org whose admin clicks Authorize next. ``camel_case`` and
``send_org_id`` shape the token answers; ``expires_in`` their lifetime. ``revoke_access``
makes an org's current access token answer 401; ``refuse_refresh`` makes its refresh fail.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

AUTHORIZE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize app · Drift (fake)</title>
<style>body{{font-family:sans-serif;margin:3rem auto;max-width:32rem;color:#1f2937}}
button{{font-size:1rem;padding:.6rem 1.2rem;margin-right:.5rem}}</style></head>
<body><main><h1>Authorize “{client_id}”</h1>
<p>The app asks for: contact_read, all_contact_read, conversation_read.</p>
<p>Organisation: <strong>{org_id}</strong></p>
<form method="post" action="/authorize">
<input type="hidden" name="redirect_uri" value="{redirect_uri}">
<input type="hidden" name="state" value="{state}">
<button type="submit" name="decision" value="allow">Authorize</button>
<button type="submit" name="decision" value="deny">Cancel</button>
</form></main></body></html>"""

SETTINGS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Integrations · Drift (fake)</title></head>
<body><main><h1>Drift integration settings</h1><p>Segment Source is connected.</p></main>
</body></html>"""


class FakeDrift:
    """Drift's OAuth and API, recording what it was asked."""

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.authorizing_org = 5000883
        self.camel_case = False
        self.send_org_id = True
        self.expires_in = 7200
        self.conversations: dict[str, dict[str, Any]] = {}
        self.grants: list[str] = []
        self.token_info_calls = 0
        self.api_calls: list[tuple[str, str]] = []
        self.authorize_requests: list[dict[str, str]] = []
        self.issued: list[str] = []
        self._codes: dict[str, int] = {}
        self._access: dict[str, int] = {}
        self._refresh: dict[str, int] = {}
        self._refusing: set[int] = set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.authorize_url = self.url + "/authorize"
        self.settings_url = self.url + "/settings/integrations"
        # A short poll interval makes shutdown (every test's teardown) quick.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> FakeDrift:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- what tests call --------------------------------------------------------------------

    def approve(self, authorize_location: str, org_id: int, decision: str = "allow") -> str:
        """Click Authorize (or Cancel) as org ``org_id``'s admin; the callback URL Drift
        sends the browser to."""
        self.authorizing_org = org_id
        query = {key: values[0] for key, values in
                 parse_qs(urlsplit(authorize_location).query).items()}
        answer = requests.post(self.authorize_url, allow_redirects=False, timeout=5, data={
            "redirect_uri": query["redirect_uri"], "state": query["state"],
            "decision": decision})
        assert answer.status_code == 302, answer.text
        return answer.headers["Location"]

    def revoke_access(self, org_id: int) -> None:
        """The org's current access tokens are rejected from now on (401)."""
        with self._lock:
            for token in [t for t, org in self._access.items() if org == org_id]:
                del self._access[token]

    def refuse_refresh(self, org_id: int) -> None:
        """Refreshing the org's token fails with invalid_grant (the app was uninstalled)."""
        with self._lock:
            self._refusing.add(org_id)

    # -- the HTTP side ----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(request.path)
        length = int(request.headers.get("Content-Length", "0") or 0)
        body = request.rfile.read(length) if length else b""
        with self._lock:
            status, headers, payload = self._answer(method, url.path, url.query, body,
                                                    request.headers)
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def _answer(self, method: str, path: str, query: str, body: bytes,
                headers: Any) -> tuple[int, dict[str, str], bytes]:
        if method == "GET" and path == "/authorize":
            params = {key: values[0] for key, values in parse_qs(query).items()}
            self.authorize_requests.append(params)
            page = AUTHORIZE_PAGE.format(**{key: html.escape(value) for key, value in {
                "client_id": params.get("client_id", ""), "org_id": str(self.authorizing_org),
                "redirect_uri": params.get("redirect_uri", ""),
                "state": params.get("state", "")}.items()})
            return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()
        if method == "POST" and path == "/authorize":
            form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
            if form.get("decision") == "allow":
                code = "code-" + secrets.token_hex(8)
                self._codes[code] = self.authorizing_org
                back = {"code": code, "state": form.get("state", "")}
            else:
                back = {"error": "access_denied", "state": form.get("state", "")}
            return 302, {"Location": form["redirect_uri"] + "?" + urlencode(back)}, b""
        if method == "GET" and path == "/settings/integrations":
            return 200, {"Content-Type": "text/html; charset=utf-8"}, SETTINGS_PAGE.encode()
        if method == "POST" and path == "/oauth2/token":
            form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
            return self._token(form)
        if method == "POST" and path == "/app/token_info":
            self.token_info_calls += 1
            token = json.loads(body or b"{}").get("access_token")
            if token not in self._access:
                return self._json(401, {"error": "invalid_token"})
            return self._json(200, {"authenticated_userid": f"orgId:{self._access[token]}",
                                    "scope": "contact_read conversation_read"})
        if method == "GET" and path.startswith("/conversations/"):
            token = headers.get("Authorization", "").removeprefix("Bearer ")
            self.api_calls.append((path, token))
            if token not in self._access:
                return self._json(401, {"error": "unauthorized"})
            conversation = self.conversations.get(path.rsplit("/", 1)[1])
            if conversation is None:
                return self._json(404, {"error": "not_found"})
            return self._json(200, {"data": conversation})
        return self._json(404, {"error": "not_found", "path": path})

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if (form.get("client_id"), form.get("client_secret")) != (self.client_id,
                                                                   self.client_secret):
            return self._json(401, {"error": "invalid_client"})
        grant = form.get("grant_type", "")
        self.grants.append(grant)
        if grant == "authorization_code":
            org_id = self._codes.pop(form.get("code", ""), None)
        elif grant == "refresh_token":
            org_id = self._refresh.pop(form.get("refresh_token", ""), None)
            if org_id in self._refusing:
                org_id = None
        else:
            return self._json(400, {"error": "unsupported_grant_type"})
        if org_id is None:
            return self._json(400, {"error": "invalid_grant"})
        access, refresh = "drift-at-" + secrets.token_hex(12), "drift-rt-" + secrets.token_hex(12)
        # A refresh retires the org's older access tokens, as a rotating provider may.
        for token in [t for t, org in self._access.items() if org == org_id]:
            del self._access[token]
        self._access[access], self._refresh[refresh] = org_id, org_id
        self.issued += [access, refresh]
        if self.camel_case:
            answer: dict[str, Any] = {"accessToken": access, "refreshToken": refresh,
                                      "tokenType": "bearer", "expiresIn": self.expires_in}
        else:
            answer = {"access_token": access, "refresh_token": refresh,
                      "token_type": "bearer", "expires_in": self.expires_in}
        if self.send_org_id:
            answer["orgId"] = org_id
        return self._json(200, answer)

    @staticmethod
    def _json(status: int, answer: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()
