"""The Segment edge: messages built by the official library, posted in batches.

``Client(send=False)`` does the library's normalisation (messageId, ISO timestamp,
``context.library``, size check) without its in-memory queue, which is neither durable nor
fork-safe. Batches go out through the library's ``request.post``, synchronously, so a row
is marked delivered only after Segment's 2xx.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests
from segment.analytics import Client
from segment.analytics import request as segment_request
from segment.analytics.request import APIError, DatetimeSerializer, parse_retry_after, post

from drift_segment_source import __version__
from drift_segment_source.sources.drift.translators import SegmentCall

INTEGRATION = {"name": "drift-segment-source", "version": __version__}
# Segment's limits are 500 KB and 2,500 messages per batch; stay under with room for the
# envelope, as the library's own consumer does (475,000 bytes).
MAX_BATCH_BYTES = 475_000
MAX_BATCH_MESSAGES = 2_500
# 3xx: the host is a redirector or misconfigured proxy; the rows wait for the fix.
RETRYABLE_STATUSES = {408, 429} | set(range(300, 400)) | set(range(500, 600))


class MessageTooLarge(ValueError):
    """A message is over Segment's 32 KB limit and would be refused."""


@dataclass(frozen=True)
class SegmentError(Exception):
    """Segment did not answer 2xx (``status`` None: no answer at all)."""

    status: int | None
    message: str
    retry_after: float | None = None
    timed_out: bool = False  # no answer within the timeout: the host hangs, not refuses
    # What went wrong, for the log: status (an HTTP answer), refused (nothing listens),
    # timeout, tls, redirect, unreadable (an answer we could not read) or network.
    kind: str = "status"

    @property
    def retryable(self) -> bool:
        """Worth trying again later: no answer, timeouts, rate limits and server errors."""
        return self.status is None or self.status in RETRYABLE_STATUSES

    def __str__(self) -> str:
        return f"Segment {self.status or 'network error'}: {self.message}"


class MessageBuilder:
    """Normalises calls into Segment messages with the official library."""

    def __init__(self) -> None:
        # The write key is not used: send=False only builds. The library requires a string.
        self._client = Client("build-only", send=False)

    def build(self, call: SegmentCall) -> dict[str, Any]:
        """The message exactly as the library would send it; MessageTooLarge over 32 KB."""
        options = {
            "anonymous_id": call.anonymous_id,
            "timestamp": call.timestamp,
            "message_id": call.message_id,
            # A new dict each time: the library writes context.library into the one given.
            "context": {"integration": dict(INTEGRATION)},
            "integrations": {"Drift": False},
        }
        if call.user_id is not None:
            options["user_id"] = call.user_id
        try:
            if call.kind == "track":
                _, message = self._client.track(event=call.event, properties=call.fields,
                                                **options)
            else:
                _, message = self._client.identify(traits=call.fields, **options)
        except RecursionError:
            raise  # nested too deep to serialise: not a size problem (RuntimeError below)
        except RuntimeError:
            raise MessageTooLarge(f"{call.message_id} is over Segment's 32 KB limit") from None
        built: dict[str, Any] = message
        return built


def message_size(message: dict[str, Any]) -> int:
    """Bytes the message takes in a batch body."""
    return len(json.dumps(message, cls=DatetimeSerializer).encode())


def batches(messages: Sequence[dict[str, Any]]) -> Iterator[list[int]]:
    """Split messages into batches under Segment's limits; yields index lists."""
    # The usual round fits in one batch: one serialisation of the whole list proves it,
    # instead of one per message.
    if len(messages) <= MAX_BATCH_MESSAGES and len(
            json.dumps(messages, cls=DatetimeSerializer).encode()) <= MAX_BATCH_BYTES:
        if messages:
            yield list(range(len(messages)))
        return
    current: list[int] = []
    size = 0
    for index, message in enumerate(messages):
        length = message_size(message) + 1
        if current and (size + length > MAX_BATCH_BYTES or len(current) >= MAX_BATCH_MESSAGES):
            yield current
            current, size = [], 0
        current.append(index)
        size += length
    if current:
        yield current


class Transport(Protocol):
    """Posts one batch to Segment; raises SegmentError unless Segment answered 2xx."""

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None: ...


class HttpTransport:
    """The real thing: the Segment library's ``request.post`` to ``host``/v1/batch."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # The library's session follows redirects, turning the POST into a bodiless GET
        # whose 2xx would pass for a delivery. A 3xx must reach us as an error (retried).
        segment_request._session.max_redirects = 0

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None:
        try:
            post(write_key, host, timeout=self.timeout, batch=batch)
        except APIError as error:
            retry_after = None
            if error.response is not None:
                retry_after = parse_retry_after(error.response)
            raise SegmentError(int(error.status), str(error.message)[:300],
                               retry_after) from None
        except requests.TooManyRedirects:
            raise SegmentError(None, "the host answered with a redirect; SEGMENT_HOST must be "
                                     "the API itself", kind="redirect") from None
        except requests.RequestException as error:
            raise SegmentError(None, type(error).__name__,
                               timed_out=isinstance(error, requests.Timeout),
                               kind=network_error_kind(error)) from None
        except (ValueError, RecursionError) as error:
            # The library could not read Segment's answer (e.g. absurdly nested JSON):
            # no confirmation, so the batch is tried again later.
            raise SegmentError(None, f"unreadable answer: {type(error).__name__}",
                               kind="unreadable") from None


def network_error_kind(error: requests.RequestException) -> str:
    """Why no answer came: refused, timeout, tls, or network (DNS, reset, …)."""
    if isinstance(error, requests.Timeout):
        return "timeout"
    if isinstance(error, requests.exceptions.SSLError):
        return "tls"
    cause: BaseException | None = error
    for _ in range(8):  # requests wraps urllib3's error, which wraps the socket's
        if cause is None:
            break
        if isinstance(cause, ConnectionRefusedError):
            return "refused"
        cause = cause.__cause__ or cause.__context__ or (
            cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None)
    return "refused" if "refused" in str(error).lower() else "network"


class FailingTransport:
    """Fault injection (``SEGMENT_TRANSPORT=failing``): every post fails like an outage."""

    def __init__(self, status: int | None = 503, probability: float = 1.0) -> None:
        self.status = status
        self.probability = probability

    def post(self, write_key: str, host: str, batch: list[dict[str, Any]]) -> None:
        if random.random() < self.probability:
            raise SegmentError(self.status, "injected failure (SEGMENT_TRANSPORT=failing)")


def make_transport(name: str, timeout: float) -> Transport:
    """The transport named by ``SEGMENT_TRANSPORT``: ``http`` or ``failing[:status]``."""
    if name == "http":
        return HttpTransport(timeout)
    if name.startswith("failing"):
        _, _, status = name.partition(":")
        return FailingTransport(int(status) if status else 503)
    raise ValueError(f"SEGMENT_TRANSPORT must be 'http' or 'failing[:status]', got {name!r}")
