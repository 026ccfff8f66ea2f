"""A wall-clock limit for calls whose HTTP client bounds only each socket read.

``requests``' timeout applies to every read, so a peer that answers a byte at a time never
times out. A delivery round must end inside its lease, and a lookup must not hold its slot
for good, so such calls run in a daemon thread that the caller stops waiting for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


class TookTooLong(TimeoutError):
    """The call did not end in time; it may still end later, unobserved."""


def call_within(seconds: float, call: Callable[[], Result]) -> Result:
    """``call()``'s result (or its exception), or TookTooLong after ``seconds``."""
    if seconds <= 0:
        raise TookTooLong("no time left")
    outcome: list[Result] = []
    failure: list[BaseException] = []
    finished = threading.Event()

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # handed to the caller
            failure.append(error)
        finally:
            finished.set()

    threading.Thread(target=run, name="deadline", daemon=True).start()
    if not finished.wait(seconds):
        raise TookTooLong(f"no answer within {seconds:g} s")
    if failure:
        raise failure[0]
    return outcome[0]
