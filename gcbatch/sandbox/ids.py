"""Identifiers: recognising the uuids clients send, and making job and image pks."""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)


def is_uuid(text: str) -> bool:
    """True for the forms Django's UUID path converter and filters accept."""
    return bool(_UUID_RE.match(text))


def norm_uuid(text: str) -> str:
    """The canonical (lower-case, dashed) form, as pks are stored."""
    return str(uuid.UUID(text))


class OrderedIds:
    """Makes version-4-shaped uuids whose first 48 bits grow with time.

    Clients cannot tell them from random uuid4s (the platform promises nothing about
    its pks but uniqueness), and time-ordered keys keep the B-tree pages SQLite must
    write per job few — it is most of the cost of a job POST. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_stamp = 0

    def new(self) -> str:
        # Wall-clock milliseconds rather than the app's clock: the order only has to
        # help SQLite, and a test's fake clock may stand still (+1 keeps keys distinct).
        with self._lock:
            stamp = max(int(time.time() * 1000), self._last_stamp + 1)
            self._last_stamp = stamp
        rand = int.from_bytes(secrets.token_bytes(10), "big")
        value = (stamp & ((1 << 48) - 1)) << 80 | rand
        value = (value & ~(0xF << 76)) | (0x4 << 76)  # version 4
        value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
        return str(uuid.UUID(int=value))
