"""The sandbox's state: one SQLite database (WAL) plus a folder of stored bytes beside it.

Why SQLite: state must outlive a process (two CLI runs against the same ``--db`` see the
same jobs), many server threads write at once, and tests inspect it. Why one connection
behind one lock: every request is a handful of indexed statements (tens of microseconds
each), so serialising them costs less than the bookkeeping of a connection pool, and it
makes each request exactly one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``), so a
crash never leaves half a job. ``BEGIN IMMEDIATE`` also makes a second *process* on the
same file wait (``busy_timeout``) instead of failing.

Bytes (upload parts, completed uploads, files and images made by jobs) live on disk under
``<db>.storage/`` — never in memory, because uploads may be large. Seed images stay where
the seed put them and are served from there.

Only this module speaks SQL. The statements are plain module-level strings so sqlite3's
statement cache prepares each once per connection.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "3"
GROUP_COMMIT_MAX = 64  # requests per shared COMMIT at most
GROUP_COMMIT_WAIT = 0.004  # seconds a finished request waits for others to share its COMMIT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    pk TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    active INTEGER NOT NULL,
    next_at REAL,
    schedule TEXT NOT NULL,
    outcome TEXT NOT NULL,
    input_key TEXT,
    cost INTEGER NOT NULL,
    exec_duration REAL,
    invoke_duration REAL,
    error TEXT,
    outputs_pending INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_pending_outputs ON jobs (user) WHERE outputs_pending = 1;
CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user, seq);
CREATE INDEX IF NOT EXISTS jobs_dedup ON jobs (algorithm, input_key);
CREATE INDEX IF NOT EXISTS jobs_next ON jobs (next_at) WHERE next_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS civs (
    pk INTEGER PRIMARY KEY,
    socket TEXT NOT NULL,
    value TEXT,
    value_key TEXT,
    file TEXT,
    file_name TEXT,
    image TEXT,
    sha256 TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS civs_value ON civs (socket, value_key)
    WHERE value_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS civs_image ON civs (image) WHERE image IS NOT NULL;
-- A job's inputs and outputs. The image pk and a file flag are copied from the CIV so
-- that lookups by image or file use small partial indexes: a value-only job writes no
-- secondary index entry here (the hot path of the benchmark).
CREATE TABLE IF NOT EXISTS job_values (
    job TEXT NOT NULL,
    role TEXT NOT NULL,
    civ INTEGER NOT NULL,
    image TEXT,
    file INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, role, civ)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_values_image ON job_values (image, role) WHERE image IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_values_file ON job_values (civ) WHERE file = 1;
CREATE TABLE IF NOT EXISTS pending_inputs (
    job TEXT NOT NULL,
    socket TEXT NOT NULL,
    uploads TEXT NOT NULL,
    image_name TEXT
);
CREATE INDEX IF NOT EXISTS pending_job ON pending_inputs (job);
CREATE TABLE IF NOT EXISTS uploads (
    pk TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    created REAL NOT NULL,
    filename TEXT NOT NULL,
    s3_upload_id TEXT NOT NULL,
    status TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS uploads_user ON uploads (user, consumed, pk);
CREATE TABLE IF NOT EXISTS parts (
    upload TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified REAL NOT NULL,
    PRIMARY KEY (upload, number)
);
CREATE TABLE IF NOT EXISTS images (
    pk TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT,
    file_pk TEXT NOT NULL,
    file_name TEXT NOT NULL,
    path TEXT NOT NULL,
    meta TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_name ON images (name);
-- Running per-user counters: day -1 holds the number of active jobs, day N >= 0 the
-- credits spent on UTC day N. One small table, so a job POST dirties one page for both.
CREATE TABLE IF NOT EXISTS usage (
    user TEXT NOT NULL,
    day INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (user, day)
) WITHOUT ROWID;
"""


class StoreVersionError(RuntimeError):
    """The database file was made by an incompatible version of the sandbox."""


