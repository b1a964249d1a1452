"""The sandbox's state: one SQLite database (WAL) plus a folder of stored bytes beside it.

Why SQLite: state must outlive a process (two CLI runs against the same ``--db`` see the
same jobs), many server threads write at once, and tests inspect it.

Only this package speaks SQL. It is split by concept — the connection and its group
commit (``database``), the tables (``schema``), their rows (``rows``), one module of
queries per family of tables (``jobs``, ``values``, ``uploads``, ``images``) and the
bytes on disk (``files``) — but the app holds one :class:`Store`: a request touches
several tables inside one transaction on one connection, so the parts are mixed into
one object rather than handed around separately.
"""

from __future__ import annotations

from gcbatch.sandbox.store.database import GROUP_COMMIT_MAX, GROUP_COMMIT_WAIT, Database
from gcbatch.sandbox.store.files import FileStore
from gcbatch.sandbox.store.images import ImageQueries
from gcbatch.sandbox.store.jobs import JobQueries, input_key
from gcbatch.sandbox.store.rows import CivRow, ImageRow, JobRow, PartRow, UploadRow
from gcbatch.sandbox.store.schema import SCHEMA_VERSION, StoreVersionError
from gcbatch.sandbox.store.uploads import UploadQueries
from gcbatch.sandbox.store.values import ValueQueries

__all__ = [
    "GROUP_COMMIT_MAX",
    "GROUP_COMMIT_WAIT",
    "SCHEMA_VERSION",
    "CivRow",
    "ImageRow",
    "JobRow",
    "PartRow",
    "Store",
    "StoreVersionError",
    "UploadRow",
    "input_key",
]


class Store(Database, JobQueries, ValueQueries, UploadQueries, ImageQueries, FileStore):
    """SQLite state + on-disk bytes. Use :meth:`transaction` around every request."""
