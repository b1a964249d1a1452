"""A problem of a case: one reason it cannot be submitted as it is (pre-flight's findings,
the readiness probe's, DICOM's), with how it is shown to a person and to a script."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """One reason a case cannot be submitted as it is. ``socket`` is "" for case-level."""

    case: str
    socket: str
    message: str

    def render(self) -> str:
        where = f"case {self.case}" if self.case else "algorithm"
        if self.socket:
            where += f", socket {self.socket}"
        return f"{where}: {self.message}"

    def as_json(self) -> dict[str, str]:
        return {"case": self.case, "socket": self.socket, "message": self.message}
