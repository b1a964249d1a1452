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

    def list_images(
        self,
        user: str,
        seed_pks: Sequence[str],
        *,
        name: str | None,
        job_inputs: Sequence[str],
        job_outputs: Sequence[str],
        among: Sequence[str] | None,
        limit: int,
        offset: int,
        dicom: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, list[ImageRow]]:
        """(count, one page) of the images ``user`` owns or may see as ``seed_pks``,
        filtered by name, by the jobs that took or made them (any of them), and to
        ``among`` (None: no such filter), ordered by name as the platform's
        ``Image.Meta.ordering`` says (pk breaks ties, which Postgres leaves open)."""
        marks = ",".join("?" for _ in seed_pks) or "NULL"
        where = [f"(owner=? OR pk IN ({marks}))"]
        args: list[Any] = [user, *seed_pks]
        if name:
            where.append("name=?")
            args.append(name)
        for role, jobs in (("in", job_inputs), ("out", job_outputs)):
            if jobs:
                marks = ",".join("?" for _ in jobs)
                where.append(
                    "pk IN (SELECT image FROM job_values "
                    f"WHERE role='{role}' AND image IS NOT NULL AND job IN ({marks}))"
                )
                args.extend(jobs)
        for key, value in dicom:  # study_instance_uid / series_instance_uid
            where.append(f"json_extract(meta, '$.dicom.{key}')=?")
            args.append(value)
        if among is not None:
            marks = ",".join("?" for _ in among) or "NULL"
            where.append(f"pk IN ({marks})")
            args.extend(among)
        clause = " AND ".join(where)
        count = int(
            self.conn.execute(f"SELECT COUNT(*) FROM images WHERE {clause}", args).fetchone()[0]
        )
        rows = self.conn.execute(
            f"SELECT {IMAGE_COLS} FROM images WHERE {clause} ORDER BY name, pk LIMIT ? OFFSET ?",
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
