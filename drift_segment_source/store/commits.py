"""How accepted webhooks reach the disk fast without weakening "200 only after commit".

Three pieces, each for one measured cost (bench/results/profiles):

- ``GroupCommit``: concurrent requests share one transaction, so one fsync covers many.
- ``WriteLock``: SQLite writers of all processes queue on a file lock instead of SQLite's
  busy handler, which polls with sleeps of up to 100 ms; the wait is bounded
  (DATABASE_LOCK_TIMEOUT_SECONDS), then the write fails with StoreUnavailable (a 503).
- ``WebhookInserter``: the insert itself runs fixed SQL on a DB-API connection kept for
  it, with no statement building, compiling, pool checkout or reset per request (and, on
  PostgreSQL, as a server-side prepared statement after a few runs).

Every answer stays true whatever the others in a group do: each request gets the outcome of
the commit that held its row, and a row the database refuses fails alone
(docs/reliability.md#what-every-request-gets).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy.engine import Engine

log = logging.getLogger("drift_segment_source.store")

# Column order of the rows handed to WebhookInserter.
WEBHOOK_COLUMNS = ("org_id", "event_type", "dedupe_key", "payload", "received_at", "queued_at",
                   "state", "hold_reason", "attempts", "next_attempt_at", "taken_in_dry_run")
# Rows per INSERT statement: well under SQLite's limit of bound variables.
ROWS_PER_STATEMENT = 500
# How long a SQLite writer waits for the write lock when the engine does not say (an engine
# not made by db.make_engine): the sqlite3 driver's own default busy timeout.
DEFAULT_LOCK_TIMEOUT_SECONDS = 5.0
# SQLite's result code for "another connection holds the lock" (busy timeout ran out); its
# extended codes keep it in the low byte.
SQLITE_BUSY = 5


def chunks(rows: Sequence[tuple[Any, ...]]) -> Iterator[Sequence[tuple[Any, ...]]]:
    """``rows`` in slices of at most ROWS_PER_STATEMENT."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start:start + ROWS_PER_STATEMENT]


class StoreUnavailable(RuntimeError):
    """The database cannot be reached or written; the webhook was not stored."""


class Unstorable(ValueError):
    """The database refused this row's values (the database itself is fine)."""


