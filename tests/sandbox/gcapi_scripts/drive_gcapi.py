"""Drive a TLS sandbox with the official client, gcapi 0.16.1, exactly as its docs teach.

Runs inside gcapi's own virtualenv (it pins httpx 0.23, which gcbatch does not use), so it
imports nothing from gcbatch. Usage::

    GCAPI_BASE_URL=https://127.0.0.1:PORT/api/v1/ GRAND_CHALLENGE_AUTHORIZATION=demo-token \
    SSL_CERT_FILE=<sandbox CA> python drive_gcapi.py SCENARIO WORKDIR

It prints one JSON document on stdout describing what gcapi saw; the pytest side
(``test_gcapi_conformance.py``) makes the assertions. Error scenarios report the
exception gcapi raised, its status code and the decoded body, i.e. what a gcapi user sees.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import gcapi
import httpx
from gcapi import SocketValueSpec

TERMINAL = {"Succeeded", "Failed", "Cancelled"}
WAIT_SECONDS = 60.0


def client() -> gcapi.Client:
    # A "newer gcapi available" warning would mean the sandbox advertises a wrong version.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return gcapi.Client(base_url=os.environ["GCAPI_BASE_URL"])


def wait_for(c: gcapi.Client, pk: str) -> dict[str, Any]:
    """Poll algorithm_jobs.detail until the job ends; the statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        job = c.algorithm_jobs.detail(pk=pk)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in TERMINAL or time.monotonic() > deadline:
            return {"job": job, "statuses": seen}
        time.sleep(0.1)


def describe_outputs(c: gcapi.Client, job: Any, out: Path) -> list[dict[str, Any]]:
    """download_socket_value for every output; what landed on disk."""
    target = out / job.pk
    described = []
    for value in job.outputs:
        c.download_socket_value(value, output_directory=target)
        landed = target / value.interface.relative_path
        files = sorted(p for p in [landed, *landed.rglob("*")] if p.is_file())
        entry: dict[str, Any] = {
            "socket": value.interface.slug,
            "super_kind": value.interface.super_kind,
            "relative_path": value.interface.relative_path,
            "files": [str(p.relative_to(target)) for p in files],
            "sizes": [p.stat().st_size for p in files],
            "value": value.value,
        }
        if value.interface.super_kind.casefold() != "image" and files:
            text = files[0].read_bytes()
            try:
                entry["content"] = json.loads(text)
            except ValueError:
                entry["content"] = text.decode("latin-1")
        described.append(entry)
    return described


def job_summary(c: gcapi.Client, pk: str, out: Path) -> dict[str, Any]:
    waited = wait_for(c, pk)
    job = waited["job"]
    return {
        "pk": job.pk,
        "status": job.status,
        "statuses": waited["statuses"],
        "inputs": sorted(
            (
                {
                    "socket": v.interface.slug,
                    "value": v.value,
                    "image": v.image,
                    "file": v.file,
                }
                for v in job.inputs
            ),
            key=lambda d: d["socket"],
        ),
        "outputs": describe_outputs(c, job, out) if job.status == "Succeeded" else [],
    }


def write_mha(path: Path) -> None:
    """A tiny valid MetaImage (4x3x2 voxels, uchar)."""
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n"
        "CenterOfRotation = 0 0 0\nAnatomicalOrientation = RAI\nElementSpacing = 1 1 1\n"
        "DimSize = 4 3 2\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode() + bytes(range(24)))


def rejected(call: Any) -> dict[str, Any]:
    """Run ``call`` expecting gcapi to raise on the server's answer; what it raised."""
    try:
        result = call()
    except httpx.HTTPStatusError as exc:
        response = exc.response
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return {
            "raised": f"{type(exc).__module__}.{type(exc).__name__}",
            "status": response.status_code,
            "content_type": response.headers.get("Content-Type"),
            "body": body,
        }
    except Exception as exc:  # a client-side refusal: report it, the test will fail
        return {"raised": f"{type(exc).__module__}.{type(exc).__name__}", "message": str(exc)}
    return {"raised": None, "result": repr(result)}


# --- scenarios ----------------------------------------------------------------------------


