"""Moving jobs through time: the side effects of :mod:`~gcbatch.sandbox.lifecycle`.

A job's status is a function of the clock (``lifecycle``); what must *happen* when it
crosses a boundary is done here, at the start of each request, for the jobs that are due:
at the end of validation its uploads are checked, turned into inputs and consumed (or the
job is cancelled, or stays stuck like the platform's bug); at the end it succeeds or
fails. Between the two nothing is written: the statuses in between are computed when
the job is shown (:func:`shown_status`), so a job costs two writes here, not five. The
outputs of a succeeded job are made later still, when first looked at (``outputs``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any, Literal

from gcbatch.sandbox import dicom
from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.seed import Seed, Socket
from gcbatch.sandbox.store import JobRow, Store, UploadRow, input_key

# The next due time is cached, so most requests skip the lookup; it is read again at
# least this often because another process may share the database file.
DUE_RECHECK_SECONDS = 0.25

Verdict = Literal["ok", "cancel", "stuck"]


def shown_status(job: JobRow, now: float) -> tuple[str, float | None, float | None]:
    """(status, exec duration, invoke duration) as the client sees ``job`` at ``now``."""
    if job.status in lc.TERMINAL or job.status == lc.VALIDATING:
        return job.status, job.exec_duration, job.invoke_duration
    phase = lc.phase_at(job.created, job.schedule, now)
    status = lc.PHASES[min(max(phase, 1), len(lc.PHASES) - 1)]
    if status == lc.EXECUTED:
        d = lc.parse_schedule(job.schedule)
        return status, d[3], d[2] + d[3] + d[4]
    return status, None, None


class RunTimes:
    """Per algorithm, the total and number of its succeeded jobs' compute times: what its
    ``average_duration`` shows. Kept in memory, counted from the store at start.

    The platform (``update_algorithm_average_duration``, run after every success) averages
    the utilisation of the algorithm's succeeded jobs, every user's, leaving out those
    with a zero duration. Utilisation is the compute job's whole life (container start to
    stop), which is the sandbox's invoke duration, not the shorter execution time."""

    def __init__(self, store: Store, seed: Seed) -> None:
        self._totals: dict[str, tuple[float, int]] = {
            alg.slug: store.succeeded_durations(alg.slug) for alg in seed.algorithms
        }

    def get(self, algorithm: str) -> tuple[float, int]:
        return self._totals.get(algorithm, (0.0, 0))

    def add(self, algorithm: str, seconds: float) -> None:
        total, count = self.get(algorithm)
        self._totals[algorithm] = (total + seconds, count + 1)


