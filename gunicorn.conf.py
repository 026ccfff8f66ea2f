# gunicorn settings: gthread workers, a 25 s graceful timeout under Heroku's 30 s, the
# delivery loop started in each worker after fork and stopped (batch finished or handed
# back) on worker exit. Every setting is commented, with why, in the module imported here,
# so that `drift-segment-source serve` and the Procfile's gunicorn share one source.
from drift_segment_source.gunicorn_conf import *  # noqa: F403
