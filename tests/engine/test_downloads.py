"""gcbatch.engine.downloads against a fake client: layout, atomicity, skipping, resuming, safety."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from gcbatch.api.models import Image, Job
from gcbatch.engine.download_record import STATE_NAME, DownloadState
from gcbatch.engine.downloads import (
    FileTask,
    ImageTask,
    UnsafePathError,
    ValueTask,
    download_outputs,
    plan_tasks,
    safe_relative,
    url_key,
    value_bytes,
)
from gcbatch.errors import NotFoundError, TransportError
from gcbatch.events import BytesReceived, DownloadPlanned, Event, FileDone

API = "http://127.0.0.1:9/api/v1/"


def _socket(slug: str, super_kind: str, relative_path: str) -> dict[str, Any]:
    return {"slug": slug, "super_kind": super_kind, "kind": "x", "pk": 1,
            "relative_path": relative_path}


def _job(pk: str, status: str = "Succeeded", *, heatmap: str = "img-1",
         report: str = "report-1") -> Job:
    outputs = [
        {"interface": _socket("nodule-count", "Value", "nodule-count.json"), "value": 3},
        {"interface": _socket("findings", "Value", "findings.json"),
         "value": {"nodules": [{"x": 1.5}], "ok": True}},
        {"interface": _socket("report", "File", "report.json"),
         "file": f"{API[:-8]}/media/{report}.json"},
        {"interface": _socket("heatmap", "Image", "images/heatmap"),
         "image": f"{API}cases/images/{heatmap}/"},
    ]
    return Job.from_json({"pk": pk, "api_url": f"{API}algorithms/jobs/{pk}/", "status": status,
                          "outputs": outputs})


class FakeClient:
    """Serves image details and file bytes from dicts; counts what it was asked."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.images: dict[str, Image] = {}
        self.image_requests: list[str] = []
        self.downloads: list[str] = []
        self.fail: Callable[[str], Exception | None] = lambda url: None
        self.before_rename: Callable[[str], None] = lambda url: None
        self._lock = threading.Lock()

    def add_image(self, pk: str, names: list[str]) -> None:
        files = []
        for name in names:
            url = f"{API[:-8]}/media/images/{pk}/{name}"
            self.files[url] = f"{pk}/{name} bytes ".encode() * 1000
            files.append({"pk": f"{pk}-{name}", "file": url, "image_type": "MHD"})
        self.images[f"{API}cases/images/{pk}/"] = Image.from_json(
            {"pk": pk, "api_url": f"{API}cases/images/{pk}/", "name": pk, "files": files})

    def add_file(self, name: str, data: bytes) -> None:
        self.files[f"{API[:-8]}/media/{name}.json"] = data

    def get_image(self, url: str) -> Image:
        with self._lock:
            self.image_requests.append(url)
        try:
            return self.images[url]
        except KeyError:
            raise NotFoundError("no image", status=404) from None

    def download(self, url: str, dest: str | os.PathLike[str], *,
                 progress: Callable[[int], None] | None = None) -> int:
        with self._lock:
            self.downloads.append(url)
        error = self.fail(url)
        if error is not None:
            raise error
        data = self.files[url.split("?")[0]]
        target = Path(dest)
        tmp = target.with_name(f".{target.name}.x1y2.part")
        tmp.write_bytes(data)
        self.before_rename(url)
        os.replace(tmp, target)
        if progress is not None:
            progress(len(data))
        return len(data)


@pytest.fixture
def client() -> FakeClient:
    fake = FakeClient()
    for case in ("p1", "p2"):
        fake.add_image(f"img-{case}", ["heat.mhd", "heat.zraw"])
        fake.add_file(f"report-{case}", json.dumps({"case": case}).encode())
    return fake


def _jobs() -> dict[str, Job]:
    return {
        "p1": _job("j1", heatmap="img-p1", report="report-p1"),
        "p2": _job("j2", heatmap="img-p2", report="report-p2"),
        "p3": _job("j3", status="Failed"),
    }


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != STATE_NAME
    }


def test_safe_relative() -> None:
    assert safe_relative("images/heatmap", what="x") == PurePosixPath("images/heatmap")
    for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a\\b", "a/"]:
        with pytest.raises(UnsafePathError):
            safe_relative(bad, what="x")


def test_url_key_drops_the_query() -> None:
    assert url_key("http://h:1/media/a.json?X-Amz-Signature=1") == "http://h:1/media/a.json"


