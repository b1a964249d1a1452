"""User uploads and the parts of their multipart uploads.

An upload is live until it is consumed by a job or a day old (``since`` in the queries:
the caller passes now minus the expiry); limits count live uploads only.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gcbatch.sandbox.store.rows import UPLOAD_COLS, PartRow, UploadRow


class UploadQueries:
    """The ``uploads`` and ``parts`` tables (a part of the store)."""

    conn: sqlite3.Connection

    def insert_upload(self, pk: str, user: str, created: float, filename: str, s3_id: str) -> None:
        self.conn.execute(
            "INSERT INTO uploads (pk, user, created, filename, s3_upload_id, status)"
            " VALUES (?, ?, ?, ?, ?, 'Initialized')",
            (pk, user, created, filename, s3_id),
        )

    def upload(self, pk: str) -> UploadRow | None:
        row = self.conn.execute(f"SELECT {UPLOAD_COLS} FROM uploads WHERE pk=?", (pk,)).fetchone()
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
            f"SELECT {UPLOAD_COLS} FROM uploads WHERE user=? AND consumed=0 AND created>=? "
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

    def uploads_created_after(self, user: str, since: float, after: float) -> int:
        """The user's live uploads created after ``after`` (unseen by an unlocked check)."""
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM uploads WHERE user=? AND consumed=0 AND created>=? "
                "AND created>?",
                (user, since, after),
            ).fetchone()[0]
        )

    def completed_upload_bytes(self, user: str, since: float) -> int:
        """Bytes of the user's completed, unused uploads: the objects in storage under
        the user's prefix, which the platform's size quota adds up."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM uploads WHERE user=? AND consumed=0 "
            "AND created>=? AND status='Completed'",
            (user, since),
        ).fetchone()
        return int(row[0])

    def pending_bytes(self, upload: str) -> int:
        """Bytes of the parts an upload holds so far (S3's list-parts, added up)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(size), 0) FROM parts WHERE upload=?", (upload,)
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
