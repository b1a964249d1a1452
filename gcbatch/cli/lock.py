"""``gcbatch lock merge|rebuild|move``: the lockfile's recovery and scale-out tools.

Thin: flags → one operation (:mod:`gcbatch.operations.lock_merge`, ``lock_rebuild``,
``lock_move``) → text or JSON (:mod:`gcbatch.views.lock`) → exit code.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from gcbatch.cli.common import ConnectionOptions, connection_options, json_option, manifest_argument
from gcbatch.errors import EXIT_FAILURE, EXIT_OK, ConfigError

__all__ = ["COMMANDS", "lock"]


def _emit(as_json: bool, data: dict[str, object], text: str, *, err: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        if err:
            click.echo(text, err=True)
    else:
        click.echo(text, err=err)


@click.group("lock")
def lock() -> None:
    """Merge, rebuild or move a study's lockfile.

    \b
      gcbatch lock merge study.yaml            the shards' lockfiles (apply --shard I/N)
                                               into study.lock
      gcbatch lock merge -o study.lock a.lock b.lock   two colleagues' lockfiles into one
      gcbatch lock rebuild study.yaml          a lost lockfile, from the jobs on the server
      gcbatch lock move study.yaml --server URL   to another URL of the same server
    """


@lock.command("merge")
@click.argument("sources", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The merged lockfile (with lockfiles as SOURCES; an existing one is "
              "merged in too).")
@click.option("--sandbox", is_flag=True, default=False,
              help="With a manifest: the shards' sandbox lockfiles, into <stem>.sandbox.lock.")
@click.option("--git", "git_driver", is_flag=True, default=False,
              help="Git's merge driver: SOURCES are %A %B; the result replaces %A "
              "(no journal, no OS lock).")
@json_option
def merge(sources: tuple[Path, ...], output: Path | None, sandbox: bool, git_driver: bool,
          as_json: bool) -> int:
    """Fold lockfiles of one study into one; refuse a case given two different jobs.

    SOURCES is a manifest (its shard lockfiles <stem>.shard-I-of-N.lock, every one of
    them, into <stem>.lock) or lockfiles with --output. The output does not depend on
    the order of SOURCES. Nothing is written when any case has two different jobs: the
    report names each such case and both jobs (exit 1). Nothing is sent to any server.

    \b
    As a git merge driver for lockfiles:
      echo '*.lock merge=gcbatch-lock' >> .gitattributes
      git config merge.gcbatch-lock.name "gcbatch lockfile merge"
      git config merge.gcbatch-lock.driver "gcbatch lock merge --git %A %B"
    """
    from gcbatch.operations.lock_merge import merge as merge_files
    from gcbatch.operations.lock_merge import merge_shards
    from gcbatch.views.lock import merge_json, merge_text

    manifests = [p for p in sources if p.suffix in (".yaml", ".yml")]
    if manifests:
        if len(sources) != 1 or output is not None or git_driver:
            raise ConfigError("lock merge: give one manifest alone (its shards are merged "
                              "into its lockfile), or lockfiles with --output")
        outcome = merge_shards(sources[0], sandbox=sandbox)
    elif git_driver:
        if len(sources) != 2 or output is not None:
            raise ConfigError("lock merge --git takes exactly %A %B (the result replaces %A)")
        outcome = merge_files(sources, sources[0], git_driver=True)
    else:
        if output is None:
            raise ConfigError("lock merge: --output PATH is needed with lockfiles (or give "
                              "the manifest, to merge its shards into its lockfile)")
        outcome = merge_files(sources, output)
    _emit(as_json, merge_json(outcome), merge_text(outcome), err=bool(outcome.conflicts))
    return EXIT_FAILURE if outcome.conflicts else EXIT_OK


@lock.command("rebuild")
@manifest_argument
@connection_options
@json_option
def rebuild(manifest: Path, connection: ConnectionOptions, as_json: bool) -> int:
    """Write a lost lockfile again from the jobs on the server (GETs only).

    Each case's job is found by what it sent: values, linked images, and the names
    gcbatch gives its uploads. Cases with one job are adopted; cases with none are left
    for apply to submit; cases with several are recorded in doubt and listed (pick one
    with `gcbatch adopt`). Never writes over an existing lockfile or journal.
    """
    from gcbatch.operations.lock_rebuild import rebuild as rebuild_lockfile
    from gcbatch.operations.session import connect
    from gcbatch.operations.study import open_study
    from gcbatch.views.lock import rebuild_text

    study = open_study(manifest, connection)
    with connect(study, connection) as session:
        outcome = rebuild_lockfile(study, session)
    _emit(as_json, outcome.as_json(), rebuild_text(outcome))
    return EXIT_OK


@lock.command("move")
@manifest_argument
@connection_options
@json_option
def move(manifest: Path, connection: ConnectionOptions, as_json: bool) -> int:
    """Move the study's lockfile to another URL (--server) of the same server.

    Proves first, with GETs at the new URL, that it is the same server: the algorithm
    has the lockfile's pk there and every locked job is found there. Then rewrites the
    lockfile's URLs (under its lock), keeping every job and every case in doubt.
    """
    from gcbatch.operations.lock_move import move as move_lockfile
    from gcbatch.operations.session import connect
    from gcbatch.operations.study import open_study
    from gcbatch.views.lock import move_json, move_text

    if not connection.server:
        raise ConfigError("lock move needs --server URL: the URL to move the lockfile to")
    study = open_study(manifest, connection)
    with connect(study, connection) as session:
        outcome = move_lockfile(study, session)
    _emit(as_json, move_json(outcome), move_text(outcome))
    return EXIT_OK


COMMANDS = [lock]