def test_plan_tasks_layout() -> None:
    tasks = plan_tasks(_jobs())
    assert [type(t).__name__ for t in tasks] == [
        "ValueTask", "ImageTask", "ValueTask", "FileTask",
    ] * 2
    first = tasks[:4]
    assert first[0] == ValueTask("p1", PurePosixPath("p1/findings.json"),
                                 value_bytes({"nodules": [{"x": 1.5}], "ok": True}))
    assert first[1] == ImageTask("p1", PurePosixPath("p1/images/heatmap"),
                                 f"{API}cases/images/img-p1/")
    assert first[3] == FileTask("p1", PurePosixPath("p1/report.json"),
                                "http://127.0.0.1:9/media/report-p1.json")


def test_plan_tasks_refuses_escapes_and_collisions() -> None:
    evil = Job.from_json({"pk": "j", "api_url": f"{API}algorithms/jobs/j/", "status": "Succeeded",
                          "outputs": [{"interface": _socket("a", "Value", "../../etc/x"),
                                       "value": 1}]})
    with pytest.raises(UnsafePathError):
        plan_tasks({"c": evil})
    clash = Job.from_json({"pk": "j", "api_url": f"{API}algorithms/jobs/j/", "status": "Succeeded",
                           "outputs": [{"interface": _socket("a", "Value", "same.json"), "value": 1},
                                       {"interface": _socket("b", "Value", "same.json"), "value": 2}]})
    with pytest.raises(UnsafePathError, match="both"):
        plan_tasks({"c": clash})


def test_empty_relative_path_falls_back_to_the_slug() -> None:
    job = Job.from_json({"pk": "j", "api_url": f"{API}algorithms/jobs/j/", "status": "Succeeded",
                         "outputs": [
                             {"interface": _socket("v", "Value", ""), "value": 1},
                             {"interface": _socket("f", "File", ""), "file": "http://h/f"},
                             {"interface": _socket("i", "Image", ""), "image": "http://h/i/"},
                             {"interface": _socket("none", "File", ""), "file": None}]})
    targets = {str(getattr(t, "target", getattr(t, "directory", ""))) for t in plan_tasks({"c": job})}
    assert targets == {"c/v.json", "c/f", "c/images/i"}


def test_download_layout_and_bytes(tmp_path: Path, client: FakeClient) -> None:
    summary = download_outputs(client, _jobs(), tmp_path, workers=4)
    assert summary.failures == []
    assert summary.files_downloaded == 6 and summary.values_written == 4
    assert (tmp_path / "p1/nodule-count.json").read_text() == "3\n"
    assert json.loads((tmp_path / "p1/findings.json").read_text()) == {
        "nodules": [{"x": 1.5}], "ok": True}
    assert (tmp_path / "p2/report.json").read_bytes() == b'{"case": "p2"}'
    heat = client.files["http://127.0.0.1:9/media/images/img-p1/heat.zraw"]
    assert (tmp_path / "p1/images/heatmap/heat.zraw").read_bytes() == heat
    assert not (tmp_path / "p3").exists()  # Failed: nothing to download
    assert not list(tmp_path.rglob("*.part"))
    state = DownloadState(tmp_path)
    try:
        record = state.files["p1/images/heatmap/heat.zraw"]
        assert record.size == len(heat)
        assert record.sha256 == "sha256:" + hashlib.sha256(heat).hexdigest()
        assert state.images["p1/images/heatmap"].files == (
            "p1/images/heatmap/heat.mhd", "p1/images/heatmap/heat.zraw")
    finally:
        state.close()


def test_second_run_downloads_nothing_and_asks_for_no_image(tmp_path: Path,
                                                            client: FakeClient) -> None:
    download_outputs(client, _jobs(), tmp_path)
    before = _tree(tmp_path)
    client.downloads.clear()
    client.image_requests.clear()
    summary = download_outputs(client, _jobs(), tmp_path)
    assert client.downloads == [] and client.image_requests == []
    assert summary.files_downloaded == 0 and summary.files_skipped == 6
    assert summary.values_written == 0 and summary.values_unchanged == 4
    assert _tree(tmp_path) == before