def busy(error: BaseException) -> bool:
    """The database error is SQLite's "another connection holds the lock"."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == SQLITE_BUSY


def digest_of(dedupe_key: str) -> bytes:
    """The 16 bytes a dedupe key is kept as: its hex digest (translators.dedupe_key)."""
    return bytes.fromhex(dedupe_key[-32:])


@dataclass
class _Waiting:
    """A row handed to GroupCommit, and what became of it."""

    row: tuple[Any, ...]
    result: int | None = None
    error: Exception | None = None
    done: bool = False


class GroupCommit:
    """Commit the rows of concurrent requests together: one fsync for many webhooks.

    Each caller queues its row and waits for the commit lock. Whoever gets the lock takes
    the database's write lock (``hold``), and only then commits everything queued so far:
    its own row and the rows of every caller that arrived while this process waited for
    another writer (the other web workers, the delivery loop) or for its previous commit.
    Every caller returns only after the commit that holds its row.

    When ``hold`` gives up (the write lock was not free within its bound), every row queued
    by then fails with it: each of those callers has waited no longer than the one that gave
    up, so no caller waits more than about one bound, however many are queued.
    """

    def __init__(self, insert: Callable[[list[tuple[Any, ...]]], list[int | None]],
                 hold: Callable[[], AbstractContextManager[None]] = nullcontext) -> None:
        self._insert = insert
        self._hold = hold
        self._commit_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Waiting] = []

    def submit(self, row: tuple[Any, ...]) -> int | None:
        """Store ``row``; its id, or None when its dedupe key is already stored.

        Raises StoreUnavailable (the database is down) or Unstorable (it refused this row).
        """
        waiting = _Waiting(row)
        with self._queue_lock:
            self._queue.append(waiting)
        with self._commit_lock:
            if not waiting.done:
                with ExitStack() as holding:
                    try:
                        holding.enter_context(self._hold())
                    except StoreUnavailable as error:
                        with self._queue_lock:
                            batch, self._queue = self._queue, []
                        self._settle(batch, error)
                    else:
                        with self._queue_lock:
                            batch, self._queue = self._queue, []
                        self._commit(batch)
        if waiting.error is not None:
            raise waiting.error
        if not waiting.done:  # cannot happen: _commit settles every row it took
            raise StoreUnavailable("the row was not committed")
        return waiting.result

    def _commit(self, batch: list[_Waiting]) -> None:
        try:
            results = self._insert([waiting.row for waiting in batch])
        except StoreUnavailable as error:
            self._settle(batch, error)
        except Exception as error:
            if len(batch) == 1:
                self._settle(batch, error)
            else:
                # One row the database refused must not fail the others: each alone.
                for waiting in batch:
                    self._commit([waiting])
        else:
            for waiting, result in zip(batch, results, strict=True):
                waiting.result, waiting.done = result, True
        finally:
            # Whatever went wrong above, nobody is left waiting without an outcome.
            self._settle([waiting for waiting in batch if not waiting.done],
                         StoreUnavailable("the commit did not complete"))

    @staticmethod
    def _settle(batch: list[_Waiting], error: Exception) -> None:
        for waiting in batch:
            waiting.error, waiting.done = error, True


class WriteLock:
    """One SQLite writer at a time across threads and processes, by a file lock, waited for
    at most ``timeout`` seconds; then StoreUnavailable.

    A flock queue wakes the next writer as soon as the lock is free, but a blocking flock has
    no timeout and cannot be interrupted from another thread. So a writer first tries the
    lock without blocking; when another process holds it, a helper thread blocks in flock and
    hands the lock to the writer if the writer is still waiting when it comes, or lets it go
    at once if the writer gave up. While the helper has waited longer than ``timeout`` (the
    holder is stopped or hung), writers are refused at once instead of each waiting the whole
    bound, so request threads stay free (``/healthz`` answers) until the holder lets go.
    PostgreSQL needs none of this: its writers do not block each other on whole-database
    locks, and its statement timeout bounds what they do wait for.
    """

    def __init__(self, path: str | None,
                 timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS) -> None:
        self.path = path
        # Past TIMEOUT_MAX, threading refuses the wait itself.
        self.timeout = min(timeout, threading.TIMEOUT_MAX)
        # flock does not queue threads of one process that share a descriptor.
        self._thread_lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._pid = 0
        # The helper's state, guarded by _handover: when it started waiting in flock (None:
        # not waiting), whether it holds the lock for a writer, and whether one is waiting.
        self._handover = threading.Condition()
        self._helper_since: float | None = None
        self._handed = False
        self._writer_waiting = False

    @classmethod
    def for_engine(cls, engine: Engine) -> WriteLock:
        """A lock beside the SQLite file, waited for as long as SQLite's own busy timeout
        (the URL's ``timeout``), or a no-op lock for other databases."""
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            return cls(None)
        timeout = engine.url.query.get("timeout")
        return cls(database + ".write-lock",
                   float(timeout) if isinstance(timeout, str) else DEFAULT_LOCK_TIMEOUT_SECONDS)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the duration of the block; StoreUnavailable when it is not free
        within ``timeout``."""
        if self.path is None:
            yield
            return
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=max(0.0, self.timeout)):
            raise self._unavailable()
        try:
            lock_file = self._open()
            self._take(lock_file, deadline)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def _take(self, lock_file: IO[bytes], deadline: float) -> None:
        """Take the file lock by ``deadline`` (the caller holds _thread_lock)."""
        with self._handover:
            if self._helper_since is None and not self._handed:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    self._helper_since = time.monotonic()
                    threading.Thread(target=self._wait_in_flock, args=(lock_file,),
                                     name="write-lock-wait", daemon=True).start()
            elif (self._helper_since is not None
                  and time.monotonic() - self._helper_since > self.timeout):
                raise self._unavailable()
            self._writer_waiting = True
            try:
                while not self._handed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise self._unavailable()
                    self._handover.wait(remaining)
                self._handed = False
            finally:
                self._writer_waiting = False

    def _wait_in_flock(self, lock_file: IO[bytes]) -> None:
        """The helper: block until the other process lets go, then hand the lock over."""
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        except OSError:
            log.exception("waiting for the SQLite write lock failed")
            with self._handover:
                self._helper_since = None
            return
        with self._handover:
            self._helper_since = None
            if self._writer_waiting:
                self._handed = True
                self._handover.notify()
            else:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _unavailable(self) -> StoreUnavailable:
        return StoreUnavailable(f"the SQLite write lock was not free within {self.timeout:g} s "
                                "(DATABASE_LOCK_TIMEOUT_SECONDS)")

    def _open(self) -> IO[bytes]:
        # Opened once per process (a descriptor inherited across fork would share the
        # parent's lock instead of queueing behind it) and closed with this object.
        if self._file is None or self._pid != os.getpid():
            assert self.path is not None
            self._file = open(self.path, "ab")  # noqa: SIM115 (closed by the finalizer)
            self._pid = os.getpid()
            weakref.finalize(self, self._file.close)
            # A helper of the parent process did not survive the fork.
            self._helper_since, self._handed, self._writer_waiting = None, False, False
        return self._file


class WebhookInserter:
    """Store a batch of webhook rows in one transaction, each once per Drift event.

    The event's dedupe key goes into ``dedupe_keys`` (kept far longer than the webhook row,
    see Store.prune_dedupe_keys); only rows whose key is new there become webhook rows.
    Used by one committer at a time, holding ``lock`` (GroupCommit takes both), so it keeps
    one connection per process. A broken connection is replaced and the batch tried once
    more: the dedupe key makes a repeated insert harmless.
    """

    def __init__(self, engine: Engine, lock: WriteLock) -> None:
        self.engine = engine
        self.lock = lock
        self._marker = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._sql: dict[tuple[str, int], str] = {}
        self._connection: Any = None
        self._pid = 0
        dbapi = engine.dialect.loaded_dbapi
        self._errors = dbapi.Error
        # The database refusing these values, as opposed to being down or unreachable.
        self._refusals = (dbapi.DataError, dbapi.IntegrityError, dbapi.NotSupportedError)

    def insert(self, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        """Each row's new id, or None for a duplicate; the caller holds ``lock``.

        Raises StoreUnavailable when the database fails, Unstorable when it (or the driver)
        refuses the values themselves.
        """
        for attempt in (1, 2):
            try:
                return self._insert(rows)
            except self._refusals as error:
                self._discard()
                raise Unstorable(type(error).__name__) from None
            except self._errors as error:
                self._discard()
                # SQLite's busy timeout ran out: trying again would wait the bound twice.
                if attempt == 2 or busy(error):
                    raise StoreUnavailable(type(error).__name__) from None
            except (ValueError, TypeError, OverflowError) as error:
                # The driver could not bind a value (e.g. text that is not valid Unicode).
                self._discard()
                raise Unstorable(type(error).__name__) from None
        raise AssertionError("unreachable")

    def _insert(self, rows: Sequence[tuple[Any, ...]]) -> list[int | None]:
        key_column = WEBHOOK_COLUMNS.index("dedupe_key")
        seen_column = WEBHOOK_COLUMNS.index("queued_at")
        connection = self._connect()
        cursor = connection.cursor()
        try:
            new_keys: set[bytes] = set()
            for chunk in chunks(rows):
                cursor.execute(self._statement("dedupe_keys", len(chunk)), tuple(
                    value for row in chunk
                    for value in (digest_of(row[key_column]), row[seen_column])))
                new_keys.update(bytes(digest) for (digest,) in cursor.fetchall())
            # A key given twice in one batch is stored once: the later copy is a duplicate.
            fresh: list[tuple[Any, ...]] = []
            for row in rows:
                digest = digest_of(row[key_column])
                if digest in new_keys:
                    new_keys.discard(digest)
                    fresh.append(row)
            inserted: dict[str, int] = {}
            for chunk in chunks(fresh):
                cursor.execute(self._statement("webhooks", len(chunk)),
                               tuple(value for row in chunk for value in row))
                inserted.update((str(key), int(row_id)) for key, row_id in cursor.fetchall())
            connection.commit()
        finally:
            cursor.close()
        return [inserted.pop(row[key_column], None) for row in rows]

    def _statement(self, table: str, count: int) -> str:
        sql = self._sql.get((table, count))
        if sql is None:
            columns: tuple[str, ...]
            if table == "dedupe_keys":
                columns, returning = ("digest", "first_seen_at"), "digest"
                conflict = "digest"
            else:
                columns, returning = WEBHOOK_COLUMNS, "dedupe_key, id"
                # A webhook row outlives its key when it is a dead letter (kept until an
                # operator acts): a re-sent event then finds the row, and is a duplicate.
                conflict = "dedupe_key"
            one_row = "(" + ", ".join([self._marker] * len(columns)) + ")"
            sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                   + ", ".join([one_row] * count)
                   + f" ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning}")
            self._sql[(table, count)] = sql
        return sql

    def _connect(self) -> Any:
        if self._connection is None or self._pid != os.getpid():
            self._connection = self.engine.raw_connection()
            self._pid = os.getpid()
        return self._connection

    def _discard(self) -> None:
        if self._connection is not None and self._pid == os.getpid():
            self._connection.invalidate()  # never back into the pool: it may be broken
        self._connection = None

    def close(self) -> None:
        """Give the kept connection back (tests, shutdown)."""
        if self._connection is not None and self._pid == os.getpid():
            self._connection.close()
        self._connection = None