def scenario_jobs(out: Path) -> dict[str, Any]:
    """A value job, a file job and an image job, each to Succeeded, every output fetched."""
    c = client()
    report = out / "lab-report.json"
    report.write_text(json.dumps({"hemoglobin": 13.5, "crp": 2}))
    scan = out / "scan.mha"
    write_mha(scan)
    value_job = c.start_algorithm_job(
        algorithm_slug="risk-calculator",
        inputs=[
            SocketValueSpec(socket_slug="age", value=64),
            SocketValueSpec(socket_slug="lung-volume", value=3.5),
        ],
    )
    file_job = c.start_algorithm_job(
        algorithm_slug="risk-calculator",
        inputs=[
            SocketValueSpec(socket_slug="age", value=65),
            SocketValueSpec(socket_slug="lung-volume", value=3.5),
            SocketValueSpec(socket_slug="lab-report", file=report),
        ],
    )
    image_job = c.start_algorithm_job(
        algorithm_slug="lung-nodule-detector",
        inputs=[SocketValueSpec(socket_slug="ct-image", file=scan)],
    )
    created = {
        "value": {"pk": value_job.pk, "status": value_job.status},
        "file": {"pk": file_job.pk, "status": file_job.status},
        "image": {"pk": image_job.pk, "status": image_job.status},
    }
    downloads = out / "downloads"
    return {
        "created": created,
        "jobs": {name: job_summary(c, d["pk"], downloads) for name, d in created.items()},
    }


def scenario_archive(out: Path) -> dict[str, Any]:
    """archive_items listing, then jobs that reuse an item's image and value."""
    c = client()
    archive = c.archives.detail(slug="lung-archive")
    items = list(c.archive_items.iterate_all(params={"archive": archive.pk}))
    listed = [
        {
            "pk": item.pk,
            "values": sorted(
                (
                    {"socket": v.interface.slug, "super_kind": v.interface.super_kind,
                     "value": v.value, "image": v.image}
                    for v in item.values
                ),
                key=lambda d: d["socket"],
            ),
        }
        for item in items
    ]
    item = items[0]
    by_socket = {v.interface.slug: v for v in item.values}
    image_job = c.start_algorithm_job(
        algorithm_slug="lung-nodule-detector",
        inputs=[
            SocketValueSpec(socket_slug="ct-image", existing_socket_value=by_socket["ct-image"])
        ],
    )
    value_job = c.start_algorithm_job(
        algorithm_slug="risk-calculator",
        inputs=[
            SocketValueSpec(socket_slug="age", existing_socket_value=by_socket["age"]),
            SocketValueSpec(socket_slug="lung-volume", value=2.25),
        ],
    )
    downloads = out / "downloads"
    return {
        "archive": {"pk": archive.pk, "title": archive.title},
        "items": listed,
        "reused_item": {
            "image": by_socket["ct-image"].image,
            "age": by_socket["age"].value,
        },
        "image_job": job_summary(c, image_job.pk, downloads),
        "value_job": job_summary(c, value_job.pk, downloads),
    }


def _risk_job(c: gcapi.Client, age: int) -> Any:
    return c.start_algorithm_job(
        algorithm_slug="risk-calculator",
        inputs=[
            SocketValueSpec(socket_slug="age", value=age),
            SocketValueSpec(socket_slug="lung-volume", value=1.0),
        ],
    )


def scenario_limit(out: Path) -> dict[str, Any]:
    """Two distinct jobs: the second meets the limit the test configured (active/credits)."""
    c = client()
    first = _risk_job(c, 30)
    return {"first": {"pk": first.pk, "status": first.status}, "second": rejected(lambda: _risk_job(c, 31))}


def scenario_mismatch(out: Path) -> dict[str, Any]:
    """Inputs that gcapi accepts (a superset of an interface) but the server refuses."""
    c = client()
    return {
        "second": rejected(
            lambda: c.start_algorithm_job(
                algorithm_slug="risk-calculator",
                inputs=[
                    SocketValueSpec(socket_slug="age", value=40),
                    SocketValueSpec(socket_slug="lung-volume", value=1.5),
                    SocketValueSpec(socket_slug="clinical-info", value={"smoker": True}),
                ],
            )
        )
    }


def scenario_duplicate(out: Path) -> dict[str, Any]:
    """The same value-only job twice: the server's own duplicate check."""
    c = client()
    first = _risk_job(c, 77)
    return {"first": {"pk": first.pk, "status": first.status}, "second": rejected(lambda: _risk_job(c, 77))}


SCENARIOS = {
    "jobs": scenario_jobs,
    "archive": scenario_archive,
    "limit": scenario_limit,
    "mismatch": scenario_mismatch,
    "duplicate": scenario_duplicate,
}


def main() -> None:
    name, workdir = sys.argv[1], Path(sys.argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    result = SCENARIOS[name](workdir)
    result["gcapi_version"] = gcapi.__version__ if hasattr(gcapi, "__version__") else None
    result["httpx_version"] = httpx.__version__
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