def test_changed_or_truncated_files_are_fetched_again(tmp_path: Path, client: FakeClient) -> None:
    download_outputs(client, _jobs(), tmp_path)
    before = _tree(tmp_path)
    (tmp_path / "p1/report.json").write_bytes(b"{}")  # size differs
    zraw = tmp_path / "p2/images/heatmap/heat.zraw"
    data = bytearray(zraw.read_bytes())
    data[0] ^= 1
    zraw.write_bytes(bytes(data))  # same size, other mtime, other content
    mhd = tmp_path / "p2/images/heatmap/heat.mhd"
    os.utime(mhd, ns=(1, 1))  # only touched: the hash shows it is intact
    (tmp_path / "p1/nodule-count.json").write_text("99\n")
    client.downloads.clear()
    summary = download_outputs(client, _jobs(), tmp_path)
    assert sorted(u.rsplit("/", 1)[-1] for u in client.downloads) == ["heat.zraw", "report-p1.json"]
    assert summary.values_written == 1
    assert _tree(tmp_path) == before


def test_a_new_job_replaces_the_old_results(tmp_path: Path, client: FakeClient) -> None:
    download_outputs(client, _jobs(), tmp_path)
    client.add_file("report-p1-v2", b'{"v": 2}')
    jobs = _jobs()
    jobs["p1"] = _job("j1b", heatmap="img-p1", report="report-p1-v2")
    client.downloads.clear()
    download_outputs(client, jobs, tmp_path)
    assert [u.rsplit("/", 1)[-1] for u in client.downloads] == ["report-p1-v2.json"]
    assert (tmp_path / "p1/report.json").read_bytes() == b'{"v": 2}'


def test_a_new_image_replaces_the_old_images_files(tmp_path: Path, client: FakeClient) -> None:
    download_outputs(client, _jobs(), tmp_path)
    (tmp_path / "p1/images/heatmap/notes.txt").write_text("mine")  # the user's own file
    client.add_image("img-p1-new", ["other.mha"])
    jobs = _jobs()
    jobs["p1"] = _job("j1b", heatmap="img-p1-new", report="report-p1")
    download_outputs(client, jobs, tmp_path)
    assert sorted(p.name for p in (tmp_path / "p1/images/heatmap").iterdir()) == [
        "notes.txt", "other.mha"]
    client.downloads.clear()
    assert download_outputs(client, jobs, tmp_path).files_downloaded == 0


def test_failures_are_collected_and_the_rest_completes(tmp_path: Path, client: FakeClient) -> None:
    client.fail = lambda url: TransportError("reset") if "report-p2" in url else None
    del client.images[f"{API}cases/images/img-p1/"]
    summary = download_outputs(client, _jobs(), tmp_path)
    assert sorted(path for path, _ in summary.failures) == ["p1/images/heatmap", "p2/report.json"]
    assert (tmp_path / "p2/images/heatmap/heat.mhd").exists()
    # next run (server fixed) fetches exactly what is missing
    client.fail = lambda url: None
    client.add_image("img-p1", ["heat.mhd", "heat.zraw"])
    client.downloads.clear()
    summary = download_outputs(client, _jobs(), tmp_path)
    assert summary.failures == []
    assert sorted(u.rsplit("/", 1)[-1] for u in client.downloads) == [
        "heat.mhd", "heat.zraw", "report-p2.json"]


class Crash(BaseException):
    """Stands in for kill -9: escapes everything, like the process vanishing."""


def test_resume_after_a_crash_mid_download(tmp_path: Path, client: FakeClient) -> None:
    reference = tmp_path / "ref"
    download_outputs(client, _jobs(), reference)
    expected = _tree(reference)

    out = tmp_path / "out"
    seen = 0

    def crash_on_third(url: str) -> None:
        # from the third rename on the process is "dead": nothing more completes
        nonlocal seen
        seen += 1
        if seen >= 3:
            raise Crash()

    client.before_rename = crash_on_third
    with pytest.raises(Crash):
        download_outputs(client, _jobs(), out, workers=1)
    assert list(out.rglob("*.part"))  # the crash left a temp file behind
    client.before_rename = lambda url: None
    client.downloads.clear()
    summary = download_outputs(client, _jobs(), out)
    assert summary.failures == []
    assert summary.files_downloaded == len(client.downloads) == 4  # 2 were complete
    assert _tree(out) == expected
    assert not list(out.rglob("*.part"))


def test_torn_state_line_is_ignored(tmp_path: Path, client: FakeClient) -> None:
    download_outputs(client, _jobs(), tmp_path)
    state_file = tmp_path / STATE_NAME
    state_file.write_bytes(state_file.read_bytes() + b'{"type":"file","path":"p1/rep')
    client.downloads.clear()
    summary = download_outputs(client, _jobs(), tmp_path)
    assert client.downloads == [] and summary.files_skipped == 6
    assert all(json.loads(line) for line in state_file.read_text().splitlines())


