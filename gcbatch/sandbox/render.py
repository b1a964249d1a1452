"""The JSON bodies of the API's objects, keys in the platform's order.

Clients (and the recorded exchanges the replay test compares with) see key order, so
every dict here lists its keys as the platform's serializers do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.jobrunner import RunTimes, shown_status
from gcbatch.sandbox.seed import Algorithm, Archive, ArchiveItem, Seed, User
from gcbatch.sandbox.seeding import item_civ
from gcbatch.sandbox.store import CivRow, ImageRow, JobRow, Store, UploadRow
from gcbatch.sandbox.urls import (
    API,
    algorithm_url,
    archive_url,
    civ_file_url,
    image_file_url,
    image_url,
)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Renderer:
    """Builds the bodies; ``base`` is the scheme and host the client used."""

    def __init__(
        self, seed: Seed, store: Store, clock: Callable[[], float], run_times: RunTimes
    ) -> None:
        self._seed = seed
        self._store = store
        self._clock = clock
        self._run_times = run_times
        # A socket's body never changes: made once, shared by every answer.
        self.sockets: dict[str, dict[str, Any]] = {s.slug: s.as_json() for s in seed.sockets}

    def algorithm(self, base: str, alg: Algorithm) -> dict[str, Any]:
        total, count = self._run_times.get(alg.slug)
        average = (
            alg.average_duration
            if alg.average_duration is not None
            else (round(total / count, 6) if count else None)
        )
        return {
            "api_url": algorithm_url(base, alg.pk),
            "url": f"{base}/algorithms/{alg.slug}/",
            "description": alg.description,
            "pk": alg.pk,
            "title": alg.title,
            "logo": f"{base}/_storage/public/logos/algorithm/{alg.pk}/logo.png",
            "slug": alg.slug,
            "average_duration": average,
            "interfaces": [
                {
                    "inputs": [self.sockets[s] for s in iface.inputs],
                    "outputs": [self.sockets[s] for s in iface.outputs],
                }
                for iface in alg.interfaces
            ],
        }

    def civ(self, base: str, civ: CivRow) -> dict[str, Any]:
        socket = self.sockets[civ.socket]
        return {
            "interface": socket,
            # Newer servers (and gcapi 0.16.1's models) also carry the socket under this
            # name; the recorded server did not. Deliberate superset.
            "socket": socket,
            "value": None if civ.value is None else json.loads(civ.value),
            "file": None if civ.file is None else civ_file_url(base, civ.pk, civ.file_name),
            "image": None if civ.image is None else image_url(base, civ.image),
            "pk": civ.pk,
        }

    def job(
        self, base: str, job: JobRow, civs: Mapping[tuple[str, str], list[CivRow]] | None = None
    ) -> dict[str, Any]:
        """A job; ``civs`` are its values if the caller fetched many jobs' at once."""
        alg = self._seed.algorithm_by_slug(job.algorithm)
        assert alg is not None
        if civs is None:
            civs = self._store.jobs_civs([job.pk])
        status, exec_d, invoke_d = shown_status(job, self._clock())
        return {
            "pk": job.pk,
            "url": f"{base}/algorithms/{alg.slug}/jobs/{job.pk}/",
            "api_url": f"{base}{API}algorithms/jobs/{job.pk}/",
            "algorithm_image": f"{base}{API}algorithms/images/{alg.image_pk}/",
            "inputs": [self.civ(base, c) for c in civs.get((job.pk, "in"), ())],
            "outputs": [self.civ(base, c) for c in civs.get((job.pk, "out"), ())],
            "status": status,
            "hanging_protocol": None,
            "optional_hanging_protocols": [],
            "view_content": {},
            "exec_duration": None if exec_d is None else lc.iso_duration(exec_d),
            "invoke_duration": None if invoke_d is None else lc.iso_duration(invoke_d),
            "algorithm": algorithm_url(base, alg.pk),
        }

    def upload(self, base: str, up: UploadRow, user: User) -> dict[str, Any]:
        return {
            "pk": up.pk,
            "created": iso(up.created),
            "filename": up.filename,
            "key": f"uploads/{user.number}/{up.pk}",
            "s3_upload_id": up.s3_upload_id,
            "status": up.status,
            "api_url": f"{base}{API}uploads/{up.pk}/",
        }

    def image(self, base: str, img: ImageRow) -> dict[str, Any]:
        raw = json.loads(img.meta)
        meta = lc.ImageMeta.from_json(raw)
        shown = self._image(base, img, meta)
        if raw.get("dicom"):  # a DICOM series on an Image socket: what panimg keeps
            shown.update(raw["dicom"])
        if raw.get("dicom_image_set"):  # no files: the pixels live in HealthImaging
            shown["files"] = []
            shown["dicom_image_set"] = {"image_set_id": img.file_pk.replace("-", "")}
        return shown

    def _image(self, base: str, img: ImageRow, meta: lc.ImageMeta) -> dict[str, Any]:
        return {
            "pk": img.pk,
            "name": img.name,
            "files": [
                {
                    "pk": img.file_pk,
                    "image": img.pk,
                    "file": image_file_url(base, img.pk, img.file_pk, img.file_name),
                    "image_type": "TIFF" if meta.image_type == "TIFF" else "MHD",
                }
            ],
            "dicom_image_set": None,
            "width": meta.width,
            "height": meta.height,
            "depth": meta.depth,
            "color_space": meta.color_space,
            "modality": None,
            "eye_choice": "NA",
            "stereoscopic_choice": None,
            "field_of_view": None,
            "shape_without_color": meta.shape_without_color(),
            "shape": meta.shape(),
            "voxel_width_mm": meta.voxel_width_mm,
            "voxel_height_mm": meta.voxel_height_mm,
            "voxel_depth_mm": meta.voxel_depth_mm,
            "api_url": image_url(base, img.pk),
            "patient_id": "",
            "patient_name": "",
            "patient_birth_date": None,
            "patient_age": "",
            "patient_sex": "",
            "study_date": None,
            "study_instance_uid": "",
            "series_instance_uid": "",
            "study_description": "",
            "series_description": "",
            "window_center": None,
            "window_width": None,
            "segments": None,
        }

    def archive(self, base: str, archive: Archive) -> dict[str, Any]:
        return {
            "pk": archive.pk,
            "title": archive.title,
            "logo": f"{base}/_storage/public/logos/archive/{archive.pk}/logo.png",
            "description": archive.description,
            "api_url": archive_url(base, archive.pk),
            "url": f"{base}/archives/{archive.slug}/",
        }

    def item(self, base: str, archive: Archive, item: ArchiveItem) -> dict[str, Any]:
        values = []
        for value in item.values:
            civ = item_civ(self._store, archive, item.pk, value)
            if civ is not None:
                values.append(self.civ(base, civ))
        return {
            "pk": item.pk,
            "title": item.title,
            "archive": archive_url(base, archive.pk),
            "values": values,
            "hanging_protocol": None,
            "optional_hanging_protocols": [],
            "view_content": {},
        }
