"""The platform's quotas as the sandbox plays them: the unlocked active-jobs and upload
count checks, the upload size quota at presign time, and an algorithm whose image is
not ready (issue 13). Driven through ``SandboxApp.handle`` (no sockets)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_app import BASE, FAST, IMAGE, Client, Clock, Reply, value_job

from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.config import SandboxConfig
from gcbatch.sandbox.seed import DEFAULT_SEED, load_seed


class Ticking(Clock):
    """A clock that moves on by a millisecond each time it is read, so that a request's
    arrival, the jobs it creates and the next request's arrival are all distinct."""

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _concurrently(app: SandboxApp, calls: list[Any]) -> list[Reply]:
    """Run ``calls`` in threads that all reach the app before any is served: the test
    holds the store's lock until every thread waits for it, as requests that arrive
    together at the platform all wait for the database."""
    replies: list[Reply | None] = [None] * len(calls)

    def run(i: int) -> None:
        replies[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with app.store.lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while app.store._queued < len(calls) and time.monotonic() < deadline:
            time.sleep(0.001)
        assert app.store._queued == len(calls)
    for t in threads:
        t.join(timeout=30)
    assert all(r is not None for r in replies)
    return [r for r in replies if r is not None]


@pytest.mark.parametrize("unlocked", [False, True])
def test_the_active_jobs_check_can_take_no_lock(unlocked: bool) -> None:
    app = SandboxApp(None, config=FAST.replace(max_active_jobs=2, unlocked_checks=unlocked),
                     clock=Ticking())
    try:
        client = Client(app)
        alg = client.algorithm("risk-calculator")

        def post(age: int) -> Reply:
            return client.post("/api/v1/algorithms/jobs/", {"algorithm": alg, "inputs": [
                {"interface": "age", "value": age}, {"interface": "lung-volume", "value": 1}]})

        replies = _concurrently(app, [lambda a=a: post(a) for a in range(5)])
        created = [r for r in replies if r.status == 201]
        if unlocked:
            # every POST counted the jobs from before any of them: all five got through
            assert len(created) == 5
        else:
            assert len(created) == 2
        # one request at a time, the count is exact either way: now at (or over) the limit
        late = value_job(client, age=99)
        assert late.body == {"non_field_errors": [
            "You have too many active jobs, please try again after they have completed"]}
    finally:
        app.close()


def test_an_unlocked_check_still_sees_what_was_committed_before_it_arrived() -> None:
    app = SandboxApp(None, config=FAST.replace(max_active_jobs=2, unlocked_checks=True),
                     clock=Ticking())
    try:
        client = Client(app)
        # a client that waits for each answer is never over-admitted
        assert [value_job(client, age=a).status for a in range(4)] == [201, 201, 400, 400]
    finally:
        app.close()


def test_the_upload_count_is_unlocked_too() -> None:
    app = SandboxApp(None, config=FAST.replace(max_live_uploads=1, unlocked_checks=True),
                     clock=Ticking())
    try:
        client = Client(app)
        client.post("/api/v1/uploads/", {"filename": "first"})
        client.post("/api/v1/uploads/", {"filename": "second"})  # 1 is not more than 1
        replies = _concurrently(app, [
            lambda n=n: client.post("/api/v1/uploads/", {"filename": f"u{n}"}) for n in range(3)])
        assert [r.status for r in replies] == [400, 400, 400]  # 2 > 1, seen by all
        stats = client.get("/_sandbox/stats").body["users"]["demo"]
        assert stats["uploads_live"] == 2
    finally:
        app.close()


def test_aborted_uploads_still_count_against_the_number() -> None:
    clock = Clock()
    app = SandboxApp(None, config=FAST.replace(max_live_uploads=1), clock=clock)
    try:
        client = Client(app)
        for name in ("a", "b"):
            up = client.post("/api/v1/uploads/", {"filename": name}).body
            aborted = client.patch(
                f"/api/v1/uploads/{up['pk']}/{up['s3_upload_id']}/abort-multipart-upload/", {})
            assert aborted.body["status"] == "Aborted"
        assert client.post("/api/v1/uploads/", {"filename": "c"}).status == 400
    finally:
        app.close()


def test_the_size_quota_counts_completed_uploads_and_the_asking_uploads_parts() -> None:
    clock = Clock()
    size = len(IMAGE)
    app = SandboxApp(None, config=FAST.replace(max_upload_bytes=size + 5), clock=clock)
    try:
        client = Client(app)
        done = client.upload("done.mha", IMAGE)  # completed, unused: its bytes count
        # another upload's parts do not count for this one's check
        half = client.post("/api/v1/uploads/", {"filename": "half.bin"}).body
        half_base = f"/api/v1/uploads/{half['pk']}/{half['s3_upload_id']}"
        url = client.patch(f"{half_base}/generate-presigned-urls/",
                           {"part_numbers": [1]}).body["presigned_urls"]["1"]
        assert client.call("PUT", url, raw=b"y" * 9, token=None).status == 200
        third = client.post("/api/v1/uploads/", {"filename": "third.bin"}).body
        third_base = f"/api/v1/uploads/{third['pk']}/{third['s3_upload_id']}"
        ok = client.patch(f"{third_base}/generate-presigned-urls/", {"part_numbers": [1]})
        assert ok.status == 200  # completed + 0 of its own < the quota
        # the half-sent upload: completed + its own 9 bytes reach the quota
        refused = client.patch(f"{half_base}/generate-presigned-urls/", {"part_numbers": [2]})
        assert (refused.status, refused.body) == (403, {"detail": "Upload limit reached"})
        # the platform asks the quota before it reads the part numbers
        bad = client.patch(f"{half_base}/generate-presigned-urls/", {"part_numbers": [0]})
        assert bad.status == 403
        # a completed upload can get no more URLs at all
        done_base = f"/api/v1/uploads/{done['pk']}/{done['s3_upload_id']}"
        assert client.patch(f"{done_base}/generate-presigned-urls/",
                            {"part_numbers": [1]}).status == 403
        # a job consumes the completed upload (when validated): its bytes no longer count
        job = client.post("/api/v1/algorithms/jobs/", {
            "algorithm": client.algorithm("lung-nodule-detector"),
            "inputs": [{"interface": "ct-image",
                        "user_uploads": [f"{BASE}/api/v1/uploads/{done['pk']}/"]}],
        })
        assert job.status == 201
        clock.advance(1.5)
        client.get("/api/v1/algorithms/jobs/")  # the sandbox moves jobs on each request
        assert client.get(f"/api/v1/uploads/{done['pk']}/").status == 404
        assert client.patch(f"{half_base}/generate-presigned-urls/",
                            {"part_numbers": [2]}).status == 200
    finally:
        app.close()


def _probe(client: Client, slug: str) -> Reply:
    """A job POST with no inputs: no interface has none, so it can never make a job."""
    return client.post("/api/v1/algorithms/jobs/",
                       {"algorithm": client.algorithm(slug), "inputs": []})


def _seed_with_unready_algorithm() -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(DEFAULT_SEED.read_text())
    data["algorithms"].append({
        "slug": "not-ready-detector", "active_image": False,
        "interfaces": [{"inputs": ["ct-image"], "outputs": ["nodule-count"]}]})
    for archive in data["archives"]:  # image paths are relative to the seed file
        for item in archive["items"]:
            for value in item["values"].values():
                if "image" in value:
                    value["image"] = str(DEFAULT_SEED.parent / value["image"])
    return dict(data)


def test_a_job_post_with_no_inputs_tells_readiness_credits_and_the_limit() -> None:
    clock = Clock()
    seed = load_seed(_seed_with_unready_algorithm())
    app = SandboxApp(None, seed, config=FAST.replace(max_active_jobs=1, credits_per_month=40),
                     clock=clock)
    try:
        client = Client(app)
        interfaces = ("The set of inputs provided does not match any of the algorithm's "
                      "interfaces.")
        ready = _probe(client, "risk-calculator")
        assert ready.status == 400
        assert ready.body["non_field_errors"][0].startswith(interfaces)  # capture 028
        assert _probe(client, "not-ready-detector").body == {
            "non_field_errors": ["Algorithm image is not ready to be used"]}
        assert value_job(client).status == 201  # 20 of 40 credits, 1 of 1 active
        assert _probe(client, "risk-calculator").body == {"non_field_errors": [
            "You have too many active jobs, please try again after they have completed"]}
        clock.advance(10)
        assert value_job(client, age=61).status == 201  # 40 of 40 credits
        clock.advance(10)
        assert _probe(client, "risk-calculator").body == {
            "non_field_errors": ["You have run out of algorithm credits"]}
        # readiness comes first, whatever the credits
        assert _probe(client, "not-ready-detector").body == {
            "non_field_errors": ["Algorithm image is not ready to be used"]}
        assert client.get("/_sandbox/stats").body["users"]["demo"]["jobs"] == 2
        # a user who is not the algorithm's editor sees none of its images
        assert client.get("/api/v1/algorithms/images/").body["count"] == 0
    finally:
        app.close()


def test_an_image_can_stop_being_ready_while_the_sandbox_runs() -> None:
    clock = Clock()
    app = SandboxApp(None, config=FAST, clock=clock)
    try:
        client = Client(app)
        assert value_job(client).status == 201
        changed = client.post("/_sandbox/config", {"not_ready_algorithms": "risk-calculator"})
        assert changed.status == 200
        assert value_job(client, age=1).body == {
            "non_field_errors": ["Algorithm image is not ready to be used"]}
        client.post("/_sandbox/config", {"not_ready_algorithms": ""})
        assert value_job(client, age=1).status == 201
    finally:
        app.close()


def test_the_settings_are_typed() -> None:
    with pytest.raises(ValueError, match="unlocked_checks"):
        SandboxConfig().replace(unlocked_checks="yes")
    assert SandboxConfig(not_ready_algorithms="a, b").image_not_ready("b")
    assert not SandboxConfig().image_not_ready("a")
