"""The unit tier: no database, no sockets, no sleeps. The last two are enforced: a test that
opens a network connection or sleeps fails, naming what it did."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_sockets_and_no_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every network connection and every sleep for the test's duration."""

    def refuse_connection(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"a unit test opened a connection to {address!r}")

    def refuse_sleep(seconds: float) -> None:
        raise AssertionError(f"a unit test slept for {seconds} s")

    monkeypatch.setattr(socket.socket, "connect", refuse_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connection)
    monkeypatch.setattr(time, "sleep", refuse_sleep)
