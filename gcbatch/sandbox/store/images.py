"""Images: seeded ones, those made from uploads, and those jobs output."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from gcbatch.sandbox.store.rows import IMAGE_COLS, ImageRow


class ImageQueries:
    """The ``images`` table (a part of the store)."""

    conn: sqlite3.Connection

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
        row = self.conn.execute(f"SELECT {IMAGE_COLS} FROM images WHERE pk=?", (pk,)).fetchone()
        return None if row is None else ImageRow(*row)

    def images(
        self, where: str, args: Sequence[Any], limit: int, offset: int
    ) -> tuple[int, list[ImageRow]]:
        count = int(
            self.conn.execute(f"SELECT COUNT(*) FROM images WHERE {where}", args).fetchone()[0]
        )
        rows = self.conn.execute(
            f"SELECT {IMAGE_COLS} FROM images WHERE {where} ORDER BY pk LIMIT ? OFFSET ?",
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
