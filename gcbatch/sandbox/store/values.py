"""Component interface values (CIVs), which jobs use them, and inputs still uploading.

A CIV is one socket's value: JSON, a file or an image. Value CIVs are shared (the same
(socket, value) is one row, which is what makes the platform's duplicate check work);
files and outputs are never shared. ``job_values`` links jobs to their inputs and
outputs; ``pending_inputs`` holds the uploads a job will turn into inputs when its
validation ends.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from gcbatch.sandbox.store.rows import CIV_COLS, CivRow


class ValueQueries:
    """The ``civs``, ``job_values`` and ``pending_inputs`` tables (a part of the store)."""

    conn: sqlite3.Connection

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
        row = self.conn.execute(f"SELECT {CIV_COLS} FROM civs WHERE pk=?", (pk,)).fetchone()
        return None if row is None else CivRow(*row)

    def find_value_civ(self, socket: str, value_json: str) -> int | None:
        """The pk of the value CIV for (socket, canonical JSON), if there is one."""
        row = self.conn.execute(
            "SELECT pk FROM civs WHERE socket=? AND value_key=?", (socket, value_json)
        ).fetchone()
        return None if row is None else int(row[0])

    def find_image_civ(self, socket: str, image: str) -> int | None:
        """The pk of the first CIV holding ``image`` for ``socket``, if there is one."""
        row = self.conn.execute(
            "SELECT pk FROM civs WHERE socket=? AND image=? ORDER BY pk LIMIT 1", (socket, image)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_civ_file(self, pk: int, file: str) -> None:
        """Record where a file CIV's bytes are (written after the row, named by its pk)."""
        self.conn.execute("UPDATE civs SET file=? WHERE pk=?", (file, pk))

    def attach(self, job: str, civs: Iterable[int], role: str) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO job_values (job, role, civ, image, file) "
            "SELECT ?, ?, pk, image, file IS NOT NULL FROM civs WHERE pk=?",
            [(job, role, civ) for civ in civs],
        )

    def job_civs(self, job: str, role: str) -> list[CivRow]:
        rows = self.conn.execute(
            f"SELECT {', '.join('c.' + c.strip() for c in CIV_COLS.split(','))} "
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