@dataclass(frozen=True)
class JobRow:
    seq: int
    pk: str
    user: str
    algorithm: str
    created: float
    status: str
    active: int
    next_at: float | None
    schedule: str
    outcome: str
    input_key: str | None
    cost: int
    exec_duration: float | None
    invoke_duration: float | None
    error: str | None
    outputs_pending: int = 0  # Succeeded, outputs not made yet (made when first looked at)


@dataclass(frozen=True)
class CivRow:
    pk: int
    socket: str
    value: str | None  # JSON text
    file: str | None  # storage-relative path of the file's bytes
    file_name: str | None
    image: str | None  # image pk
    sha256: str | None = None  # a file's content hash (kept so outputs need no re-read)


@dataclass(frozen=True)
class UploadRow:
    pk: str
    user: str
    created: float
    filename: str
    s3_upload_id: str
    status: str
    size: int
    consumed: int


@dataclass(frozen=True)
class PartRow:
    upload: str
    number: int
    etag: str
    size: int
    modified: float


@dataclass(frozen=True)
class ImageRow:
    pk: str
    name: str
    owner: str | None
    file_pk: str
    file_name: str
    path: str  # absolute, or relative to the storage folder
    meta: str  # JSON: width, height, depth, spacing, ...
    created: float


_JOB_COLS = (
    "seq, pk, user, algorithm, created, status, active, next_at, schedule, outcome, "
    "input_key, cost, exec_duration, invoke_duration, error, outputs_pending"
)
_CIV_COLS = "pk, socket, value, file, file_name, image, sha256"
_UPLOAD_COLS = "pk, user, created, filename, s3_upload_id, status, size, consumed"
_IMAGE_COLS = "pk, name, owner, file_pk, file_name, path, meta, created"


