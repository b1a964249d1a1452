"""The one SQLite connection, and how requests share its transactions (group commit).

Why one connection behind one lock: every request is a handful of indexed statements
(tens of microseconds each), so serialising them costs less than the bookkeeping of a
connection pool, and it makes each request exactly one transaction (``BEGIN IMMEDIATE``
… ``COMMIT``), so a crash never leaves half a job. ``BEGIN IMMEDIATE`` also makes a
second *process* on the same file wait (``busy_timeout``) instead of failing.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gcbatch.sandbox.store.schema import prepare

GROUP_COMMIT_MAX = 64  # requests per shared COMMIT at most
GROUP_COMMIT_WAIT = 0.004  # seconds a finished request waits for others to share its COMMIT


class Database:
    """The connection, its lock and group commit; the storage folder beside the file.
    Use :meth:`transaction` around every request."""

    def __init__(self, db_path: Path | None) -> None:
        self.lock = threading.RLock()
        self._cond = threading.Condition(self.lock)
        self._count_lock = threading.Lock()
        self._queued = 0  # requests waiting for the lock
        self._open = False  # a shared write transaction is open
        self._opened_at = 0.0
        self._batch = 0
        self._epoch = 0  # number of the open (or next) shared transaction
        self._committed = 0  # transactions numbered below this are committed
        self._depth = 0
        self._tmpdir: str | None = None
        if db_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="gcbatch-sandbox-")
            self.storage = Path(self._tmpdir)
            target = ":memory:"
        else:
            db_path = Path(db_path)
            db_path.parent.mkdir(parents=True, exist_ok=True)
            self.storage = db_path.with_name(db_path.name + ".storage")
            target = str(db_path)
        self.storage.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            target, check_same_thread=False, isolation_level=None, cached_statements=256
        )
        self.conn.execute("PRAGMA busy_timeout = 10000")
        if db_path is not None:
            self.conn.execute("PRAGMA journal_mode = WAL")
        # No fsync: a committed transaction survives the death of the process (the bytes
        # are in the OS's cache), which is what a test sandbox meets; only an OS crash
        # could lose the last commits. fsync on this kind of disk costs milliseconds, and
        # with it the sandbox could not take 1,000 job POSTs a second.
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("PRAGMA wal_autocheckpoint = 10000")
        self.conn.execute("PRAGMA temp_store = MEMORY")
        self.conn.execute("PRAGMA foreign_keys = OFF")
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                prepare(self.conn, db_path)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.secret: bytes = bytes.fromhex(
                self.conn.execute("SELECT value FROM meta WHERE key='secret'").fetchone()[0]
            )

    # -- transactions -------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One request's work, atomic, durable (committed) before this returns.

        Group commit: a request runs inside a SAVEPOINT of a shared write transaction.
        When it is done and other requests are already queued for the lock, it leaves
        the COMMIT to them and waits; the last request of a burst (or one that waited
        GROUP_COMMIT_WAIT seconds, or the GROUP_COMMIT_MAX-th) commits them all at once.
        Every request still returns only after its changes are committed, so a client
        never hears of a job that a crash could take back — but a burst of concurrent
        requests pays for one COMMIT (most of the cost of a job POST) instead of many.
        A failing request rolls back to its savepoint and leaves the others intact.
        """
        with self._count_lock:
            self._queued += 1
        with self.lock:
            with self._count_lock:
                self._queued -= 1
            if self._depth:  # nested: a plain savepoint inside the outer request
                self._depth += 1
                self.conn.execute("SAVEPOINT inner")
                try:
                    yield
                except BaseException:
                    self.conn.execute("ROLLBACK TO inner")
                    self.conn.execute("RELEASE inner")
                    raise
                finally:
                    self._depth -= 1
                self.conn.execute("RELEASE inner")
                return
            if not self._open:
                self.conn.execute("BEGIN IMMEDIATE")
                self._open = True
                self._opened_at = time.monotonic()
                self._batch = 0
            ticket = self._epoch
            self._depth = 1
            self.conn.execute("SAVEPOINT request")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK TO request")
                self.conn.execute("RELEASE request")
                self._depth = 0
                self._settle(ticket)
                raise
            self._depth = 0
            self.conn.execute("RELEASE request")
            self._batch += 1
            self._settle(ticket)

    def _settle(self, ticket: int) -> None:
        """Return once the transaction numbered ``ticket`` is committed (lock held)."""
        while self._committed <= ticket:
            with self._count_lock:
                others = self._queued
            if (
                others == 0
                or self._batch >= GROUP_COMMIT_MAX
                or time.monotonic() - self._opened_at >= GROUP_COMMIT_WAIT
            ):
                self._commit()
                return
            self._cond.wait(timeout=GROUP_COMMIT_WAIT)

    def _commit(self) -> None:
        if self._open:
            self.conn.execute("COMMIT")
            self._open = False
            self._committed = self._epoch + 1
            self._epoch += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self.lock:
            self._commit()
            self.conn.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    # -- meta ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )
