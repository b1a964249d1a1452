"""Which cases a command acts on: the values behind ``--case``, ``--select`` and ``--shard``."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

from gcbatch.errors import ConfigError
from gcbatch.suggest import did_you_mean

__all__ = ["MAX_SHARDS", "Shard", "Targeting", "parse_shard"]

#: more shards than this is a typo, not a cluster
MAX_SHARDS = 10_000
_SHARD_RE = re.compile(r"^\s*(\d{1,6})\s*/\s*(\d{1,6})\s*$")


@dataclass(frozen=True)
class Shard:
    """``--shard I/N``: the cases whose id hashes to ``I`` modulo ``N`` (``0 <= I < N``).

    The hash is the first 8 bytes of the sha256 of the case id (UTF-8), so a case's shard
    depends on its id and ``N`` alone: the same on every host and Python (no
    ``PYTHONHASHSEED``), and adding or removing cases never moves another case.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 0 <= self.index < self.count:
            raise ConfigError(f"--shard {self.index}/{self.count}: I/N needs 0 <= I < N and "
                              f"1 <= N <= {MAX_SHARDS} (e.g. --shard 0/4 ... --shard 3/4)")

    def contains(self, case_id: str) -> bool:
        return shard_of(case_id, self.count) == self.index

    @property
    def label(self) -> str:
        """``shard-0-of-4``: how the shard's files are named."""
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(case_id: str, count: int) -> int:
    """The shard (``0 <= shard < count``) of ``case_id`` among ``count``."""
    digest = hashlib.sha256(case_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"2/4"`` → ``Shard(2, 4)``; anything else is a :class:`ConfigError` (exit 2)."""
    match = _SHARD_RE.match(text)
    if match is None:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4 "
                          "(shard I of N, counted from 0)")
    return Shard(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class Targeting:
    """Which cases a command acts on: ``--case ID`` (repeatable) and ``--select GLOB``.

    No flag → every case. Otherwise a case is targeted when its id is one of ``case_ids``
    or matches one of the ``select`` globs (``fnmatch`` rules, case-sensitive: ``*``,
    ``?``, ``[abc]``). A ``--case`` id that the manifest does not have is an error
    (:meth:`check_known`): a typo must not silently target nothing.
    """

    case_ids: tuple[str, ...] = ()
    select: tuple[str, ...] = ()
    #: ``--shard I/N``: only the shard's cases (with ``--case``/``--select``: both apply)
    shard: Shard | None = None

    @property
    def everything(self) -> bool:
        return not self.case_ids and not self.select and self.shard is None

    def within(self, shard: Shard | None) -> Targeting:
        """This targeting limited to ``shard`` (None: unchanged)."""
        return self if shard is None else replace(self, shard=shard)

    def matches(self, case_id: str) -> bool:
        if self.everything:
            return True
        if self.shard is not None and not self.shard.contains(case_id):
            return False
        if not self.case_ids and not self.select:
            return True
        if case_id in self.case_ids:
            return True
        return any(fnmatch.fnmatchcase(case_id, pattern) for pattern in self.select)

    def filter(self, case_ids: Iterable[str]) -> list[str]:
        """The targeted ids among ``case_ids``, in the given order."""
        return [cid for cid in case_ids if self.matches(cid)]

    def check_known(self, known: Iterable[str]) -> None:
        """ConfigError (exit 2) naming every ``--case`` id not in ``known``."""
        known_set = set(known)
        missing = [cid for cid in self.case_ids if cid not in known_set]
        shard = self.shard
        elsewhere = [cid for cid in missing if shard is not None and not shard.contains(cid)]
        if elsewhere and shard is not None:
            where = ", ".join(f"{cid!r} in shard {shard_of(cid, shard.count)}/{shard.count}"
                              for cid in elsewhere)
            raise ConfigError(f"--case: not in shard {shard} ({where}, if the manifest has "
                              "it); use that shard's --shard, or none")
        if missing:
            listed = ", ".join(repr(m) for m in missing)
            hints = "".join(did_you_mean(m, known_set, quote="'") for m in missing[:5])
            raise ConfigError(
                f"--case {listed}: no such case in the manifest{hints} (check the id; "
                "`gcbatch plan` lists every case)"
            )

    def describe(self) -> str:
        """Human text for messages: ``"all cases"`` or the flags as given."""
        if self.everything:
            return "all cases"
        parts = [f"--case {c}" for c in self.case_ids] + [f"--select {s}" for s in self.select]
        if self.shard is not None:
            parts.append(f"--shard {self.shard}")
        return " ".join(parts)
