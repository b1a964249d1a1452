"""The server's state as gcbatch reads it: GETs only, one place for every lookup.

``apply`` (its slot monitor and reconciliation), ``plan``, ``status``, ``wait`` and
``download`` all ask the same few questions of the server: which algorithm is this slug,
what items do these archives hold, what are these jobs' statuses now, which jobs has the
algorithm got, does this upload still live, which images carry this name. They are
answered here, so that each question has one implementation (and one request pattern to
measure and improve), and nothing here can change anything on the server.

Reading jobs. The job list is the only way to see many jobs at once (``GET
algorithms/jobs/?algorithm_image__algorithm=<pk>``, oldest first, up to 1,000 a page); it
holds every job the user can see on the algorithm, other users' public ones included.
:meth:`ServerView.jobs` pages through it and stops as soon as every wanted job was seen;
when only a few jobs are still unseen and more pages remain than jobs missing, those few
are fetched one by one instead (``--case one-case`` on an algorithm with 100,000 public
jobs is 2 requests, not 100). :meth:`ServerView.tail` reads the newest end of the list,
where the jobs a run has just made are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.http import PAGE_LIMIT_MAX
from gcbatch.api.models import Algorithm, ArchiveItem, Job, MalformedResponse
from gcbatch.errors import ApiError, NotFoundError

__all__ = ["DIRECT_LOOKUP_MAX", "ServerView"]

#: at most this many jobs are looked up one by one rather than through the list
DIRECT_LOOKUP_MAX = 2


class ServerView:
    """Read-only questions to one server, through one (thread-safe) client."""

    def __init__(self, client: GrandChallengeClient) -> None:
        self.client = client

    # -- the algorithm and its archives ------------------------------------------------------

    def algorithm(self, slug: str) -> Algorithm | None:
        """The algorithm, or None when it does not exist or the user may not run it."""
        try:
            return self.client.get_algorithm(slug)
        except NotFoundError:
            return None

    def archive_items(
        self, slugs: Iterable[str]
    ) -> tuple[dict[str, list[ArchiveItem]], dict[str, ArchiveItem]]:
        """Every item of each archive named (``foreach: {archive: ...}`` generators):
        (items by archive slug, items by pk)."""
        by_slug: dict[str, list[ArchiveItem]] = {}
        by_pk: dict[str, ArchiveItem] = {}
        for slug in slugs:
            if slug in by_slug:
                continue
            archive = self.client.get_archive(slug)
            items = list(self.client.list_archive_items(archive.pk))
            by_slug[slug] = items
            by_pk.update({item.pk: item for item in items})
        return by_slug, by_pk

    def add_items(self, item_pks: Iterable[str], by_pk: dict[str, ArchiveItem]) -> None:
        """Fetch the archive items named explicitly (``archive_item: <pk>``) that
        ``by_pk`` lacks; one that does not exist is left out (pre-flight names it)."""
        for pk in item_pks:
            if not pk or pk in by_pk:
                continue
            try:
                by_pk[pk] = self.client.get_archive_item(pk)
            except NotFoundError:
                continue

    # -- jobs ----------------------------------------------------------------------------------

    def jobs(self, algorithm_pk: str, wanted: Iterable[str]) -> dict[str, Job]:
        """The jobs among ``wanted`` (pks) the server shows, by pk; absent ones left out."""
        missing = set(wanted)
        found: dict[str, Job] = {}
        if not missing:
            return found
        if len(missing) <= DIRECT_LOOKUP_MAX:
            return self._one_by_one(missing)
        offset = 0
        while missing:
            page = self.client.get_json("algorithms/jobs/", {
                "algorithm_image__algorithm": algorithm_pk, "limit": PAGE_LIMIT_MAX,
                "offset": offset})
            results, count = _page(page)
            for item in results:
                pk = item.get("pk") if isinstance(item, dict) else None
                if pk in missing:
                    found[pk] = _parse_job(item)
                    missing.discard(pk)
            # advance by what came back: a server whose max_limit is below ours sends less
            offset += len(results)
            if not results or offset >= count:
                break
            pages_left = math.ceil((count - offset) / len(results))
            if missing and len(missing) < pages_left:
                found.update(self._one_by_one(missing))
                break
        return found

    def all_jobs(self, algorithm_pk: str) -> Iterator[Job]:
        """Every job of the algorithm the user can see, oldest first (all pages)."""
        return self.client.list_jobs(algorithm_pk)

    def tail(self, algorithm_pk: str, *, limit: int, offset: int) -> tuple[list[Any], int]:
        """One page of the job list (raw items) and the list's length. Reading it at
        ``count - limit`` gives the newest jobs: where a run's own jobs are."""
        page = self.client.get_json("algorithms/jobs/", {
            "algorithm_image__algorithm": algorithm_pk, "limit": limit, "offset": offset})
        return _page(page)

    def recent_jobs(self, algorithm_pk: str, limit: int = PAGE_LIMIT_MAX) -> list[Job]:
        """The newest ``limit`` jobs: a 1-item page for the count, then the tail."""
        _, count = self.tail(algorithm_pk, limit=1, offset=0)
        items, _ = self.tail(algorithm_pk, limit=limit, offset=max(0, count - limit))
        jobs = []
        for item in items:
            try:
                jobs.append(Job.from_json(item))
            except MalformedResponse:
                continue
        return jobs

    def _one_by_one(self, pks: Iterable[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for pk in sorted(pks):
            try:
                found[pk] = self.client.get_job(pk)
            except NotFoundError:
                continue
        return found

    # -- what reconciliation asks -------------------------------------------------------------

    def image_pks_named(self, name: str) -> list[str]:
        """Pks of the images with exactly this name (``cases/images/?name=``)."""
        return [image.pk for image in self.client.list_images(name=name)]

    def upload_exists(self, pk: str) -> bool:
        """False once an upload is gone: consumed by a job, or expired."""
        try:
            self.client.get_upload(pk)
        except NotFoundError:
            return False
        return True


def _page(page: object) -> tuple[list[Any], int]:
    if not isinstance(page, Mapping) or not isinstance(page.get("results"), list):
        raise ApiError("unexpected answer to the job list: not a paginated list", status=200)
    count = page.get("count")
    results: list[Any] = page["results"]
    if isinstance(count, bool) or not isinstance(count, int) or count < len(results):
        # where the newest jobs are is read from the count: guessing it would read the
        # wrong end of the list (and miss a job an in-doubt POST made)
        raise ApiError(f"unexpected answer to the job list: its count is {count!r}",
                       status=200)
    return results, count


def _parse_job(item: object) -> Job:
    try:
        return Job.from_json(item)
    except MalformedResponse as exc:
        raise ApiError(f"unexpected job in the job list: {exc}", status=200) from None
