"""The seed's archive values in the store: put there at start, and found again.

Archive items are not stored (they live in the immutable :class:`~gcbatch.sandbox.seed.Seed`),
but their values must be real CIVs and images: jobs take them as inputs, and their
images and files are listed and downloaded like any other. Installing is idempotent,
because a database file outlives the process and two processes may share one.
"""

from __future__ import annotations

import json

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.seed import Archive, Seed, SeedValue
from gcbatch.sandbox.store import CivRow, Store


def _file_key(archive: Archive, item_pk: str, socket: str) -> str:
    # A file CIV has no natural key (values have their JSON, images their pk), so its pk
    # is remembered in the meta table under the item's coordinates.
    return f"seed-file:{archive.slug}/{item_pk}/{socket}"


def install_seed(store: Store, seed: Seed, now: float) -> None:
    """Make the CIVs (and images) of every archive item that are not there yet."""
    for archive in seed.archives:
        for item in archive.items:
            for value in item.values:
                socket = seed.socket(value.socket)
                assert socket is not None
                if value.has_value:
                    store.seed_civ(
                        value.civ_pk, socket.slug, value_json=lc.canonical_json(value.value)
                    )
                elif value.image is not None:
                    data = value.image.path.read_bytes()
                    meta = lc.parse_image(data, value.image.path.name) or lc.ImageMeta(
                        "MHD", None, None, None
                    )
                    store.insert_image(
                        pk=value.image.pk,
                        name=value.image.name,
                        owner=None,
                        file_pk=value.image.file_pk,
                        file_name=value.image.path.name,
                        path=str(value.image.path),
                        meta=json.dumps(meta.as_json()),
                        created=now,
                    )
                    if store.find_image_civ(socket.slug, value.image.pk) is None:
                        store.seed_civ(value.civ_pk, socket.slug, image=value.image.pk)
                elif value.file is not None:
                    key = _file_key(archive, item.pk, socket.slug)
                    if store.meta(key) is None:
                        pk = store.seed_civ(
                            value.civ_pk,
                            socket.slug,
                            file=str(value.file),
                            file_name=value.file.name,
                        )
                        store.set_meta(key, str(pk))


def item_civ(store: Store, archive: Archive, item_pk: str, value: SeedValue) -> CivRow | None:
    """The CIV that holds an archive item's ``value`` (None if it is not installed)."""
    socket = value.socket
    found: int | None
    if value.has_value:
        found = store.find_value_civ(socket, lc.canonical_json(value.value))
    elif value.image is not None:
        found = store.find_image_civ(socket, value.image.pk)
    else:
        meta = store.meta(_file_key(archive, item_pk, socket))
        found = None if meta is None else int(meta)
    return None if found is None else store.civ(found)
