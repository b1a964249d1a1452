"""Who may see what: algorithms and archives by the seed's user lists, images by owner,
by the jobs that used them, or by the archives they are in."""

from __future__ import annotations

from gcbatch.sandbox.seed import Algorithm, Archive, Seed, User
from gcbatch.sandbox.seeding import item_civ
from gcbatch.sandbox.store import CivRow, ImageRow, Store


class Visibility:
    """The permission checks the views share. Caches per user what the seed decides
    (the seed never changes); what jobs decide is read from the store each time."""

    def __init__(self, seed: Seed, store: Store) -> None:
        self._seed = seed
        self._store = store
        self._seed_image_pks_by_user: dict[str | None, tuple[str, ...]] = {}

    def algorithms(self, user: User | None) -> list[Algorithm]:
        name = None if user is None else user.name
        return [a for a in self._seed.algorithms if a.visible_to(name)]

    def archives(self, user: User | None) -> list[Archive]:
        name = None if user is None else user.name
        return [a for a in self._seed.archives if a.visible_to(name)]

    def seed_image_pks(self, user: User | None) -> tuple[str, ...]:
        """The pks of the images in the archives ``user`` may see, sorted."""
        key = None if user is None else user.name
        cached = self._seed_image_pks_by_user.get(key)
        if cached is None:
            pks = []
            for archive in self.archives(user):
                for item in archive.items:
                    for value in item.values:
                        if value.image is not None:
                            pks.append(value.image.pk)
            cached = tuple(sorted(set(pks)))
            self._seed_image_pks_by_user[key] = cached
        return cached

    def image(self, img: ImageRow, user: User | None) -> bool:
        """May ``user`` see ``img``? Seed images: through an archive or a job of theirs;
        any other image: only its owner."""
        if user is None:
            return False
        if img.owner is None:
            return img.pk in self.seed_image_pks(user) or self._store.image_visible_to_user(
                img.pk, user.name
            )
        return img.owner == user.name

    def civ_in_archive(self, civ: CivRow, user: User) -> bool:
        """Is ``civ`` the value of an item in an archive ``user`` may see?"""
        for archive in self.archives(user):
            for item in archive.items:
                for value in item.values:
                    if value.socket == civ.socket:
                        found = item_civ(self._store, archive, item.pk, value)
                        if found is not None and found.pk == civ.pk:
                            return True
        return False
