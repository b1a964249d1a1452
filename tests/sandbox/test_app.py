"""SandboxApp behaviour, driven through ``handle`` with a fake clock (no sockets).

The recorded exchanges are replayed in test_replay.py; these tests cover the rules the
recording shows only once (or not at all): limits, the duplicate check, the lifecycle,
uploads end to end, filters, the admin read-out, persistence and concurrency.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gcbatch.sandbox import lifecycle as lc
from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.http import Request, Response
from gcbatch.sandbox.seed import DEFAULT_SEED, SEEDS_DIR

BASE = "http://127.0.0.1:8123"
IMAGE = (SEEDS_DIR / "images" / "p002.mha").read_bytes()


@dataclass
class Reply:
    status: int
    body: Any
    response: Response

    def header(self, name: str) -> str:
        return self.response.header(name)


class Client:
    def __init__(self, app: SandboxApp, token: str | None = "demo-token") -> None:
        self.app = app
        self.token = token

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        token: str | bool | None = True,
    ) -> Reply:
        parts = urlsplit(url if url.startswith("http") else BASE + url)
        query = {k: tuple(v) for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {"accept": "application/json"}
        use = self.token if token is True else token
        if use:
            headers["authorization"] = f"Bearer {use}"
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        if body is not None:
            headers["content-type"] = "application/json"
        response = self.app.handle(Request(method, parts.path, query, headers, data, BASE))
        try:
            parsed = json.loads(response.body) if response.body else None
        except ValueError:
            parsed = response.body
        return Reply(response.status, parsed, response)

    def get(self, url: str, **kw: Any) -> Reply:
        return self.call("GET", url, **kw)

    def post(self, url: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("POST", url, body, **kw)

    def patch(self, url: str, body: Any = None, **kw: Any) -> Reply:
        return self.call("PATCH", url, body, **kw)

    # helpers ---------------------------------------------------------------------------

    def algorithm(self, slug: str) -> str:
        reply = self.get(f"/api/v1/algorithms/?slug={slug}")
        assert reply.status == 200 and reply.body["count"] == 1
        return str(reply.body["results"][0]["api_url"])

    def upload(self, name: str, data: bytes, *, complete: bool = True) -> dict[str, Any]:
        created = self.post("/api/v1/uploads/", {"filename": name})
        assert created.status == 201, created.body
        up = created.body
        base = f"/api/v1/uploads/{up['pk']}/{up['s3_upload_id']}"
        urls = self.patch(f"{base}/generate-presigned-urls/", {"part_numbers": [1]})
        assert urls.status == 200, urls.body
        put = self.call("PUT", urls.body["presigned_urls"]["1"], raw=data, token=None)
        assert put.status == 200
        if complete:
            done = self.patch(
                f"{base}/complete-multipart-upload/",
                {"parts": [{"ETag": put.header("ETag"), "PartNumber": 1}]},
            )
            assert done.status == 200, done.body
            assert done.body["status"] == "Completed"
        return dict(up)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


FAST = SandboxConfig(
    validating_seconds=1,
    queued_seconds=1,
    provisioned_seconds=1,
    executing_seconds=1,
    executed_seconds=1,
)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> Iterator[SandboxApp]:
    sandbox = SandboxApp(None, config=FAST, clock=clock)
    yield sandbox
    sandbox.close()


@pytest.fixture
def demo(app: SandboxApp) -> Client:
    return Client(app)


def make(clock: Clock, **changes: Any) -> SandboxApp:
    return SandboxApp(None, config=FAST.replace(**changes), clock=clock)


def value_job(
    client: Client, age: int = 60, volume: float = 3.5, token: bool | str = True
) -> Reply:
    return client.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": client.algorithm("risk-calculator"),
            "inputs": [
                {"interface": "age", "value": age},
                {"interface": "lung-volume", "value": volume},
            ],
        },
        token=token,
    )


# -- auth and discovery ---------------------------------------------------------------------


def test_gcapi_version_is_current(demo: Client) -> None:
    reply = demo.get("/api/v1/gcapi/", token=None)
    assert reply.status == 200
    major, minor, patch = (int(x) for x in reply.body["latest_version"].split("."))
    assert (major, minor, patch) >= (0, 16, 1)


def test_authentication_rules(demo: Client) -> None:
    anonymous = demo.get("/api/v1/algorithms/jobs/", token=None)
    assert anonymous.status == 200 and anonymous.body["count"] == 0
    refused = demo.post("/api/v1/algorithms/jobs/", {"algorithm": "x", "inputs": []}, token=None)
    assert refused.status == 401
    assert refused.body == {"detail": "Authentication credentials were not provided."}
    assert refused.header("WWW-Authenticate") == "Bearer"
    bad = demo.get("/api/v1/algorithms/jobs/", token="nope")
    assert (bad.status, bad.body) == (401, {"detail": "Invalid token."})
    # The keyword is compared without case (gcapi sends "BEARER").
    upper = demo.app.handle(
        Request("GET", "/api/v1/algorithms/", {}, {"authorization": "BEARER demo-token"}, b"", BASE)
    )
    assert json.loads(upper.body)["count"] == 3
    assert demo.get("/api/v1/uploads/", token=None).body["count"] == 0


def test_algorithms_sockets_and_archives(demo: Client) -> None:
    algs = demo.get("/api/v1/algorithms/")
    assert [a["slug"] for a in algs.body["results"]] == [
        "lung-nodule-detector", "dicom-set-reader", "risk-calculator"]
    lnd = algs.body["results"][0]
    assert [[s["slug"] for s in i["inputs"]] for i in lnd["interfaces"]] == [
        ["ct-image"],
        ["ct-image", "lung-volume"],
        ["ct-image", "lung-volume", "clinical-info"],
    ]
    assert demo.get(lnd["api_url"]).body["slug"] == "lung-nodule-detector"
    sockets = demo.get("/api/v1/components/interfaces/?slug=lab-report").body["results"]
    assert sockets[0]["super_kind"] == "File" and sockets[0]["relative_path"] == "lab-report.json"
    pk = sockets[0]["pk"]
    assert demo.get(f"/api/v1/components/interfaces/{pk}/").body["slug"] == "lab-report"
    archive = demo.get("/api/v1/archives/?slug=lung-archive").body["results"][0]
    items = demo.get(f"/api/v1/archives/items/?archive={archive['pk']}").body
    assert items["count"] == 3
    value = {v["interface"]["slug"]: v for v in items["results"][0]["values"]}
    assert value["age"]["value"] in (64, 57, 71)
    assert value["ct-image"]["socket"] == value["ct-image"]["interface"]
    image = demo.get(value["ct-image"]["image"])
    assert image.status == 200 and image.body["name"].endswith(".mha")
    assert image.body["shape"] == [8, 16, 16]
    redirect = demo.get(image.body["files"][0]["file"])
    assert redirect.status == 302
    data = demo.get(redirect.header("Location"), token=None)
    assert data.status == 200 and data.response.body.startswith(b"ObjectType = Image")
    assert data.header("ETag") == '"' + hashlib.md5(data.response.body).hexdigest() + '"'
    bad = demo.get("/api/v1/archives/items/?archive=nope")
    assert bad.status == 400


# -- creating jobs --------------------------------------------------------------------------


def test_job_post_field_errors_come_together(demo: Client) -> None:
    both = demo.post("/api/v1/algorithms/jobs/", {})
    assert both.status == 400
    assert both.body == {
        "algorithm": ["This field is required."],
        "inputs": ["This field is required."],
    }
    slug = demo.post("/api/v1/algorithms/jobs/", {"algorithm": "risk-calculator", "inputs": []})
    assert slug.body == {"algorithm": ["Invalid hyperlink - No URL match."]}
    missing = demo.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": f"{BASE}/api/v1/algorithms/00000000-0000-4000-8000-000000000000/",
            "inputs": [],
        },
    )
    assert missing.body == {"algorithm": ["Invalid hyperlink - Object does not exist."]}
    parse = demo.call("POST", "/api/v1/algorithms/jobs/", raw=b"{not json")
    assert parse.status == 400 and parse.body["detail"].startswith("JSON parse error")


def test_each_input_is_checked_on_its_own(demo: Client) -> None:
    alg = demo.algorithm("risk-calculator")
    reply = demo.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": alg,
            "inputs": [
                {"interface": "age", "value": 3},
                {"interface": "no-such", "value": 1},
                {"interface": "age", "value": "x"},
                {"interface": "age"},
                {"interface": "lab-report", "value": {"a": 1}},
                {"interface": "ct-image", "value": 1},
            ],
        },
    )
    assert reply.status == 400
    assert reply.body == {
        "inputs": [
            {},
            {"interface": ["Object with slug=no-such does not exist."]},
            {"__all__": ["JSON does not fulfill schema: instance 'x' is not of type 'integer'"]},
            {
                "non_field_errors": [
                    "You must provide at least one of ['image', 'value', 'file', "
                    "'user_upload', 'upload_session', ('image_name', 'user_uploads')]."
                ]
            },
            {"non_field_errors": ["user_upload or file is required for interface kind JSON"]},
            {
                "non_field_errors": [
                    "upload_session, user_uploads or image are required for interface kind IMG"
                ]
            },
        ]
    }


def test_interfaces_must_match_exactly(demo: Client) -> None:
    reply = demo.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": demo.algorithm("risk-calculator"),
            "inputs": [{"interface": "age", "value": 3}],
        },
    )
    assert reply.status == 400
    assert reply.body == {
        "non_field_errors": [
            "The set of inputs provided does not match any of the algorithm's interfaces. This "
            "algorithm supports the following input combinations: Interface 1: Age (Integer) and "
            "Lung Volume (Float) and Interface 2: Age (Integer), Lung Volume (Float), and Lab "
            "Report (Anything)"
        ]
    }


def test_created_job_answer_and_duplicate_check(
    app: SandboxApp, demo: Client, clock: Clock
) -> None:
    first = value_job(demo)
    assert first.status == 201
    assert first.body["status"] == "Validating inputs"
    assert [(i["interface"], i["value"]) for i in first.body["inputs"]] == [
        ("age", 60),
        ("lung-volume", 3.5),
    ]
    # While the first job runs, after it ends, and for another user: always a duplicate.
    dup = "A result for these inputs with the current image and model already exists."
    assert value_job(demo).body == {"non_field_errors": [dup]}
    clock.advance(100)
    assert value_job(demo).body == {"non_field_errors": [dup]}
    assert value_job(Client(app, "other-token")).body == {"non_field_errors": [dup]}
    assert value_job(demo, age=61).status == 201
    # The same value CIV is reused by the platform: same input pk.
    again = value_job(demo, age=60, volume=4.0)
    assert again.body["inputs"][0]["pk"] == first.body["inputs"][0]["pk"]


def test_duplicate_check_can_be_switched_off(clock: Clock) -> None:
    app = make(clock, dedup=False)
    try:
        client = Client(app)
        assert value_job(client).status == 201
        assert value_job(client).status == 201
    finally:
        app.close()


def test_limits_active_jobs_and_credits(clock: Clock) -> None:
    app = make(clock, max_active_jobs=2, credits_per_month=100, job_cost=30)
    try:
        client = Client(app)
        assert value_job(client, age=1).status == 201
        assert value_job(client, age=2).status == 201
        busy = value_job(client, age=3)
        assert busy.body == {
            "non_field_errors": [
                "You have too many active jobs, please try again after they have completed"
            ]
        }
        clock.advance(10)  # both end; slots free again
        assert value_job(client, age=3).status == 201
        broke = value_job(client, age=4)
        assert broke.body == {"non_field_errors": ["You have run out of algorithm credits"]}
        # Restore credits at run time through the admin endpoint.
        ok = client.post("/_sandbox/config", {"reset_credits": "demo", "credits_per_month": 1000})
        assert ok.status == 200 and ok.body["config"]["credits_per_month"] == 1000
        assert value_job(client, age=4).status == 201
        # Credits are per user.
        assert value_job(Client(app, "other-token"), age=5).status == 201
    finally:
        app.close()


def test_unrunnable_algorithm(tmp_path: Path, clock: Clock) -> None:
    seed = {
        "users": [{"name": "u", "token": "t"}],
        "sockets": [{"slug": "n", "kind": "Integer"}],
        "algorithms": [{"slug": "a", "active_image": False, "interfaces": [{"inputs": ["n"]}]}],
    }
    app = SandboxApp(None, seed, clock=clock)
    try:
        client = Client(app, "t")
        reply = client.post(
            "/api/v1/algorithms/jobs/",
            {"algorithm": client.algorithm("a"), "inputs": [{"interface": "n", "value": 1}]},
        )
        assert reply.body == {"non_field_errors": ["Algorithm image is not ready to be used"]}
    finally:
        app.close()


def test_changing_a_job_is_forbidden(demo: Client) -> None:
    job = value_job(demo).body
    url = f"/api/v1/algorithms/jobs/{job['pk']}/"
    for method in ("PUT", "PATCH", "DELETE"):
        reply = demo.call(method, url, {"status": "Cancelled"})
        assert reply.status == 403
        assert reply.body == {"detail": "You do not have permission to perform this action."}
    assert demo.call("DELETE", url, token=None).status == 401
    assert demo.get("/api/v1/algorithms/jobs/not-a-uuid/").body == {"detail": "Not found."}
    other = Client(demo.app, "other-token").get(url)
    assert (other.status, other.body) == (404, {"detail": "No Job matches the given query."})


# -- lifecycle and outputs --------------------------------------------------------------------


def test_value_job_walks_the_recorded_statuses_and_outputs_are_derived(
    demo: Client, clock: Clock
) -> None:
    job = value_job(demo).body
    url = f"/api/v1/algorithms/jobs/{job['pk']}/"
    seen = []
    for _ in range(6):
        body = demo.get(url).body
        seen.append(body["status"])
        clock.advance(1.0)
    assert seen == [*lc.PHASES, lc.SUCCEEDED]
    body = demo.get(url).body
    assert body["exec_duration"] == "P0DT00H00M01S"
    outputs = {o["interface"]["slug"]: o for o in body["outputs"]}
    assert set(outputs) == {"malignancy-risk", "findings", "report", "heatmap"}
    seed = demo.app.seed
    sockets = [seed.socket(s) for s in ("malignancy-risk", "findings", "report", "heatmap")]
    expected = {
        d.socket: d
        for d in lc.derive_outputs(
            "risk-calculator", [s for s in sockets if s], {"age": 60, "lung-volume": 3.5}
        )
    }
    assert outputs["malignancy-risk"]["value"] == expected["malignancy-risk"].value
    assert outputs["findings"]["value"] == expected["findings"].value
    redirect = demo.get(outputs["report"]["file"])
    assert redirect.status == 302
    report = demo.get(redirect.header("Location"), token=None)
    assert report.response.body == expected["report"].data
    assert report.header("Content-Type") == "application/json"
    image = demo.get(outputs["heatmap"]["image"]).body
    data = demo.get(demo.get(image["files"][0]["file"]).header("Location"), token=None)
    assert data.response.body == expected["heatmap"].data
    found = demo.get(f"/api/v1/algorithms/jobs/?output_image={image['pk']}").body
    assert [j["pk"] for j in found["results"]] == [job["pk"]]


def test_failures_follow_the_rate(clock: Clock) -> None:
    app = make(clock, failure_rate=1.0)
    try:
        client = Client(app)
        job = value_job(client).body
        clock.advance(10)
        body = client.get(f"/api/v1/algorithms/jobs/{job['pk']}/").body
        assert body["status"] == "Failed" and body["outputs"] == []
        assert client.get("/_sandbox/stats").body["users"]["demo"]["active_jobs"] == 0
    finally:
        app.close()


def test_image_upload_job_end_to_end(demo: Client, clock: Clock) -> None:
    up = demo.upload("scan.gcb-1234.mha", IMAGE)
    created = demo.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": demo.algorithm("lung-nodule-detector"),
            "inputs": [
                {"interface": "ct-image", "user_uploads": [up["api_url"]]},
                {"interface": "lung-volume", "value": 2.0},
            ],
        },
    )
    assert created.status == 201
    assert [i["interface"] for i in created.body["inputs"]] == ["lung-volume"]
    # The upload is still listed until validation consumes it.
    assert demo.get("/api/v1/uploads/").body["count"] == 1
    clock.advance(1.5)
    body = demo.get(f"/api/v1/algorithms/jobs/{created.body['pk']}/").body
    assert body["status"] == "Queued"
    assert sorted(i["interface"]["slug"] for i in body["inputs"]) == ["ct-image", "lung-volume"]
    assert demo.get("/api/v1/uploads/").body["count"] == 0
    assert demo.get(up["api_url"]).status == 404
    images = demo.get("/api/v1/cases/images/?name=scan.gcb-1234.mha").body
    assert images["count"] == 1
    image_pk = images["results"][0]["pk"]
    by_input = demo.get(f"/api/v1/algorithms/jobs/?input_image={image_pk}").body
    assert [j["pk"] for j in by_input["results"]] == [created.body["pk"]]
    # Re-using the consumed upload: the recorded message.
    reuse = demo.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": demo.algorithm("lung-nodule-detector"),
            "inputs": [{"interface": "ct-image", "user_uploads": [up["api_url"]]}],
        },
    )
    assert reuse.body == {
        "inputs": [{"user_uploads": ["Invalid hyperlink - Object does not exist."]}]
    }
    # The image made from the upload can be reused by URL (and then dedup applies).
    image_url = images["results"][0]["api_url"]
    by_url = {
        "algorithm": demo.algorithm("lung-nodule-detector"),
        "inputs": [{"interface": "ct-image", "image": image_url}],
    }
    assert demo.post("/api/v1/algorithms/jobs/", by_url).status == 201
    assert demo.post("/api/v1/algorithms/jobs/", by_url).status == 400


@pytest.mark.parametrize(
    ("stuck_bug", "expected"),
    [(True, "Validating inputs"), (False, "Cancelled")],
)
def test_json_file_that_is_not_json(clock: Clock, stuck_bug: bool, expected: str) -> None:
    app = make(clock, emulate_stuck_json_bug=stuck_bug)
    try:
        client = Client(app)
        up = client.upload("report.json", b"{not json")
        job = client.post(
            "/api/v1/algorithms/jobs/",
            {
                "algorithm": client.algorithm("risk-calculator"),
                "inputs": [
                    {"interface": "age", "value": 1},
                    {"interface": "lung-volume", "value": 1},
                    {"interface": "lab-report", "user_upload": up["api_url"]},
                ],
            },
        ).body
        clock.advance(100)
        body = client.get(f"/api/v1/algorithms/jobs/{job['pk']}/").body
        assert body["status"] == expected
        active = client.get("/_sandbox/stats").body["users"]["demo"]["active_jobs"]
        assert active == (1 if stuck_bug else 0)  # the stuck job holds a slot
    finally:
        app.close()


def test_bad_or_incomplete_uploads_cancel_the_job(demo: Client, clock: Clock) -> None:
    not_image = demo.upload("x.mha", b"this is not an image\n")
    incomplete = demo.upload("y.mha", IMAGE, complete=False)
    alg = demo.algorithm("lung-nodule-detector")
    jobs = [
        demo.post(
            "/api/v1/algorithms/jobs/",
            {
                "algorithm": alg,
                "inputs": [{"interface": "ct-image", "user_uploads": [up["api_url"]]}],
            },
        ).body
        for up in (not_image, incomplete)
    ]
    clock.advance(100)
    for job in jobs:
        body = demo.get(f"/api/v1/algorithms/jobs/{job['pk']}/").body
        assert (body["status"], body["inputs"], body["outputs"]) == ("Cancelled", [], [])
    assert demo.get("/api/v1/uploads/").body["count"] == 2  # not consumed


def test_file_upload_job_reads_back_the_same_bytes(demo: Client, clock: Clock) -> None:
    payload = b'{"hb": 13.5}'
    up = demo.upload("lab.json", payload)
    job = demo.post(
        "/api/v1/algorithms/jobs/",
        {
            "algorithm": demo.algorithm("risk-calculator"),
            "inputs": [
                {"interface": "age", "value": 50},
                {"interface": "lung-volume", "value": 2},
                {"interface": "lab-report", "user_upload": up["api_url"]},
            ],
        },
    ).body
    clock.advance(100)
    body = demo.get(f"/api/v1/algorithms/jobs/{job['pk']}/").body
    file_input = next(i for i in body["inputs"] if i["interface"]["slug"] == "lab-report")
    assert file_input["file"].endswith("/lab.json")
    data = demo.get(demo.get(file_input["file"]).header("Location"), token=None)
    assert data.response.body == payload
    assert Client(demo.app, "other-token").get(file_input["file"]).status == 404


# -- uploads ----------------------------------------------------------------------------


def test_upload_validation(demo: Client) -> None:
    cases = [
        ({}, {"filename": ["This field is required."]}),
        ({"filename": ""}, {"filename": ["This field may not be blank."]}),
        ({"filename": "a/b.mha"}, {"filename": ["a/b.mha is not a valid filename"]}),
        (
            {"filename": "x" * 129},
            {"filename": ["Ensure this field has no more than 128 characters."]},
        ),
    ]
    for body, expected in cases:
        reply = demo.post("/api/v1/uploads/", body)
        assert (reply.status, reply.body) == (400, expected)


def test_upload_flow_rules(demo: Client, clock: Clock) -> None:
    up = demo.post("/api/v1/uploads/", {"filename": "big.bin"}).body
    base = f"/api/v1/uploads/{up['pk']}/{up['s3_upload_id']}"
    assert up["key"] == f"uploads/8/{up['pk']}"
    for numbers, expected in (
        ([0], {"part_numbers": {"0": ["Ensure this value is greater than or equal to 1."]}}),
        (
            [1, 10001],
            {"part_numbers": {"1": ["Ensure this value is less than or equal to 10000."]}},
        ),
    ):
        reply = demo.patch(f"{base}/generate-presigned-urls/", {"part_numbers": numbers})
        assert (reply.status, reply.body) == (400, expected)
    urls = demo.patch(f"{base}/generate-presigned-urls/", {"part_numbers": [1, 2]}).body[
        "presigned_urls"
    ]
    assert set(urls) == {"1", "2"}
    part1 = b"a" * (5 * 1024 * 1024)
    put1 = demo.call("PUT", urls["1"], raw=part1, token=None)
    put2 = demo.call("PUT", urls["2"], raw=b"tail", token=None)
    assert put1.header("ETag") == '"' + hashlib.md5(part1).hexdigest() + '"'
    parts = demo.get(f"{base}/list-parts/").body["parts"]
    assert [(p["PartNumber"], p["Size"]) for p in parts] == [(1, len(part1)), (2, 4)]
    bad = demo.patch(
        f"{base}/complete-multipart-upload/", {"parts": [{"ETag": '"deadbeef"', "PartNumber": 1}]}
    )
    assert bad.status == 500 and bad.header("Content-Type").startswith("text/plain")
    done = demo.patch(
        f"{base}/complete-multipart-upload/",
        {
            "parts": [
                {"ETag": put1.header("ETag"), "PartNumber": 1},
                {"ETag": put2.header("ETag"), "PartNumber": 2},
            ]
        },
    )
    assert done.status == 200 and done.body["status"] == "Completed"
    assert demo.patch(f"{base}/complete-multipart-upload/", {"parts": []}).status == 500
    assert demo.patch(f"{base}/abort-multipart-upload/", {}).status == 500
    wrong = demo.patch(
        f"/api/v1/uploads/{up['pk']}/wrongid/generate-presigned-urls/", {"part_numbers": [1]}
    )
    assert (wrong.status, wrong.body) == (404, {"detail": "Not found."})
    other = Client(demo.app, "other-token").get(f"/api/v1/uploads/{up['pk']}/")
    assert other.body == {"detail": "No UserUpload matches the given query."}
    # Small parts other than the last are refused, as S3 does.
    up2 = demo.post("/api/v1/uploads/", {"filename": "two.bin"}).body
    base2 = f"/api/v1/uploads/{up2['pk']}/{up2['s3_upload_id']}"
    urls2 = demo.patch(f"{base2}/generate-presigned-urls/", {"part_numbers": [1, 2]}).body[
        "presigned_urls"
    ]
    e1 = demo.call("PUT", urls2["1"], raw=b"small", token=None).header("ETag")
    e2 = demo.call("PUT", urls2["2"], raw=b"small", token=None).header("ETag")
    small = demo.patch(
        f"{base2}/complete-multipart-upload/",
        {"parts": [{"ETag": e1, "PartNumber": 1}, {"ETag": e2, "PartNumber": 2}]},
    )
    assert small.status == 500
    aborted = demo.patch(f"{base2}/abort-multipart-upload/", {})
    assert aborted.body["status"] == "Aborted" and aborted.body["s3_upload_id"] == ""


def test_presigned_urls_are_signed_and_expire(demo: Client, clock: Clock) -> None:
    up = demo.post("/api/v1/uploads/", {"filename": "a.bin"}).body
    url = demo.patch(
        f"/api/v1/uploads/{up['pk']}/{up['s3_upload_id']}/generate-presigned-urls/",
        {"part_numbers": [1]},
    ).body["presigned_urls"]["1"]
    tampered = url.replace("partNumber=1", "partNumber=2")
    assert demo.call("PUT", tampered, raw=b"x", token=None).status == 403
    clock.advance(3601)
    assert demo.call("PUT", url, raw=b"x", token=None).status == 403


def test_storage_can_refuse_a_token_like_s3(clock: Clock) -> None:
    app = make(clock, storage_rejects_authorization=True)
    try:
        client = Client(app)
        up = client.post("/api/v1/uploads/", {"filename": "a.bin"}).body
        url = client.patch(
            f"/api/v1/uploads/{up['pk']}/{up['s3_upload_id']}/generate-presigned-urls/",
            {"part_numbers": [1]},
        ).body["presigned_urls"]["1"]
        assert client.call("PUT", url, raw=b"x").status == 400  # token sent: refused
        assert client.call("PUT", url, raw=b"x", token=None).status == 200
        log = client.get("/_sandbox/requests?since=0").body["requests"]
        puts = [e for e in log if e["method"] == "PUT"]
        assert [e["had_authorization"] for e in puts] == [True, False]
        assert all(e["user"] is None for e in puts)
    finally:
        app.close()


def test_upload_limits(clock: Clock) -> None:
    app = make(clock, max_live_uploads=2, max_upload_bytes=10)
    try:
        client = Client(app)
        first = client.post("/api/v1/uploads/", {"filename": "a"}).body
        client.post("/api/v1/uploads/", {"filename": "b"})
        # the platform refuses when the user has MORE than the limit ("count() > 2000")
        assert client.post("/api/v1/uploads/", {"filename": "c"}).status == 201
        fourth = client.post("/api/v1/uploads/", {"filename": "d"})
        assert fourth.body == {
            "non_field_errors": ["You have created too many uploads. Please try again later."]
        }
        base = f"/api/v1/uploads/{first['pk']}/{first['s3_upload_id']}"
        url = client.patch(f"{base}/generate-presigned-urls/", {"part_numbers": [1]}).body[
            "presigned_urls"
        ]["1"]
        # S3 takes any part it has a URL for; the quota is asked at presign time only
        assert client.call("PUT", url, raw=b"x" * 11, token=None).status == 200
        full = client.patch(f"{base}/generate-presigned-urls/", {"part_numbers": [2]})
        assert (full.status, full.body) == (403, {"detail": "Upload limit reached"})
        clock.advance(86401)  # unconsumed uploads expire after a day
        assert client.post("/api/v1/uploads/", {"filename": "d"}).status == 201
    finally:
        app.close()


# -- lists --------------------------------------------------------------------------------


def test_job_list_filters_and_pages(clock: Clock) -> None:
    app = make(clock, max_active_jobs=50, credits_per_month=10_000)
    try:
        client = Client(app)
        pks = [value_job(client, age=i).body["pk"] for i in range(5)]
        page = client.get("/api/v1/algorithms/jobs/?limit=2&offset=2").body
        assert page["count"] == 5 and [j["pk"] for j in page["results"]] == pks[2:4]
        assert page["next"] == f"{BASE}/api/v1/algorithms/jobs/?limit=2&offset=4"
        assert page["previous"] == f"{BASE}/api/v1/algorithms/jobs/?limit=2"
        typo = client.get("/api/v1/algorithms/jobs/?statuss=Succeeded&status=Failed").body
        assert typo["count"] == 5
        alg_pk = client.algorithm("risk-calculator").rstrip("/").rsplit("/", 1)[1]
        assert (
            client.get(f"/api/v1/algorithms/jobs/?algorithm_image__algorithm={alg_pk}").body[
                "count"
            ]
            == 5
        )
        other_alg = client.algorithm("lung-nodule-detector").rstrip("/").rsplit("/", 1)[1]
        assert (
            client.get(f"/api/v1/algorithms/jobs/?algorithm_image__algorithm={other_alg}").body[
                "count"
            ]
            == 0
        )
        bad = client.get("/api/v1/algorithms/jobs/?algorithm_image__algorithm=nope")
        assert (bad.status, bad.body) == (
            400,
            {"algorithm_image__algorithm": ["“nope” is not a valid UUID."]},
        )
        unknown = client.get(
            "/api/v1/algorithms/jobs/?algorithm_image__algorithm=00000000-0000-4000-8000-000000000000"
        )
        assert unknown.body == {
            "algorithm_image__algorithm": [
                "Select a valid choice. That choice is not one of the available choices."
            ]
        }
        assert Client(app, "other-token").get("/api/v1/algorithms/jobs/").body["count"] == 0
    finally:
        app.close()


def test_page_size_is_capped(clock: Clock) -> None:
    app = make(clock, max_page_size=3, page_size=2, max_active_jobs=50)
    try:
        client = Client(app)
        for i in range(4):
            value_job(client, age=i)
        assert len(client.get("/api/v1/algorithms/jobs/").body["results"]) == 2
        assert len(client.get("/api/v1/algorithms/jobs/?limit=1000").body["results"]) == 3
        assert len(client.get("/api/v1/algorithms/jobs/?limit=0").body["results"]) == 2
    finally:
        app.close()


# -- admin, persistence, concurrency ------------------------------------------------------


def test_admin_stats_requests_and_config(demo: Client, clock: Clock) -> None:
    value_job(demo)
    demo.post("/api/v1/uploads/", {"filename": "a.mha"})
    stats = demo.get("/_sandbox/stats", token=None).body
    assert stats["users"]["demo"] == {
        "jobs": 1,
        "active_jobs": 1,
        "uploads_live": 1,
        "uploads_total": 1,
        "credits_used": 20,
    }
    assert stats["totals"]["jobs"] == 1
    log = demo.get("/_sandbox/requests?since=0", token=None).body["requests"]
    posts = [e for e in log if e["method"] == "POST"]
    assert [(e["path"], e["status"], e["user"], e["had_authorization"]) for e in posts] == [
        ("/api/v1/algorithms/jobs/", 201, "demo", True),
        ("/api/v1/uploads/", 201, "demo", True),
    ]
    assert "demo-token" not in json.dumps(log)
    last = log[-1]["seq"]
    assert demo.get(f"/_sandbox/requests?since={last}").body["requests"][0]["seq"] == last + 1
    bad = demo.post("/_sandbox/config", {"max_active_jobs": "many"})
    assert bad.status == 400
    unknown = demo.post("/_sandbox/config", {"no_such_setting": 1})
    assert unknown.status == 400
    assert demo.post("/_sandbox/config", {"max_active_jobs": 0}).status == 200
    assert value_job(demo, age=99).status == 400


def test_state_persists_across_apps_on_one_file(tmp_path: Path, clock: Clock) -> None:
    db = tmp_path / "sandbox.sqlite"
    first = SandboxApp(db, config=FAST, clock=clock)
    client = Client(first)
    job = value_job(client).body
    up = client.upload("lab.json", b"{}")
    first.close()
    second = SandboxApp(db, config=FAST, clock=clock)
    try:
        again = Client(second)
        assert again.get(f"/api/v1/algorithms/jobs/{job['pk']}/").status == 200
        assert value_job(again).status == 400  # the duplicate check sees the old job
        assert again.get(up["api_url"]).body["status"] == "Completed"
        clock.advance(100)
        assert again.get(f"/api/v1/algorithms/jobs/{job['pk']}/").body["status"] == "Succeeded"
    finally:
        second.close()


def test_concurrent_job_posts(clock: Clock) -> None:
    app = make(clock, max_active_jobs=10_000, credits_per_month=10**9)
    try:
        client = Client(app)
        alg = client.algorithm("risk-calculator")
        statuses: list[int] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            for i in range(25):
                reply = client.post(
                    "/api/v1/algorithms/jobs/",
                    {
                        "algorithm": alg,
                        "inputs": [
                            {"interface": "age", "value": n},
                            {"interface": "lung-volume", "value": i % 5},
                        ],
                    },
                )
                with lock:
                    statuses.append(reply.status)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        # 8 threads x 25 posts, but only 8 x 5 distinct input sets: the rest are duplicates.
        assert statuses.count(201) == 40
        assert statuses.count(400) == 160
        assert client.get("/_sandbox/stats").body["users"]["demo"]["jobs"] == 40
    finally:
        app.close()


def test_the_default_seed_is_the_documented_world() -> None:
    app = SandboxApp(None, DEFAULT_SEED)
    try:
        assert app.token("demo") == "demo-token" and app.token("other") == "other-token"
        assert {s.slug for s in app.seed.sockets} == {
            "ct-image",
            "lung-volume",
            "age",
            "clinical-info",
            "lab-report",
            "nodule-count",
            "malignancy-risk",
            "findings",
            "report",
            "heatmap",
            "ct-image-set",
        }
    finally:
        app.close()
