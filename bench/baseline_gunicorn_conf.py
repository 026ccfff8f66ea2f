"""gunicorn settings of the baseline: the service's own values, without its delivery hooks.

Every setting that shapes request handling (worker class, workers, threads, keep-alive,
timeouts) is imported from the service's gunicorn config so the two cannot drift apart; the
hooks that start and stop the delivery thread are left out because the baseline has none.
"""

from drift_segment_source.gunicorn_conf import (  # noqa: F401  (read by gunicorn)
    accesslog,
    bind,
    errorlog,
    graceful_timeout,
    keepalive,
    preload_app,
    threads,
    timeout,
    worker_class,
    workers,
)
