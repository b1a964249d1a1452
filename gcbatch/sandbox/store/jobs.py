"""Jobs, and the per-user running counters that make admission checks O(1).

The ``usage`` table keeps, per user, day -1 = the number of active jobs and day N >= 0 =
the credits spent on UTC day N; a job insert or finish updates it in the same
statement batch, so a job POST reads two small rows instead of counting a user's jobs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from gcbatch.sandbox.store.rows import JOB_COLS, JobRow


def input_key(civs: Iterable[int]) -> str:
    """The duplicate-check key of a job: its input values' pks, sorted.

    Zero-padded so that keys of new values sort after old ones: the index grows at its
    end instead of dirtying a random page per job."""
    return ",".join(f"{c:012d}" for c in sorted(civs))


class JobQueries:
    """The ``jobs`` and ``usage`` tables (a part of :class:`~gcbatch.sandbox.store.Store`)."""

    conn: sqlite3.Connection

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

    def insert_history(self, pks: Sequence[str], *, user: str, algorithm: str,
                       created: float, status: str = "Succeeded") -> None:
        """Ended jobs with no inputs or outputs, in one statement: an account's long
        history (the real application's list holds every job ever made, oldest first).
        They never count as active and never run."""
        self.conn.executemany(
            "INSERT INTO jobs (pk, user, algorithm, created, status, active, next_at, schedule,"
            " outcome, input_key, cost) VALUES (?, ?, ?, ?, ?, 0, NULL, '0,0,0,0,0', ?, NULL, 0)",
            [(pk, user, algorithm, created + i * 1e-3, status, status)
             for i, pk in enumerate(pks)],
        )

    def finish_job(self, pk: str, user: str, **fields: Any) -> None:
        """Move a job to a terminal status (it stops counting as active)."""
        self.update_job(pk, active=0, next_at=None, **fields)
        self.conn.execute("UPDATE usage SET n = n - 1 WHERE user=? AND day=-1", (user,))

    def job(self, pk: str) -> JobRow | None:
        row = self.conn.execute(f"SELECT {JOB_COLS} FROM jobs WHERE pk=?", (pk,)).fetchone()
        return None if row is None else JobRow(*row)

    def update_job(self, pk: str, **fields: Any) -> None:
        names = ", ".join(f"{name}=?" for name in fields)
        self.conn.execute(f"UPDATE jobs SET {names} WHERE pk=?", (*fields.values(), pk))

    def jobs_with_pending_outputs(self, user: str) -> list[JobRow]:
        rows = self.conn.execute(
            f"SELECT {JOB_COLS} FROM jobs WHERE user=? AND outputs_pending=1", (user,)
        ).fetchall()
        return [JobRow(*r) for r in rows]

    def due_jobs(self, now: float) -> list[JobRow]:
        rows = self.conn.execute(
            f"SELECT {JOB_COLS} FROM jobs WHERE next_at IS NOT NULL AND next_at <= ? "
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

    def active_created_after(self, user: str, after: float) -> int:
        """The user's active jobs created after ``after`` (what an unlocked check, begun
        at ``after``, cannot see yet). Scans the user's newest jobs only."""
        row = self.conn.execute(
            "SELECT COUNT(*) FROM (SELECT created, active FROM jobs WHERE user=? "
            "ORDER BY seq DESC LIMIT 10000) WHERE active=1 AND created>?",
            (user, after),
        ).fetchone()
        return int(row[0])

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
            f"SELECT {JOB_COLS} FROM jobs WHERE {clause} ORDER BY seq LIMIT ? OFFSET ?",
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

    def succeeded_durations(self, algorithm: str) -> tuple[float, int]:
        """(sum of compute seconds, number) of ``algorithm``'s succeeded jobs that used
        any: the platform averages its jobs' utilisation over successes with a duration
        above zero (``ComponentJobUtilizationManager.average_duration``)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(invoke_duration), 0), COUNT(*) FROM jobs "
            "WHERE algorithm=? AND status='Succeeded' AND invoke_duration > 0",
            (algorithm,),
        ).fetchone()
        return float(row[0]), int(row[1])
