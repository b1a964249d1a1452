"""The wording of ``gcbatch sandbox inspect``: a sandbox's stats and request log as
aligned tables that fit a terminal (a presigned URL's query string is cut short; the
JSON output keeps it whole)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_stats", "request_rows", "table"]


def render_stats(stats: Any) -> str:
    """Stats as aligned ``key  value`` lines; a list of per-user rows as a table."""
    if not isinstance(stats, Mapping):
        return json.dumps(stats, indent=2)
    lines: list[str] = []
    for key, value in stats.items():
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{key}:")
            lines.append(table([dict(v) for v in value]))
        elif (
            isinstance(value, Mapping)
            and value
            and all(isinstance(v, Mapping) for v in value.values())
        ):
            lines.append(f"{key}:")
            lines.append(table([{"": k, **dict(v)} for k, v in value.items()]))
        elif isinstance(value, Mapping):
            inner = ", ".join(f"{k}={v}" for k, v in value.items())
            lines.append(f"{key}: {inner or '-'}")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def request_rows(requests: Any) -> list[dict[str, Any]]:
    if isinstance(requests, Mapping):
        for key in ("requests", "results"):
            if isinstance(requests.get(key), list):
                requests = requests[key]
                break
    if not isinstance(requests, list):
        return []
    rows = []
    for entry in requests:
        if not isinstance(entry, Mapping):
            continue
        row = dict(entry)
        if isinstance(row.get("query"), str) and len(row["query"]) > 40:
            # a presigned URL's signature makes a row hundreds of characters wide
            row["query"] = row["query"][:37] + "..."
        stamp = row.get("time")
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            row["time"] = time.strftime("%H:%M:%S", time.localtime(stamp)) + (
                f".{int(stamp % 1 * 1000):03d}"
            )
        rows.append(row)
    return rows


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "  (none)"
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in columns and not isinstance(value, (dict, list)):
                columns.append(key)
    cells = [["-" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    out = ["  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for r in cells:
        out.append("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    return "\n".join(line.rstrip() for line in out)
