"""Human text for ``gcbatch init`` and ``gcbatch schema``: what was written, what next.

Kept apart from :mod:`gcbatch.views.text` (the results of a study's commands) because
these two come before any study exists. Functions return text; they never print.
"""

from __future__ import annotations

from typing import Any

from gcbatch.operations.init import InitResult
from gcbatch.operations.schema import SchemaResult

__all__ = ["init_json", "render_init", "render_schema", "schema_json"]


def _interfaces(n: int) -> str:
    return f"{n} interface{'s' if n != 1 else ''}"


def render_init(result: InitResult) -> str:
    """Two files written, what to fill in (file:line), the commands that come next."""
    alg = result.algorithm
    title = f" ({alg.title})" if alg.title else ""
    manifest, schema = result.manifest, result.schema
    lines = [
        f"wrote {manifest}: a starting manifest for {alg.slug}{title}, "
        f"{_interfaces(len(alg.interfaces))}, interface {result.starter.live} live",
        (f"wrote {schema}" if result.schema_written else f"kept {schema} (the same schema)")
        + ": its JSON Schema, which the manifest's first line points your editor at",
    ]
    if result.starter.fill_ins:
        lines += ["", "fill in:"]
        width = max(len(f.socket) for f in result.starter.fill_ins)
        for fill in result.starter.fill_ins:
            lines.append(f"  {manifest}:{fill.line}  {fill.socket.ljust(width)}  {fill.what}")
    flags = "".join(f" {flag}" for flag in result.connect_flags)
    commands = [(f"gcbatch validate {manifest}", "offline: every problem at once"),
                (f"gcbatch plan {manifest}{flags}",
                 "what apply would do, checked against the algorithm")]
    width = max(len(command) for command, _ in commands)
    lines += ["", "then:"]
    lines += [f"  {command.ljust(width)}   ({why})" for command, why in commands]
    return "\n".join(lines)


def init_json(result: InitResult) -> dict[str, Any]:
    flags = "".join(f" {flag}" for flag in result.connect_flags)
    return {
        "manifest": str(result.manifest),
        "schema": str(result.schema),
        "schema_written": result.schema_written,
        "algorithm": result.algorithm.slug,
        "server": result.server,
        "interfaces": len(result.algorithm.interfaces),
        "live_interface": result.starter.live,
        "fill_in": [{"line": f.line, "socket": f.socket, "what": f.what}
                    for f in result.starter.fill_ins],
        "next": [f"gcbatch validate {result.manifest}",
                 f"gcbatch plan {result.manifest}{flags}"],
    }


def render_schema(result: SchemaResult) -> str:
    """What was written and the two ways to use it (a path is shown as given)."""
    alg = result.algorithm
    sockets = len(alg.input_sockets())
    verb = "wrote" if result.changed else "kept (unchanged)"
    name = result.path.name if result.path is not None else "SCHEMA"
    return "\n".join([
        f"{verb} {result.path}: the manifest schema of {alg.slug} "
        f"({_interfaces(len(alg.interfaces))}, {sockets} input socket"
        f"{'s' if sockets != 1 else ''})",
        "editors use it through a manifest's first line (path relative to the manifest):",
        f"  # yaml-language-server: $schema={name}",
        "and check-jsonschema on the command line:",
        f"  check-jsonschema --schemafile {result.path} study.yaml",
    ])


def schema_json(result: SchemaResult) -> dict[str, Any]:
    return {
        "schema": None if result.path is None else str(result.path),
        "written": result.changed,
        "algorithm": result.algorithm.slug,
        "server": result.server,
        "interfaces": len(result.algorithm.interfaces),
    }
