"""gunicorn settings for the web service and its in-process delivery loop.

The repository's ``gunicorn.conf.py`` (used by the Procfile) and ``drift-segment-source
serve`` both load this module, so local runs and Heroku dynos behave the same.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any

from drift_segment_source.config import load_settings

_settings = load_settings()

# Heroku gives the port in $PORT; bind every interface so the router can reach the dyno.
bind = [f"0.0.0.0:{_settings['PORT']}"]

# Heroku's convention for the number of processes; 2 suits a 512 MB dyno.
workers = _settings["WEB_CONCURRENCY"]

# gthread: a webhook spends its time waiting on the database commit, so threads overlap
# those waits cheaply, and the delivery thread can live beside them in the same worker.
worker_class = "gthread"
threads = _settings["WEB_THREADS"]

# Heroku sends SIGTERM and waits 30 s before SIGKILL: finish (or hand back) in-flight
# webhooks and delivery batches within 25 s, leaving room for the process to exit.
graceful_timeout = 25

# A request that hangs this long is killed; well above a normal webhook (milliseconds).
timeout = 30

# Heroku's router keeps idle client connections for up to 90 s; stay open a bit longer
# so it never reuses a connection gunicorn just closed.
keepalive = 95

# Never preload the app: the Segment HTTP session, database pool and delivery thread must
# be created in each worker after fork (threads do not survive fork; sockets must not be
# shared between processes).
preload_app = False

# Access logs add nothing our one JSON line per webhook does not say; errors go to stderr.
accesslog = None
errorlog = "-"

# Prometheus counters from every worker are added up through files in this folder.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="drift-segment-metrics-")

_delivery: dict[str, Any] = {}


def post_worker_init(worker: Any) -> None:
    """Start this worker's delivery thread, after fork, once the app is loaded."""
    if not _settings["DELIVERY_IN_WEB"]:
        return
    from drift_segment_source.app import make_delivery

    app = worker.wsgi
    delivery = make_delivery(app)
    thread = threading.Thread(
        target=delivery.run_forever,
        args=(app.extensions["delivery_wakeup"],),
        name="delivery",
        daemon=True,
    )
    thread.start()
    _delivery.update(loop=delivery, thread=thread)


def worker_exit(server: Any, worker: Any) -> None:
    """On shutdown, let the current batch finish; unconfirmed rows go back to the store."""
    loop, thread = _delivery.get("loop"), _delivery.get("thread")
    if loop is None or thread is None:
        return
    loop.stop()
    thread.join(timeout=graceful_timeout - 5)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
