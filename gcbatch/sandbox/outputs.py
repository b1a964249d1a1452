"""The outputs of succeeded jobs: made when first looked at, bytes made on download.

Outputs are a pure function of a job's inputs (:func:`~gcbatch.sandbox.lifecycle.derive_outputs`),
so the sandbox stores only that they exist: a Value output's JSON, and for a File or
Image output a ``derived:<job>:<socket>`` place holder whose bytes are computed again
when someone downloads them. A benchmark that submits thousands of jobs a second thus
pays for outputs only for the jobs it reads back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.ids import PrimaryKeys
from gcbatch.sandbox.seed import Algorithm, Interface, Seed, User
from gcbatch.sandbox.store import JobRow, Store


class Outputs:
    """Makes outputs and the bytes of stored objects (call inside a transaction)."""

    def __init__(
        self, seed: Seed, store: Store, clock: Callable[[], float], ids: PrimaryKeys
    ) -> None:
        self._seed = seed
        self._store = store
        self._clock = clock
        self._ids = ids

    def stored_bytes(self, where: str) -> bytes:
        """The bytes of a stored object; ``derived:<job>:<socket>`` ones are recomputed."""
        if where.startswith("derived:"):
            _, job_pk, socket_slug = where.split(":", 2)
            out = self._derived(job_pk, socket_slug)
            return b"" if out is None or out.data is None else out.data
        return self._store.path(where).read_bytes()

    def ensure(self, jobs: Sequence[JobRow]) -> list[JobRow]:
        """Make the outputs of succeeded jobs that nobody has looked at yet."""
        fresh = []
        for job in jobs:
            if job.outputs_pending:
                self._make(job)
                self._store.update_job(job.pk, outputs_pending=0)
                job = dataclasses.replace(job, outputs_pending=0)
            fresh.append(job)
        return fresh

    def ensure_for_user(self, user: User | None) -> None:
        """Make every pending output of ``user``'s jobs (before searching by output)."""
        if user is not None:
            self.ensure(self._store.jobs_with_pending_outputs(user.name))

    def _describe_inputs(self, job_pk: str) -> tuple[Algorithm, Interface, dict[str, Any]]:
        """(algorithm, matching interface, inputs description for derive_outputs)."""
        st = self._store
        job = st.job(job_pk)
        assert job is not None
        alg = self._seed.algorithm_by_slug(job.algorithm)
        assert alg is not None
        inputs = st.job_civs(job_pk, "in")
        given = {c.socket for c in inputs}
        iface = next((i for i in alg.interfaces if set(i.inputs) == given), alg.interfaces[0])
        described: dict[str, Any] = {}
        for civ in inputs:
            if civ.value is not None:
                described[civ.socket] = json.loads(civ.value)
            elif civ.file is not None:
                digest = civ.sha256 or hashlib.sha256(self.stored_bytes(civ.file)).hexdigest()
                described[civ.socket] = {"file_sha256": digest}
            elif civ.image is not None:
                img = st.image(civ.image)
                digest = ""
                if img is not None:
                    digest = (
                        json.loads(img.meta).get("sha256")
                        or hashlib.sha256(self.stored_bytes(img.path)).hexdigest()
                    )
                described[civ.socket] = {"image_sha256": digest}
        return alg, iface, described

    def _derived(self, job_pk: str, socket_slug: str) -> lc.DerivedOutput | None:
        alg, iface, described = self._describe_inputs(job_pk)
        sockets = [s for s in (self._seed.socket(slug) for slug in iface.outputs) if s is not None]
        for out in lc.derive_outputs(alg.slug, sockets, described):
            if out.socket == socket_slug:
                return out
        return None

    def _make(self, job: JobRow) -> None:
        st = self._store
        alg, iface, described = self._describe_inputs(job.pk)
        if alg.outputs_mode == "invocation":
            rels = []
            for civ in st.job_civs(job.pk, "in"):
                socket = self._seed.socket(civ.socket)
                assert socket is not None
                if civ.image is not None:
                    img = st.image(civ.image)
                    rels.append(img.file_name if img is not None else f"{civ.image}.mha")
                else:
                    rels.append(socket.relative_path)
            if iface.outputs:
                value = lc.invocation_value(job.pk, rels)
                civ_pk = st.new_civ(iface.outputs[0], value_json=json.dumps(value))
                st.attach(job.pk, [civ_pk], "out")
            return
        sockets = [s for s in (self._seed.socket(slug) for slug in iface.outputs) if s is not None]
        now = self._clock()
        out_civs: list[int] = []
        for out in lc.derive_outputs(alg.slug, sockets, described, with_data=False):
            socket = self._seed.socket(out.socket)
            assert socket is not None
            where = f"derived:{job.pk}:{out.socket}"
            if socket.super_kind == "Value":
                out_civs.append(st.new_civ(out.socket, value_json=json.dumps(out.value)))
            elif socket.super_kind == "File":
                assert out.file_name is not None
                out_civs.append(st.new_civ(out.socket, file=where, file_name=out.file_name))
            else:
                assert out.file_name is not None and out.image_meta is not None
                image_pk = self._ids.new()
                st.insert_image(
                    pk=image_pk,
                    name=out.file_name,
                    owner=job.user,
                    file_pk=self._ids.new(),
                    file_name=f"{image_pk}.mha",
                    path=where,
                    meta=json.dumps(out.image_meta.as_json()),
                    created=now,
                )
                out_civs.append(st.new_civ(out.socket, image=image_pk))
        st.attach(job.pk, out_civs, "out")
