"""gunicorn settings for the web service and its in-process delivery loop.

The repository's ``gunicorn.conf.py`` (used by the Procfile) and ``drift-segment-source
serve`` both load this module, so local runs and Heroku dynos behave the same.

Slow clients: gunicorn's gthread worker reads a request's headers and body on a pool thread
with no time limit, so a few clients sending a byte now and then would hold every thread
and no webhook would be answered. ``DeadlineWorker`` gives each request
``REQUEST_READ_TIMEOUT_SECONDS`` to arrive, then cuts the connection's read side: the
thread is free again, and a webhook whose body was cut off gets a 408 (webhooks.read_body).
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from gunicorn.workers.gthread import TConn, ThreadWorker

from .config import bind_addresses, load_settings

_settings = load_settings()
log = logging.getLogger("drift_segment_source.gunicorn")

# Heroku gives the port in $PORT; bind every interface (BIND_HOST's default) so the router
# can reach the dyno. scripts/run sets BIND_HOST=127.0.0.1: a laptop's service is its own.
bind = bind_addresses(_settings)

# Heroku's convention for the number of processes; 2 suits a 512 MB dyno.
workers = _settings["WEB_CONCURRENCY"]

# gthread: a webhook spends its time waiting on the database commit, so threads overlap
# those waits cheaply, and the delivery thread can live beside them in the same worker.
# DeadlineWorker (below) is gthread with a deadline on reading each request.
worker_class = "drift_segment_source.gunicorn_conf.DeadlineWorker"
threads = _settings["WEB_THREADS"]

# Connections one worker holds open, idle ones included (Heroku's router keeps some open
# between requests); past it the worker stops accepting until some close. Idle connections
# wait in the worker's poller, not on a thread, and cost a file descriptor each.
worker_connections = 1000

# Heroku sends SIGTERM and waits 30 s before SIGKILL: finish (or hand back) in-flight
# webhooks and delivery batches within 25 s, leaving room for the process to exit.
graceful_timeout = 25

# A request that hangs this long is killed; well above a normal webhook (milliseconds).
timeout = 30

# Heroku's router keeps idle client connections for up to 90 s; stay open a bit longer
# so it never reuses a connection gunicorn just closed.
keepalive = 95

# Webhooks, OAuth redirects and the status page need short request lines and few headers.
# These bound what one request's head can make a thread read and keep in memory (at most
# 4 KiB + 64 x 8 KiB); anything over is refused with 400 before the app sees it.
limit_request_line = 4094
limit_request_fields = 64
limit_request_field_size = 8190

# How long a client may take to send a request, head and body (see DeadlineWorker).
REQUEST_READ_TIMEOUT_SECONDS: float = _settings["REQUEST_READ_TIMEOUT_SECONDS"]
# How often the deadlines are checked: a slow client is cut off at most this late.
DEADLINE_TICK_SECONDS = 0.25
# After SIGTERM a request must arrive within this: gthread serves every connection it has
# accepted before it exits, so slow clients queued for a thread would each take the full
# read timeout, past the graceful timeout. A webhook arrives in milliseconds.
STOPPING_READ_TIMEOUT_SECONDS = 1.0

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


class ReadDeadlines:
    """Cuts off the clients that take longer than ``seconds`` to send their request.

    Cutting is ``shutdown(SHUT_RD)``: the thread blocked reading wakes with end-of-file
    (gunicorn closes a connection whose head never ended; the app answers a short body with
    a 408), while an answer already being written still goes out.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        # Every deadline is "now + seconds", so insertion order is deadline order.
        self._watched: dict[int, tuple[float, socket.socket]] = {}
        self._lock = threading.Lock()
        self._tokens = iter(range(2**63))
        threading.Thread(target=self._run, name="read-deadlines", daemon=True).start()

    @contextmanager
    def watch(self, connection: socket.socket) -> Iterator[None]:
        """Cut ``connection`` off if the block is still running after the deadline."""
        with self._lock:
            token = next(self._tokens)
            self._watched[token] = (time.monotonic() + self.seconds, connection)
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(token, None)

    def hurry(self, seconds: float) -> None:
        """From now on allow at most ``seconds``, to the requests being read too."""
        with self._lock:
            self.seconds = min(self.seconds, seconds)
            latest = time.monotonic() + self.seconds
            # Capping every deadline at one time keeps them in deadline order.
            for token, (deadline, connection) in self._watched.items():
                self._watched[token] = (min(deadline, latest), connection)

    def _run(self) -> None:
        while True:
            time.sleep(DEADLINE_TICK_SECONDS)
            cut = 0
            now = time.monotonic()
            # Under the lock: once watch() has returned, its socket (soon closed, its file
            # descriptor reused) is never touched here.
            with self._lock:
                while self._watched:
                    token, (deadline, connection) = next(iter(self._watched.items()))
                    if deadline > now:
                        break
                    del self._watched[token]
                    try:
                        connection.shutdown(socket.SHUT_RD)
                        cut += 1
                    except OSError:
                        pass  # the client has gone already
            if cut:
                log.warning("slow clients cut off", extra={
                    "count": cut, "deadline_seconds": self.seconds})


class DeadlineWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gthread (gunicorn 27.0.1, pinned: this leans on its internals), changed three ways:

    - a new connection waits in the poller until it has sent something; gthread gave it a
      pool thread at once, which waited up to 5 s for the first bytes, so a burst of silent
      connections queued every webhook behind 5 s waits;
    - each request then has ``REQUEST_READ_TIMEOUT_SECONDS`` to arrive (ReadDeadlines);
    - SIGTERM tells the delivery loop to stop at once, closes the silent connections and
      shortens the read deadline, rather than waiting for every open connection to end.
    """

    def init_process(self) -> None:
        """After fork: this worker's deadline watcher, then gthread's own set-up."""
        self.deadlines = ReadDeadlines(REQUEST_READ_TIMEOUT_SECONDS)
        super().init_process()

    def accept(self, listener: socket.socket) -> None:
        """Take a new connection into the poller (gthread's own way for a connection that
        has been silent too long); a pool thread serves it once it is readable."""
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client, address, listener.getsockname())  # non-blocking
        # A connection that never speaks is closed when a kept-alive one would be.
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(client, selectors.EVENT_READ,
                             partial(self.on_pending_socket_readable, conn))

    def handle(self, conn: Any) -> Any:
        """Serve one request on a pool thread within the read deadline."""
        with self.deadlines.watch(conn.sock):
            return super().handle(conn)

    def murder_pending(self) -> None:
        """Close the silent connections past their time; when stopping, all of them: they
        have sent no request, so nothing is lost, and gthread would wait for each until its
        keep-alive ended (95 s), past the graceful timeout."""
        if not self.alive:
            for conn in self.pending_conns:
                conn.timeout = 0.0
        super().murder_pending()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop taking connections, and let the delivery loop finish its batch now
        (a slow client must not keep it claiming rows until the worker is killed)."""
        super().handle_exit(sig, frame)
        self.deadlines.hurry(STOPPING_READ_TIMEOUT_SECONDS)
        loop = _delivery.get("loop")
        if loop is not None:
            loop.stop()


def when_ready(server: Any) -> None:
    """Once, in the master, when the port is bound: where the data lives, dry-run, and what
    the configuration lacks (said here, not by every command that builds the app)."""
    from .startup import announce

    announce(_settings)


def post_worker_init(worker: Any) -> None:
    """Start this worker's delivery thread, after fork, once the app is loaded."""
    if not _settings["DELIVERY_IN_WEB"]:
        return
    from .app import make_delivery

    app = worker.wsgi
    delivery = make_delivery(app)
    _delivery.update(loop=delivery, thread=delivery.start())


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
