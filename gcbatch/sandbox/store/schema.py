"""The sandbox database's tables, and the version stamp that guards them.

A database file outlives the process that made it (``--db``), so a newer gcbatch may meet
a file an older one wrote. ``SCHEMA_VERSION`` is stored in it the first time; a file with
another stamp is refused with a message rather than misread.
"""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

SCHEMA_VERSION = "3"

DDL = """
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


def prepare(conn: sqlite3.Connection, db_path: Path | None) -> None:
    """Check the stamp of an existing file, create what is missing, stamp a new file and
    give it its signing secret. Runs inside the caller's transaction."""
    _check_version(conn, db_path)
    for statement in DDL.split(";"):
        if statement.strip():
            conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key='secret'").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('secret', ?)",
            (secrets.token_hex(32),),
        )
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))


def _check_version(conn: sqlite3.Connection, db_path: Path | None) -> None:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    if has_meta is None:
        return
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    found = None if row is None else str(row[0])
    if found != SCHEMA_VERSION:
        raise StoreVersionError(
            f"the sandbox database {db_path} was made by another version of gcbatch "
            f"(schema {found}, this one uses {SCHEMA_VERSION}); remove it or use another --db"
        )
