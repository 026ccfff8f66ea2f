"""The baseline: Flask on the service's gunicorn settings, answering webhooks without work.

What the service adds to a request is measured against this: same framework, same server,
same answer shape (``{"status": "accepted", "id": ...}``), but nothing parsed, checked or
stored.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify


def create_app() -> Flask:
    """A Flask app with the service's two routes the benchmark touches."""
    app = Flask(__name__)

    @app.post("/webhooks/drift")
    def receive() -> tuple[Response, int]:
        """Answer like the service does after a commit, without the commit."""
        return jsonify(status="accepted", id=0), 200

    @app.get("/healthz")
    def healthz() -> Response:
        """Liveness, for the harness's readiness wait."""
        return jsonify(status="ok")

    return app


app = create_app()