def test_progress_events(tmp_path: Path, client: FakeClient) -> None:
    events: list[tuple[str, int, bool]] = []
    totals: list[int] = []
    received: list[int] = []

    def record(event: Event) -> None:
        if isinstance(event, DownloadPlanned):
            totals.append(event.files)
        elif isinstance(event, FileDone):
            events.append((event.path, event.size, event.skipped))
        elif isinstance(event, BytesReceived):
            received.append(event.count)

    download_outputs(client, _jobs(), tmp_path, on_event=record)
    assert sum(totals) == len(events) == 6
    assert sum(received) == sum(size for _, size, _ in events)
    events.clear()
    totals.clear()
    download_outputs(client, _jobs(), tmp_path, on_event=record)
    assert sum(totals) == 6 and all(skipped for _, _, skipped in events)


# --- issue 14: missing outputs, untrusted records, linked folders --------------------------


def test_missing_outputs_are_judged_against_the_jobs_interface() -> None:
    from gcbatch.api.models import Algorithm
    from gcbatch.engine.downloads import missing_outputs

    def sockets(*slugs: str) -> list[dict[str, Any]]:
        return [_socket(s, "Value", f"{s}.json") for s in slugs]

    algorithm = Algorithm.from_json({
        "pk": "a", "api_url": f"{API}algorithms/a/", "slug": "alg", "title": "A",
        "interfaces": [{"inputs": sockets("age"), "outputs": sockets("risk", "report")},
                       {"inputs": sockets("ct"), "outputs": sockets("heatmap")}]})
    age = {"interface": _socket("age", "Value", "age.json"), "value": 3}
    complete = Job.from_json({"pk": "1", "api_url": f"{API}algorithms/jobs/1/",
                              "status": "Succeeded", "inputs": [age], "outputs": [
                                  {"interface": _socket("risk", "Value", "r.json"), "value": 1},
                                  {"interface": _socket("report", "Value", "r.json"),
                                   "value": None}]})
    empty_file = Job.from_json({"pk": "2", "api_url": f"{API}algorithms/jobs/2/",
                                "status": "Succeeded", "inputs": [age], "outputs": [
                                    {"interface": _socket("report", "File", "r.json"),
                                     "file": None}]})
    failed = Job.from_json({"pk": "3", "api_url": f"{API}algorithms/jobs/3/",
                            "status": "Failed", "inputs": [age], "outputs": []})
    jobs = {"ok": complete, "empty": empty_file, "failed": failed}
    assert missing_outputs(jobs, algorithm) == [("empty", "report"), ("empty", "risk")]
    assert missing_outputs(jobs, None) == []


def test_a_record_line_is_believed_only_for_plain_paths_inside_the_folder(
    tmp_path: Path
) -> None:
    lines = [
        {"type": "file", "path": "case-1/a.json", "source": "s", "size": 1, "mtime_ns": 2,
         "sha256": "x"},
        {"type": "file", "path": "../outside.json", "source": "s", "size": 1,
         "mtime_ns": 2, "sha256": "x"},
        {"type": "file", "path": "case-1/b.json", "source": "s", "size": "1",
         "mtime_ns": 2, "sha256": "x"},
        {"type": "image", "path": "case-1/images/h", "source": "s",
         "files": ["case-1/images/h/x.mha"]},
        {"type": "image", "path": "case-2/images/h", "source": "s",
         "files": ["case-2/images/h/../../../../victim"]},
        {"type": "image", "path": "case-3/images/h", "source": "s",
         "files": ["case-9/elsewhere.mha"]},
    ]
    (tmp_path / STATE_NAME).write_text("".join(json.dumps(x) + "\n" for x in lines))
    state = DownloadState(tmp_path)
    try:
        assert sorted(state.files) == ["case-1/a.json"]
        assert sorted(state.images) == ["case-1/images/h"]
    finally:
        state.close()


def test_nothing_is_written_below_a_case_folder_that_is_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "case-1").symlink_to(elsewhere)
    client = FakeClient()
    client.add_image("img-1", ["heat.mha"])
    client.add_file("report-1", b"{}")
    summary = download_outputs(client, {"case-1": _job("j1")}, out)  # type: ignore[arg-type]
    assert list(elsewhere.iterdir()) == []
    assert client.downloads == []
    assert len(summary.failures) == 4  # two values, a file, an image file
    assert all("is a symbolic link" in error for _, error in summary.failures)
