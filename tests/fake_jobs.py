"""Jobs as the server lists them, built for pure tests (shared by tests/engine's
reconciliation and ownership tests): ``job("j1", age=42, ct_image=("image", "i1"),
report=("file", "r.json"))``."""

from __future__ import annotations

from gcbatch.api.models import Job, Socket, SocketValue

BASE = "http://127.0.0.1:1/api/v1/"


def make_job(pk: str, status: str = "Queued", *, file_dir: str = "media/",
             **inputs: object) -> Job:
    """A job with these inputs (``_`` in a keyword reads as ``-``): a value, an
    ``("image", pk)`` or a ``("file", name)`` stored under ``file_dir``."""
    values = []
    for slug, raw in inputs.items():
        slug = slug.replace("_", "-")
        if isinstance(raw, tuple) and raw[0] == "image":
            values.append(SocketValue(socket_slug=slug, socket=Socket(slug, super_kind="Image"),
                                      image=f"{BASE}cases/images/{raw[1]}/"))
        elif isinstance(raw, tuple) and raw[0] == "file":
            values.append(SocketValue(socket_slug=slug, socket=Socket(slug, super_kind="File"),
                                      file=f"{BASE}{file_dir}{raw[1]}"))
        else:
            values.append(SocketValue(socket_slug=slug, socket=Socket(slug, super_kind="Value"),
                                      value=raw))
    return Job(pk=pk, api_url=f"{BASE}algorithms/jobs/{pk}/", status=status,
               inputs=tuple(values))
