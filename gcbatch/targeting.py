"""Which cases a command acts on: the value behind ``--case`` and ``--select``."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from gcbatch.errors import ConfigError
from gcbatch.suggest import did_you_mean

__all__ = ["Targeting"]


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

    @property
    def everything(self) -> bool:
        return not self.case_ids and not self.select

    def matches(self, case_id: str) -> bool:
        if self.everything:
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
        return " ".join(parts)
