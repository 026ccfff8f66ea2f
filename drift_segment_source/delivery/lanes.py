"""Lanes: each Segment destination's posts run in a thread of their own, one job at a time.

A destination is a Segment host and write key (app mode: one per org or region). The round
hands each destination's rows to its lane as a job with two deadlines inside the rows'
lease (no new post after ``start_by``, every post over by ``end_by``); the lane posts them
and records their outcomes itself. So a destination that is slow, hangs or fails holds up
only its own lane: rows of other destinations are posted and recorded by theirs, and the
round waits for a lane at most until its own deadline (see docs/architecture.md).

A lane's thread starts when it is given a job and ends when it has none left; threads are
daemons, and a stopping loop hands unposted rows back (their lease ends with the loop).
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass

from drift_segment_source.clock import Clock
from drift_segment_source.routing import Destination
from drift_segment_source.store.store import Failure

from .outcomes import Outcomes
from .posting import Deadlines, Poster
from .rows import Prepared

log = logging.getLogger("drift_segment_source.delivery")

# How often a round waiting for its lanes looks whether the loop is stopping.
STOP_CHECK_SECONDS = 0.25


@dataclass
class Job:
    """One destination's rows of one round, with their deadlines and outcomes."""

    destination: Destination
    rows: list[Prepared]
    outcomes: Outcomes
    deadlines: Deadlines
    done: Future[None]


class Lane:
    """One destination's queue of jobs and the thread that works through it."""

    def __init__(self, name: str, work: Callable[[Job], None]) -> None:
        self._name = name
        self._work = work
        self._jobs: deque[Job] = deque()
        self._lock = threading.Lock()
        self._running = False

    def busy(self) -> bool:
        """Whether a job runs and another waits: the lane takes no more for now."""
        with self._lock:
            return self._running and bool(self._jobs)

    def submit(self, job: Job) -> None:
        """Queue a job; start the lane's thread if it is idle."""
        with self._lock:
            self._jobs.append(job)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name=self._name, daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            try:
                self._work(job)
            except Exception:  # its rows stay leased and are claimed again after the lease
                log.exception("a lane's job failed", extra={"lane": self._name})
            finally:
                job.done.set_result(None)


class Lanes:
    """Every destination's lane of one delivery loop."""

    def __init__(self, poster: Poster, record: Callable[[Outcomes], None], clock: Clock,
                 stopping: threading.Event) -> None:
        self._poster = poster
        self._record = record
        self._clock = clock
        self._stopping = stopping
        self._lanes: dict[Destination, Lane] = {}
        self._lock = threading.Lock()
        self._pending: set[Future[None]] = set()

    def submit(self, destination: Destination, rows: list[Prepared], outcomes: Outcomes,
               deadlines: Deadlines) -> Future[None]:
        """Hand a destination's rows to its lane; the future is done once they are recorded."""
        job = Job(destination, rows, outcomes, deadlines, Future())
        with self._lock:
            lane = self._lanes.get(destination)
            if lane is None:
                lane = self._lanes[destination] = Lane(
                    f"segment-lane-{len(self._lanes)}", self._post_and_record)
            self._pending = {future for future in self._pending if not future.done()}
            self._pending.add(job.done)
        lane.submit(job)
        return job.done

    def _post_and_record(self, job: Job) -> None:
        """Post a job's rows (unless their time has passed) and record what happened."""
        if self._stopping.is_set() or self._clock.monotonic() > job.deadlines.start_by:
            job.outcomes.deferred.extend(Failure(prepared.row.id, "round ended before posting")
                                         for prepared in job.rows)
        else:
            self._poster.post_rows(job.destination, job.rows, job.outcomes, job.deadlines)
        self._record(job.outcomes)

    def busy(self, destination: Destination) -> bool:
        """Whether the destination's lane is posting one job with another waiting."""
        with self._lock:
            lane = self._lanes.get(destination)
        return lane is not None and lane.busy()

    def wait(self, futures: list[Future[None]], timeout: float,
             stopping: threading.Event) -> None:
        """Wait up to ``timeout`` seconds for these jobs to be recorded, or until the loop
        is stopping (its rows then go back with its lease, and nothing waits for a post)."""
        pending = [future for future in futures if not future.done()]
        # In slices: the posts take real time whatever clock a test hands in.
        for _ in range(max(0, math.ceil(timeout / STOP_CHECK_SECONDS))):
            if not pending or stopping.is_set():
                return
            wait_for_futures(pending, timeout=STOP_CHECK_SECONDS)
            pending = [future for future in pending if not future.done()]

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every job handed to a lane; whether all ended."""
        with self._lock:
            pending = list(self._pending)
        done, not_done = wait_for_futures(pending, timeout=max(0.0, timeout))
        return not not_done