class JobRunner:
    """Applies the due boundary crossings; call :meth:`advance` inside a transaction."""

    def __init__(
        self, seed: Seed, store: Store, clock: Callable[[], float], run_times: RunTimes
    ) -> None:
        self._seed = seed
        self._store = store
        self._clock = clock
        self._run_times = run_times
        self._next_due = float("-inf")
        self._due_checked = float("-inf")

    def wake(self) -> None:
        """Forget when the next job is due (after jobs changed behind the app's back)."""
        self._next_due = float("-inf")

    def note_due(self, when: float) -> None:
        """A new job has a boundary at ``when`` (keeps the cached next due time right)."""
        self._next_due = min(self._next_due, when)

    def advance(self, now: float, config: SandboxConfig) -> None:
        if now < self._next_due and now - self._due_checked < DUE_RECHECK_SECONDS:
            return
        st = self._store
        if st.any_due(now):
            for job in st.due_jobs(now):
                self._advance_job(job, now, config)
        following = st.next_due()
        self._next_due = float("inf") if following is None else following
        self._due_checked = now

    def _advance_job(self, job: JobRow, now: float, config: SandboxConfig) -> None:
        st = self._store
        ends = lc.boundaries(job.created, job.schedule)
        if job.status == lc.VALIDATING:
            verdict = self._validate_pending(job, now, config)
            if isinstance(verdict, float):  # a DICOM image set still importing
                st.update_job(job.pk, next_at=verdict)
                return
            if verdict == "cancel":
                st.finish_job(job.pk, job.user, status=lc.CANCELLED, error=lc.CANCELLED_MESSAGE)
                return
            if verdict == "stuck":
                if config.emulate_stuck_json_bug:
                    st.update_job(job.pk, next_at=None)  # the recorded platform bug
                else:
                    st.finish_job(job.pk, job.user, status=lc.CANCELLED, error=lc.CANCELLED_MESSAGE)
                return
        durations = lc.parse_schedule(job.schedule)
        if now < ends[4]:
            st.update_job(job.pk, status=lc.QUEUED, next_at=ends[4])
            return
        exec_d = durations[3]
        invoke_d = durations[2] + durations[3] + durations[4]
        if job.outcome == "fail":
            alg = self._seed.algorithm_by_slug(job.algorithm)
            st.finish_job(
                job.pk,
                job.user,
                status=lc.FAILED,
                exec_duration=exec_d,
                invoke_duration=invoke_d,
                error=None if alg is None else alg.failure_message,
            )
            return
        # The outputs are made the first time anyone looks (see outputs.py): a benchmark
        # submitting thousands of jobs a second should not pay for them.
        st.finish_job(
            job.pk,
            job.user,
            status=lc.SUCCEEDED,
            exec_duration=exec_d,
            invoke_duration=invoke_d,
            outputs_pending=1,
        )
        if invoke_d > 0:
            self._run_times.add(job.algorithm, invoke_d)

    def _upload_bytes(self, up: UploadRow) -> bytes | None:
        path = self._store.path(f"uploads/{up.pk}/object")
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _validate_pending(self, job: JobRow, now: float,
                          config: SandboxConfig) -> Verdict | float:
        """Turn a job's uploads into inputs: 'ok', 'cancel' or 'stuck', or (a DICOM image
        set still importing) when to look again."""
        st = self._store
        if job.input_key is not None:
            return "ok"  # every input existed at creation: no uploads to turn into inputs
        pending = st.pending(job.pk)
        if not pending:
            return "ok"
        imported = self._import_image_sets(job, pending, now, config)
        if imported is None or isinstance(imported, float):
            return "cancel" if imported is None else imported
        loaded: list[tuple[Socket, list[UploadRow], list[bytes], str | None]] = []
        stuck = False
        for socket_slug, upload_pks, image_name in pending:
            socket = self._seed.socket(socket_slug)
            if socket is None:
                return "cancel"
            if socket.kind_code == "DCMIS":
                continue  # imported above
            ups: list[UploadRow] = []
            datas: list[bytes] = []
            for pk in upload_pks:
                up = st.upload(pk)
                if up is None or up.consumed or up.status != "Completed":
                    return "cancel"
                data = self._upload_bytes(up)
                if data is None:
                    return "cancel"
                ups.append(up)
                datas.append(data)
            data_files = _data_files(ups, datas) if socket.super_kind == "Image" else {}
            if data_files is None:
                return "cancel"  # "2 files could not be imported"
            for up, data in zip(ups, datas, strict=True):
                if up.filename in data_files.values():
                    continue  # a MetaImage header's data file: imported with its header
                verdict = lc.check_upload_contents(socket, up.filename, data)
                if verdict == "cancel":
                    return "cancel"
                if verdict == "stuck":
                    stuck = True
            if data_files:  # the image is the header's, named after it
                order = sorted(range(len(ups)), key=lambda i: ups[i].filename not in data_files)
                ups, datas = [ups[i] for i in order], [datas[i] for i in order]
            loaded.append((socket, ups, datas, image_name))
        if stuck:
            return "stuck"
        now = self._clock()
        civs: list[int] = list(imported)
        for socket, ups, datas, image_name in loaded:
            series = _dicom_series(datas)
            if socket.super_kind == "Image" and series is not None:
                if len({f.get("SeriesInstanceUID") for f in series}) != 1:
                    return "cancel"  # one image per series: the job takes one
                civs.append(self._series_image(job, socket, series, datas, now))
            elif socket.super_kind == "Image":
                # Stored as uploaded, no conversion; a series keeps its first file.
                image_pk = str(uuid.uuid4())
                file_pk = str(uuid.uuid4())
                parsed = lc.parse_image(datas[0], ups[0].filename)
                assert parsed is not None
                meta = lc.as_imported(parsed)
                ext = ".tif" if meta.image_type == "TIFF" else ".mha"
                file_name = f"{image_pk}{ext}"
                rel = f"images/{image_pk}/{file_name}"
                st.write_bytes(rel, datas[0])
                meta_json = meta.as_json() | {"sha256": hashlib.sha256(datas[0]).hexdigest()}
                st.insert_image(
                    pk=image_pk,
                    name=image_name or ups[0].filename,
                    owner=job.user,
                    file_pk=file_pk,
                    file_name=file_name,
                    path=rel,
                    meta=json.dumps(meta_json),
                    created=now,
                )
                civs.append(st.new_civ(socket.slug, image=image_pk))
            else:
                civ = st.new_civ(
                    socket.slug,
                    file_name=ups[0].filename,
                    sha256=hashlib.sha256(datas[0]).hexdigest(),
                )
                rel = f"civ/{civ}/{ups[0].filename}"
                st.write_bytes(rel, datas[0])
                st.set_civ_file(civ, rel)
                civs.append(civ)
        for _socket, ups, _datas, _name in loaded:
            for up in ups:
                st.update_upload(up.pk, consumed=1)
                st.remove_tree(f"uploads/{up.pk}")
        st.attach(job.pk, civs, "in")
        st.clear_pending(job.pk)
        all_civs = [c.pk for c in st.job_civs(job.pk, "in")]
        st.update_job(job.pk, input_key=input_key(all_civs))
        return "ok"


    def _series_image(self, job: JobRow, socket: Socket, series: list[dicom.DicomFile],
                      datas: list[bytes], now: float) -> int:
        """panimg's image of a DICOM series: named ``<StudyInstanceUID>-0``, patient data
        and UIDs kept as the files hold them (stored: the first file, as uploaded)."""
        st = self._store
        image_pk, file_pk = str(uuid.uuid4()), str(uuid.uuid4())
        fields = dicom.image_fields(series)
        meta = lc.ImageMeta("MHD", *dicom.shape(series))
        digest = hashlib.sha256(b"".join(datas)).hexdigest()
        file_name = f"{image_pk}.mha"
        rel = f"images/{image_pk}/{file_name}"
        st.write_bytes(rel, datas[0])
        st.insert_image(pk=image_pk, name=dicom.series_name(series), owner=job.user,
                        file_pk=file_pk, file_name=file_name, path=rel,
                        meta=json.dumps(meta.as_json() | {"sha256": digest, "dicom": fields}),
                        created=now)
        return st.new_civ(socket.slug, image=image_pk)

    def _import_image_sets(self, job: JobRow, pending: list[tuple[str, list[str], str | None]],
                           now: float, config: SandboxConfig) -> list[int] | float | None:
        """The DICOM image sets of a job: civs once every import is done, the time to look
        again while one runs, None when one is rejected (the job is Cancelled).

        As on the platform: the import takes the uploads and deletes them as it starts
        (whatever its outcome), and the image, named after ``image_name``, exists only
        when it ends; what is stored is de-identified there (here: nothing of the files
        but their digest and shape)."""
        st = self._store
        civs: list[int] = []
        later: float | None = None
        for socket_slug, upload_pks, image_name in pending:
            socket = self._seed.socket(socket_slug)
            if socket is None or socket.kind_code != "DCMIS":
                continue
            where = f"dicomsets/{job.pk}/{socket_slug}.json"
            marker = st.path(where)
            if not marker.exists():
                datas: list[bytes] = []
                for pk in upload_pks:
                    up = st.upload(pk)
                    data = None if up is None or up.consumed else self._upload_bytes(up)
                    if data is None:
                        return None
                    datas.append(data)
                    st.update_upload(pk, consumed=1)
                    st.remove_tree(f"uploads/{pk}")
                files = [dicom.parse_dicom(d) for d in datas]
                if dicom.set_problem(files) is not None:
                    return None
                width, height, depth = dicom.shape([f for f in files if f is not None])
                info: dict[str, Any] = {"ready": now + config.dicom_import_seconds,
                        "sha256": hashlib.sha256(b"".join(datas)).hexdigest(),
                        "width": width, "height": height, "depth": depth}
                st.write_bytes(where, json.dumps(info).encode())
            else:
                info = json.loads(marker.read_bytes())
            ready = float(info["ready"])
            if now < ready:
                later = ready if later is None else min(later, ready)
                continue
            image_pk = str(uuid.uuid4())
            meta = lc.ImageMeta("DCMIS", _opt_int(info["width"]), _opt_int(info["height"]),
                                _opt_int(info["depth"]))
            st.insert_image(pk=image_pk, name=image_name or "", owner=job.user,
                            file_pk=str(uuid.uuid4()), file_name="", path="",
                            meta=json.dumps(meta.as_json() | {"sha256": info["sha256"],
                                                              "dicom_image_set": True}),
                            created=now)
            civs.append(st.new_civ(socket.slug, image=image_pk))
        if later is not None:
            return later
        return civs


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _dicom_series(datas: list[bytes]) -> list[dicom.DicomFile] | None:
    """The files as DICOM when every one is (None otherwise)."""
    parsed = [dicom.parse_dicom(d) for d in datas]
    if not parsed or any(p is None for p in parsed):
        return None
    return [p for p in parsed if p is not None]


def _data_files(ups: list[UploadRow], datas: list[bytes]) -> dict[str, str] | None:
    """header upload's filename → its data file's, for the ``.mhd`` headers among an Image
    input's uploads; None when a header's data file is not among them under exactly the
    name the header gives (the platform then cannot import the pair: the job is
    Cancelled, "2 files could not be imported")."""
    names = {up.filename for up in ups}
    pairs: dict[str, str] = {}
    for up, data in zip(ups, datas, strict=True):
        if not up.filename.lower().endswith(".mhd"):
            continue
        wanted = lc.mhd_data_file_name(data)
        if wanted is None:
            continue
        if wanted not in names:
            return None
        pairs[up.filename] = wanted
    return pairs