class Store:
    """SQLite state + on-disk bytes. Use :meth:`transaction` around every request."""

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
                self._check_version(db_path)
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                row = self.conn.execute("SELECT value FROM meta WHERE key='secret'").fetchone()
                if row is None:
                    self.conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('secret', ?)",
                        (secrets.token_hex(32),),
                    )
                    self.conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                    )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.secret: bytes = bytes.fromhex(
                self.conn.execute("SELECT value FROM meta WHERE key='secret'").fetchone()[0]
            )

    def _check_version(self, db_path: Path | None) -> None:
        has_meta = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if has_meta is None:
            return
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        found = None if row is None else str(row[0])
        if found != SCHEMA_VERSION:
            raise StoreVersionError(
                f"the sandbox database {db_path} was made by another version of gcbatch "
                f"(schema {found}, this one uses {SCHEMA_VERSION}); remove it or use another --db"
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

    # -- jobs ---------------------------------------------------------------------------

    def insert_job(
        self,
        *,
        pk: str,
        user: str,
        algorithm: str,
        created: float,
        next_at: float | None,
        schedule: str,
        outcome: str,
        input_key: str | None,
        cost: int,
    ) -> None:
        self.conn.execute(
            "INSERT INTO jobs (pk, user, algorithm, created, status, active, next_at, schedule,"
            " outcome, input_key, cost) VALUES (?, ?, ?, ?, 'Validating inputs', 1, ?, ?, ?, ?, ?)",
            (pk, user, algorithm, created, next_at, schedule, outcome, input_key, cost),
        )
        # Running counters keep the per-request admission checks O(1) however many jobs
        # a user has (the benchmark makes tens of thousands).
        self.conn.execute(
            "INSERT INTO usage (user, day, n) VALUES (?, -1, 1), (?, ?, ?) "
            "ON CONFLICT(user, day) DO UPDATE SET n = n + excluded.n",
            (user, user, int(created // 86400), cost),
        )

    def finish_job(self, pk: str, user: str, **fields: Any) -> None:
        """Move a job to a terminal status (it stops counting as active)."""
        self.update_job(pk, active=0, next_at=None, **fields)
        self.conn.execute("UPDATE usage SET n = n - 1 WHERE user=? AND day=-1", (user,))

    def job(self, pk: str) -> JobRow | None:
        row = self.conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE pk=?", (pk,)).fetchone()
        return None if row is None else JobRow(*row)

    def update_job(self, pk: str, **fields: Any) -> None:
        names = ", ".join(f"{name}=?" for name in fields)
        self.conn.execute(f"UPDATE jobs SET {names} WHERE pk=?", (*fields.values(), pk))

    def jobs_with_pending_outputs(self, user: str) -> list[JobRow]:
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE user=? AND outputs_pending=1", (user,)
        ).fetchall()
        return [JobRow(*r) for r in rows]

    def due_jobs(self, now: float) -> list[JobRow]:
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE next_at IS NOT NULL AND next_at <= ? "
            "ORDER BY next_at, seq",
            (now,),
        ).fetchall()
        return [JobRow(*r) for r in rows]

    def next_due(self) -> float | None:
        row = self.conn.execute(
            "SELECT MIN(next_at) FROM jobs WHERE next_at IS NOT NULL"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def any_due(self, now: float) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM jobs WHERE next_at IS NOT NULL AND next_at <= ? LIMIT 1", (now,)
        ).fetchone()
        return row is not None

    def admission(self, user: str, since: float) -> tuple[int, int]:
        """(active jobs, credits used since ``since``) in one round trip."""
        row = self.conn.execute(
            "SELECT (SELECT n FROM usage WHERE user=? AND day=-1), "
            "(SELECT COALESCE(SUM(n), 0) FROM usage WHERE user=? AND day>=?)",
            (user, user, int(since // 86400)),
        ).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def active_jobs(self, user: str) -> int:
        row = self.conn.execute("SELECT n FROM usage WHERE user=? AND day=-1", (user,)).fetchone()
        return 0 if row is None else int(row[0])

    def credits_used(self, user: str, since: float) -> int:
        """Credits spent from the UTC day of ``since`` on (a rolling month, to the day)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(n), 0) FROM usage WHERE user=? AND day>=?",
            (user, int(since // 86400)),
        ).fetchone()
        return int(row[0])

    def reset_credits(self, user: str | None) -> None:
        if user is None:
            self.conn.execute("DELETE FROM usage WHERE day>=0")
        else:
            self.conn.execute("DELETE FROM usage WHERE user=? AND day>=0", (user,))

    def duplicate_exists(self, algorithm: str, input_key: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM jobs WHERE algorithm=? AND input_key=? LIMIT 1", (algorithm, input_key)
        ).fetchone()
        return row is not None

    def list_jobs(
        self,
        user: str,
        *,
        algorithm: str | None,
        input_images: Sequence[str],
        output_image: str | None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[JobRow]]:
        where = ["user=?"]
        args: list[Any] = [user]
        if algorithm is not None:
            where.append("algorithm=?")
            args.append(algorithm)
        for image in input_images:
            where.append("pk IN (SELECT job FROM job_values WHERE image=? AND role='in')")
            args.append(image)
        if output_image is not None:
            where.append("pk IN (SELECT job FROM job_values WHERE image=? AND role='out')")
            args.append(output_image)
        clause = " AND ".join(where)
        count = int(
            self.conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {clause}", args).fetchone()[0]
        )
        rows = self.conn.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE {clause} ORDER BY seq LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return count, [JobRow(*r) for r in rows]

    def job_stats(self) -> list[tuple[str, int, int, int]]:
        """(user, jobs, active jobs, credits used ever) per user with jobs."""
        rows = self.conn.execute(
            "SELECT user, COUNT(*), SUM(active), SUM(cost) FROM jobs GROUP BY user"
        ).fetchall()
        return [(str(u), int(n), int(a or 0), int(c or 0)) for u, n, a, c in rows]

    def status_counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}

    # -- component interface values -------------------------------------------------------

    def value_civ(self, socket: str, value_json: str) -> int:
        """The pk of the value CIV for (socket, value), made if new (the platform reuses
        value CIVs, which is what makes its duplicate check work)."""
        row = self.conn.execute(
            "SELECT pk FROM civs WHERE socket=? AND value_key=?", (socket, value_json)
        ).fetchone()
        if row is not None:
            return int(row[0])
        cur = self.conn.execute(
            "INSERT INTO civs (socket, value, value_key) VALUES (?, ?, ?)",
            (socket, value_json, value_json),
        )
        return int(cur.lastrowid or 0)

    def insert_value_civ(self, socket: str, value_json: str) -> int:
        """A new value CIV (the caller knows there is none for this value yet)."""
        cur = self.conn.execute(
            "INSERT INTO civs (socket, value, value_key) VALUES (?, ?, ?)",
            (socket, value_json, value_json),
        )
        return int(cur.lastrowid or 0)

    def image_civ(self, socket: str, image: str) -> int:
        """The pk of the CIV holding ``image`` for ``socket``, made if new."""
        row = self.conn.execute(
            "SELECT pk FROM civs WHERE socket=? AND image=? ORDER BY pk LIMIT 1", (socket, image)
        ).fetchone()
        if row is not None:
            return int(row[0])
        cur = self.conn.execute("INSERT INTO civs (socket, image) VALUES (?, ?)", (socket, image))
        return int(cur.lastrowid or 0)

    def new_civ(
        self,
        socket: str,
        *,
        value_json: str | None = None,
        file: str | None = None,
        file_name: str | None = None,
        image: str | None = None,
        sha256: str | None = None,
    ) -> int:
        """A fresh CIV (outputs and files are never shared)."""
        cur = self.conn.execute(
            "INSERT INTO civs (socket, value, file, file_name, image, sha256)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (socket, value_json, file, file_name, image, sha256),
        )
        return int(cur.lastrowid or 0)

    def seed_civ(
        self,
        pk: int | None,
        socket: str,
        *,
        value_json: str | None = None,
        file: str | None = None,
        file_name: str | None = None,
        image: str | None = None,
    ) -> int:
        """Insert a seed CIV with a fixed pk (idempotent across restarts)."""
        if value_json is not None:
            existing = self.conn.execute(
                "SELECT pk FROM civs WHERE socket=? AND value_key=?", (socket, value_json)
            ).fetchone()
            if existing is not None:
                return int(existing[0])
        if pk is not None:
            row = self.conn.execute("SELECT pk FROM civs WHERE pk=?", (pk,)).fetchone()
            if row is not None:
                return pk
        cur = self.conn.execute(
            "INSERT INTO civs (pk, socket, value, value_key, file, file_name, image)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (pk, socket, value_json, value_json, file, file_name, image),
        )
        return int(cur.lastrowid or 0)

    def civ(self, pk: int) -> CivRow | None:
        row = self.conn.execute(f"SELECT {_CIV_COLS} FROM civs WHERE pk=?", (pk,)).fetchone()
        return None if row is None else CivRow(*row)

    def civs_by_file(self, file: str) -> CivRow | None:
        row = self.conn.execute(f"SELECT {_CIV_COLS} FROM civs WHERE file=?", (file,)).fetchone()
        return None if row is None else CivRow(*row)

    def attach(self, job: str, civs: Iterable[int], role: str) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO job_values (job, role, civ, image, file) "
            "SELECT ?, ?, pk, image, file IS NOT NULL FROM civs WHERE pk=?",
            [(job, role, civ) for civ in civs],
        )

    def job_civs(self, job: str, role: str) -> list[CivRow]:
        rows = self.conn.execute(
            f"SELECT {', '.join('c.' + c.strip() for c in _CIV_COLS.split(','))} "
            "FROM job_values jv JOIN civs c ON c.pk = jv.civ WHERE jv.job=? AND jv.role=? "
            "ORDER BY c.pk",
            (job, role),
        ).fetchall()
        return [CivRow(*r) for r in rows]

    def jobs_civs(self, jobs: Sequence[str]) -> dict[tuple[str, str], list[CivRow]]:
        """The inputs and outputs of many jobs in one query: {(job, role): [civ, ...]}."""
        out: dict[tuple[str, str], list[CivRow]] = {}
        if not jobs:
            return out
        marks = ",".join("?" for _ in jobs)
        rows = self.conn.execute(
            "SELECT jv.job, jv.role, c.pk, c.socket, c.value, c.file, c.file_name, c.image, c.sha256 "
            f"FROM job_values jv JOIN civs c ON c.pk = jv.civ WHERE jv.job IN ({marks}) "
            "ORDER BY c.pk",
            tuple(jobs),
        ).fetchall()
        for job, role, *civ in rows:
            out.setdefault((job, role), []).append(CivRow(*civ))
        return out

    def civ_jobs(self, civ: int) -> list[tuple[str, str]]:
        """(job pk, job user) of every job that has ``civ`` as input or output."""
        rows = self.conn.execute(
            "SELECT j.pk, j.user FROM job_values jv JOIN jobs j ON j.pk = jv.job "
            "WHERE jv.civ=? AND jv.file=1",
            (civ,),
        ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def add_pending(
        self, job: str, socket: str, uploads: Sequence[str], image_name: str | None
    ) -> None:
        self.conn.execute(
            "INSERT INTO pending_inputs (job, socket, uploads, image_name) VALUES (?, ?, ?, ?)",
            (job, socket, json.dumps(list(uploads)), image_name),
        )

    def pending(self, job: str) -> list[tuple[str, list[str], str | None]]:
        rows = self.conn.execute(
            "SELECT socket, uploads, image_name FROM pending_inputs WHERE job=? ORDER BY rowid",
            (job,),
        ).fetchall()
        return [(str(s), list(json.loads(u)), n) for s, u, n in rows]

    def clear_pending(self, job: str) -> None:
        self.conn.execute("DELETE FROM pending_inputs WHERE job=?", (job,))

    # -- uploads ------------------------------------------------------------------------

    def insert_upload(self, pk: str, user: str, created: float, filename: str, s3_id: str) -> None:
        self.conn.execute(
            "INSERT INTO uploads (pk, user, created, filename, s3_upload_id, status)"
            " VALUES (?, ?, ?, ?, ?, 'Initialized')",
            (pk, user, created, filename, s3_id),
        )

    def upload(self, pk: str) -> UploadRow | None:
        row = self.conn.execute(f"SELECT {_UPLOAD_COLS} FROM uploads WHERE pk=?", (pk,)).fetchone()
        return None if row is None else UploadRow(*row)

    def update_upload(self, pk: str, **fields: Any) -> None:
        names = ", ".join(f"{name}=?" for name in fields)
        self.conn.execute(f"UPDATE uploads SET {names} WHERE pk=?", (*fields.values(), pk))

    def live_uploads(
        self, user: str, since: float, limit: int, offset: int
    ) -> tuple[int, list[UploadRow]]:
        count = int(
            self.conn.execute(
                "SELECT COUNT(*) FROM uploads WHERE user=? AND consumed=0 AND created>=?",
                (user, since),
            ).fetchone()[0]
        )
        rows = self.conn.execute(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE user=? AND consumed=0 AND created>=? "
            "ORDER BY pk LIMIT ? OFFSET ?",
            (user, since, limit, offset),
        ).fetchall()
        return count, [UploadRow(*r) for r in rows]

    def live_upload_count(self, user: str, since: float) -> int:
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM uploads WHERE user=? AND consumed=0 AND created>=?",
                (user, since),
            ).fetchone()[0]
        )

    def live_upload_bytes(self, user: str, since: float) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(SUM(u.size), 0) + COALESCE((SELECT SUM(p.size) FROM parts p JOIN "
            "uploads v ON v.pk = p.upload WHERE v.user=? AND v.consumed=0 AND v.created>=?), 0) "
            "FROM uploads u WHERE u.user=? AND u.consumed=0 AND u.created>=?",
            (user, since, user, since),
        ).fetchone()
        return int(row[0])

    def upload_stats(self) -> list[tuple[str, int, int]]:
        """(user, live uploads, all uploads ever) per user with uploads."""
        rows = self.conn.execute(
            "SELECT user, SUM(CASE WHEN consumed=0 THEN 1 ELSE 0 END), COUNT(*) FROM uploads "
            "GROUP BY user"
        ).fetchall()
        return [(str(u), int(a or 0), int(n)) for u, a, n in rows]

    def put_part(self, upload: str, number: int, etag: str, size: int, modified: float) -> None:
        self.conn.execute(
            "INSERT INTO parts (upload, number, etag, size, modified) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(upload, number) DO UPDATE SET etag=excluded.etag, size=excluded.size, "
            "modified=excluded.modified",
            (upload, number, etag, size, modified),
        )

    def parts(self, upload: str) -> list[PartRow]:
        rows = self.conn.execute(
            "SELECT upload, number, etag, size, modified FROM parts WHERE upload=? ORDER BY number",
            (upload,),
        ).fetchall()
        return [PartRow(*r) for r in rows]

    def delete_parts(self, upload: str) -> None:
        self.conn.execute("DELETE FROM parts WHERE upload=?", (upload,))

    # -- images -------------------------------------------------------------------------

    def insert_image(
        self,
        *,
        pk: str,
        name: str,
        owner: str | None,
        file_pk: str,
        file_name: str,
        path: str,
        meta: str,
        created: float,
    ) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO images (pk, name, owner, file_pk, file_name, path, meta, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (pk, name, owner, file_pk, file_name, path, meta, created),
        )

    def image(self, pk: str) -> ImageRow | None:
        row = self.conn.execute(f"SELECT {_IMAGE_COLS} FROM images WHERE pk=?", (pk,)).fetchone()
        return None if row is None else ImageRow(*row)

    def image_by_file(self, file_pk: str) -> ImageRow | None:
        row = self.conn.execute(
            f"SELECT {_IMAGE_COLS} FROM images WHERE file_pk=?", (file_pk,)
        ).fetchone()
        return None if row is None else ImageRow(*row)

    def images(
        self, where: str, args: Sequence[Any], limit: int, offset: int
    ) -> tuple[int, list[ImageRow]]:
        count = int(
            self.conn.execute(f"SELECT COUNT(*) FROM images WHERE {where}", args).fetchone()[0]
        )
        rows = self.conn.execute(
            f"SELECT {_IMAGE_COLS} FROM images WHERE {where} ORDER BY pk LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
        return count, [ImageRow(*r) for r in rows]

    def image_visible_to_user(self, image: str, user: str) -> bool:
        """True when one of ``user``'s jobs has ``image`` as input or output."""
        row = self.conn.execute(
            "SELECT 1 FROM job_values jv JOIN jobs j ON j.pk = jv.job "
            "WHERE jv.image=? AND j.user=? LIMIT 1",
            (image, user),
        ).fetchone()
        return row is not None

    # -- files on disk --------------------------------------------------------------------

    def path(self, relative: str) -> Path:
        """The absolute path of a stored object (``relative`` may already be absolute)."""
        p = Path(relative)
        return p if p.is_absolute() else self.storage / p

    def write_bytes(self, relative: str, data: bytes) -> Path:
        target = self.storage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        with tmp.open("wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        return target

    def remove_tree(self, relative: str) -> None:
        shutil.rmtree(self.storage / relative, ignore_errors=True)
