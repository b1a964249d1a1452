"""``gcbatch sandbox seed``: a world for ``--sandbox`` derived from a manifest.

``--sandbox`` runs in the world of ``sandbox-seed.yaml`` beside the manifest; this writes
that file (and the small images its archives need) from the manifest's sockets, the
derivation itself being :func:`gcbatch.operations.sandbox_seed.derive_seed`.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcbatch.errors import ConfigError
from gcbatch.files import refuse_link

__all__ = ["seed_command"]

SEED_FORMAT = """\b
sandbox-seed.yaml (all keys but the slugs optional):
  users:      [{name: demo, token: demo-token}]
  sockets:    [{slug: age, kind: Integer},
               {slug: ct, kind: Image},
               {slug: report, kind: Anything, super_kind: File,
                relative_path: report.json}]
  algorithms: [{slug: my-algorithm,
                interfaces: [{inputs: [ct, age], outputs: [report]}]}]
  archives:   [{slug: my-archive, items: [{values: {ct: {image: a.mha},
                                                    age: {value: 61}}}]}]
  config:     {max_active_jobs: 16, credits_per_month: 1000}
Kinds: Integer, Float, String, Bool, Anything, Image, Segmentation, Heat Map,
PDF file, CSV file, ZIP file, ... (gcbatch/sandbox/seed.py lists them all)."""


@click.command("seed", epilog=SEED_FORMAT)
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing sandbox-seed.yaml.")
def seed_command(manifest: Path, force: bool) -> None:
    """Write a sandbox world for MANIFEST's algorithm: sandbox-seed.yaml beside it.

    \b
    --sandbox uses sandbox-seed.yaml beside the manifest when it exists (else the
    built-in world, which knows only lung-nodule-detector and risk-calculator). This
    derives one from the manifest: its algorithm with one interface per set of inputs
    the cases use, a socket per input (kind read from the sources: values by JSON type,
    files by extension), an archive with 3 items per `foreach: {archive: ...}`.
    Edit the file freely; then:

    \b
      gcbatch plan MANIFEST --sandbox
      gcbatch apply MANIFEST --sandbox
    """
    import yaml

    from gcbatch.operations.sandbox_seed import derive_seed
    from gcbatch.operations.session import SANDBOX_SEED
    from gcbatch.sandbox.lifecycle import make_mha
    from gcbatch.sandbox.seed import SeedError, load_seed

    target = manifest.parent / SANDBOX_SEED
    refuse_link(target, "sandbox world")
    if target.exists() and not force:
        raise ConfigError(f"{target} exists; keep it, or replace it with --force")
    derived = derive_seed(manifest)
    header = (
        f"# The sandbox world for {manifest.name} (gcbatch --sandbox reads this file),\n"
        f"# derived by `gcbatch sandbox seed {manifest.name}`. Edit freely; the format is\n"
        "# in `gcbatch sandbox seed --help`. Tokens here are test data, not secrets.\n"
    )
    for i, relative in enumerate(derived.images):
        path = manifest.parent / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make_mha(8, 8, bytes((i * 29 + k) % 256 for k in range(128)), depth=2))
    target.write_text(header + yaml.safe_dump(derived.seed, sort_keys=False), encoding="utf-8")
    try:
        world = load_seed(target)
    except SeedError as exc:  # a derivation bug: say so rather than leave a broken world
        raise ConfigError(f"the derived world is not valid ({exc}); please report it") from None
    alg = world.algorithms[0]
    click.echo(f"wrote {target}: algorithm {alg.slug} ({len(alg.interfaces)} interface(s)), "
               f"{len(world.sockets)} socket(s), {len(world.archives)} archive(s)")
    for note in derived.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"next: gcbatch plan {manifest} --sandbox")
