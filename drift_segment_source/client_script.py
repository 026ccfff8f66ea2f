"""``GET /drift-segment.js``: the client-side companion script (docs/client-script.md),
served cacheably.

The plain URL is cached for an hour and revalidated by ETag, so a new release reaches sites
within the hour; ``?v=<content hash>`` names one exact version and is cached for a year.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import Blueprint, Flask, Response, request

from . import __version__

blueprint = Blueprint("client_script", __name__)

SCRIPT_PATH = Path(__file__).resolve().parent / "static" / "drift-segment.js"
# Every visitor of every site using the script asks for it: an hour keeps that traffic off the
# relay while a fixed script still reaches sites the same day.
PLAIN_MAX_AGE = 3600
# A versioned URL never changes content, so caches may keep it as long as they keep anything.
VERSIONED_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True)
class ClientScript:
    """The script's bytes and the hash that names this version of them."""

    body: bytes
    content_hash: str

    @property
    def version(self) -> str:
        """Package version and content hash, e.g. ``0.1.0+3f2a…``."""
        return f"{__version__}+{self.content_hash}"


@cache
def client_script() -> ClientScript:
    """The packaged script, read once per process."""
    body = SCRIPT_PATH.read_bytes()
    return ClientScript(body=body, content_hash=hashlib.sha256(body).hexdigest()[:16])


def init_app(app: Flask) -> None:
    """Serve ``/drift-segment.js``."""
    app.register_blueprint(blueprint)


@blueprint.get("/drift-segment.js")
def drift_segment_js() -> Response:
    """The script, with a long cache when the URL names its current version."""
    script = client_script()
    response = Response(script.body, content_type="application/javascript; charset=utf-8")
    response.set_etag(script.content_hash)
    response.headers["X-Drift-Segment-Version"] = script.version
    if request.args.get("v") == script.content_hash:
        response.headers["Cache-Control"] = f"public, max-age={VERSIONED_MAX_AGE}, immutable"
    else:
        # A stale ?v= (a site pinned to an older release) gets today's script, but only the
        # short cache: pinning it for a year would make that URL lie about its version.
        response.headers["Cache-Control"] = f"public, max-age={PLAIN_MAX_AGE}"
    # Sites load it from another origin: CORS lets them pin it with Subresource Integrity,
    # and CORP lets pages that require cross-origin isolation (COEP) load it at all.
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Answers 304 (same headers, no body) when the browser already holds this version.
    response.make_conditional(request)
    return response
