"""What every tier of the tests shares, and nothing else: loopback fakes of Segment and Drift
(real HTTP on 127.0.0.1), a clock the tests move by hand, a throwaway PostgreSQL, the real
service as a child process, and the webhook and signing helpers.

Nothing here imports ``drift_segment_source``: the system tests use this folder and speak to
the service only over HTTP and its command line.
"""
