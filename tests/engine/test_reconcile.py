"""Reconciliation verdicts: adopt one match, never duplicate, wait for validating jobs."""

from __future__ import annotations

from fake_jobs import make_job

from gcbatch.api.models import Job
from gcbatch.api.server_view import ServerView
from gcbatch.engine.reconcile import (
    Adopt,
    Ambiguous,
    Evidence,
    Match,
    NoJob,
    Reconciler,
    Wait,
    classify,
    decide,
    find_existing,
    json_equal,
)
from gcbatch.engine.sent import Sent, SentFile, SentInput, Stage
from gcbatch.errors import NotFoundError


def job(pk: str, status: str = "Queued", **inputs: object) -> Job:
    return make_job(pk, status, file_dir="media/", **inputs)


VALUES = Sent(attempt="a1", stage=Stage.POST, inputs=(
    SentInput("age", "value", value=42),
    SentInput("lung-volume", "value", value=1.5),
))
IMAGE_UPLOAD = Sent(attempt="a2", stage=Stage.POST, inputs=(
    SentInput("ct-image", "uploads", files=(SentFile("p1.gcb-1a2b3c4d.mha", upload_pk="u1"),)),
    SentInput("lung-volume", "value", value=1.5),
))
FILE_UPLOAD = Sent(attempt="a3", stage=Stage.POST, inputs=(
    SentInput("age", "value", value=42),
    SentInput("lab-report", "upload", files=(SentFile("p1.gcb-0badf00d.json", upload_pk="u9"),)),
    SentInput("lung-volume", "value", value=1.5),
))


def test_json_equal_keeps_bools_apart() -> None:
    assert json_equal(1, 1.0)
    assert not json_equal(True, 1)
    assert not json_equal(0, False)
    assert json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal("1", 1)


def test_value_job_adopted_when_exactly_one_unclaimed_match() -> None:
    jobs = (job("x", age=41, lung_volume=1.5), job("y", age=42, lung_volume=1.5))
    verdict = decide(VALUES, Evidence(jobs=jobs), claimed=set())
    assert isinstance(verdict, Adopt) and verdict.job.pk == "y"


def test_claimed_jobs_are_never_matched() -> None:
    jobs = (job("y", age=42, lung_volume=1.5),)
    assert isinstance(decide(VALUES, Evidence(jobs=jobs), claimed={"y"}), NoJob)


def test_two_matches_stay_in_doubt() -> None:
    jobs = (job("y", age=42, lung_volume=1.5), job("z", "Succeeded", age=42, lung_volume=1.5))
    verdict = decide(VALUES, Evidence(jobs=jobs), claimed=set())
    assert isinstance(verdict, Ambiguous) and {j.pk for j in verdict.jobs} == {"y", "z"}


def test_bool_is_not_an_integer_match_and_extra_sockets_mismatch() -> None:
    sent = Sent("a", (SentInput("flag", "value", value=True),), Stage.POST)
    assert classify(sent, job("j", flag=1), {}) == Match.MISMATCH
    assert classify(VALUES, job("j", age=42, lung_volume=1.5, extra=3), {}) == Match.MISMATCH
    # a value input is attached at creation: missing means another job
    assert classify(VALUES, job("j", age=42), {}) == Match.MISMATCH


def test_never_posted_means_no_job_without_asking() -> None:
    sent = IMAGE_UPLOAD.at_stage(Stage.UPLOAD)
    jobs = (job("v", "Validating inputs", lung_volume=1.5),)
    assert isinstance(decide(sent, Evidence(jobs=jobs), claimed=set()), NoJob)


def test_image_upload_found_by_name() -> None:
    jobs = (
        job("other", lung_volume=1.5, ct_image=("image", "img-other")),
        job("ours", lung_volume=1.5, ct_image=("image", "img-ours")),
    )
    evidence = Evidence(jobs=jobs, named_images={"ct-image": frozenset({"img-ours"})},
                        uploads_gone={"u1": True})
    verdict = decide(IMAGE_UPLOAD, evidence, claimed=set())
    assert isinstance(verdict, Adopt) and verdict.job.pk == "ours"


def test_validating_job_without_its_upload_inputs_means_wait() -> None:
    # the 201 and the list show only the value inputs until validation attaches the image
    jobs = (job("fresh", "Validating inputs", lung_volume=1.5),)
    evidence = Evidence(jobs=jobs, named_images={"ct-image": frozenset()},
                        uploads_gone={"u1": False})
    verdict = decide(IMAGE_UPLOAD, evidence, claimed=set())
    assert isinstance(verdict, Wait) and verdict.jobs[0].pk == "fresh"


def test_unused_uploads_and_nothing_validating_means_no_job() -> None:
    jobs = (job("other", lung_volume=1.5, ct_image=("image", "img-other")),)
    evidence = Evidence(jobs=jobs, named_images={"ct-image": frozenset()},
                        uploads_gone={"u1": False})
    assert isinstance(decide(IMAGE_UPLOAD, evidence, claimed=set()), NoJob)


def test_a_cancelled_job_without_our_handle_is_not_ours() -> None:
    # a Cancelled job whose upload inputs never attached carries no handle of ours
    jobs = (job("cancelled", "Cancelled", lung_volume=1.5),)
    evidence = Evidence(jobs=jobs, named_images={"ct-image": frozenset()},
                        uploads_gone={"u1": True})
    assert isinstance(decide(IMAGE_UPLOAD, evidence, claimed=set()), NoJob)


def test_file_upload_matched_by_its_stored_file_name() -> None:
    """The platform stores a File value under the upload's filename: the exact handle."""
    ours = job("f", age=42, lung_volume=1.5,
               lab_report=("file", "components/civ/00/07/7/p1.gcb-0badf00d.json"))
    other_study = job("o", age=42, lung_volume=1.5,
                      lab_report=("file", "components/civ/00/08/8/p1.gcb-99999999.json"))
    cancelled = job("c", "Cancelled", age=42, lung_volume=1.5,
                    lab_report=("file", "components/civ/00/09/9/lab-report.json"))
    for gone in (True, False):
        evidence = Evidence(jobs=(other_study, ours, cancelled), uploads_gone={"u9": gone})
        verdict = decide(FILE_UPLOAD, evidence, claimed=set())
        assert isinstance(verdict, Adopt) and verdict.job.pk == "f"
    # another study's job and a Cancelled one alone: not ours, whatever the uploads say
    for gone in (True, False):
        evidence = Evidence(jobs=(other_study, cancelled), uploads_gone={"u9": gone})
        assert isinstance(decide(FILE_UPLOAD, evidence, claimed=set()), NoJob)
    # a %-encoded URL still names the file
    encoded = job("e", age=42, lung_volume=1.5,
                  lab_report=("file", "x/p1.gcb-0badf00d.json?X-Amz-Signature=abc"))
    assert classify(FILE_UPLOAD, encoded, {}) == Match.STRONG


def test_payload_round_trips() -> None:
    assert Sent.from_json(FILE_UPLOAD.as_json()) == FILE_UPLOAD
    updated = FILE_UPLOAD.with_file("lab-report", 0, SentFile("n.json", upload_pk="u2",
                                                               s3_upload_id="s3"))
    assert updated.uploads[0].s3_upload_id == "s3"
    assert updated.has_uploads and not VALUES.has_uploads


def test_find_existing_after_duplicate() -> None:
    jobs = [job("mine", age=42, lung_volume=1.5), job("free", age=42, lung_volume=1.5),
            job("no", age=1, lung_volume=1.5)]
    free, owned = find_existing(VALUES, jobs, claimed={"mine": "case-a"})
    assert [j.pk for j in free] == ["free"]
    assert [(j.pk, c) for j, c in owned] == [("mine", "case-a")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_reconciler_waits_for_validation_then_adopts() -> None:
    clock = FakeClock()
    rounds = {"n": 0}

    def list_jobs() -> list[Job]:
        rounds["n"] += 1
        if rounds["n"] < 3:
            return [job("fresh", "Validating inputs", lung_volume=1.5)]
        return [job("fresh", "Queued", lung_volume=1.5, ct_image=("image", "img-1"))]

    def image_pks(name: str) -> list[str]:
        return ["img-1"] if rounds["n"] >= 3 and name == "p1.gcb-1a2b3c4d.mha" else []

    rec = Reconciler(list_jobs=list_jobs, list_image_pks=image_pks,
                     upload_exists=lambda pk: rounds["n"] < 3, wait_timeout=30.0,
                     poll_interval=1.0, sleep=clock.sleep, clock=clock)
    verdict = rec.reconcile(IMAGE_UPLOAD, claimed=frozenset)
    assert isinstance(verdict, Adopt) and verdict.job.pk == "fresh"
    assert clock.now == 2.0


def test_reconciler_wait_is_bounded() -> None:
    clock = FakeClock()
    rec = Reconciler(list_jobs=lambda: [job("stuck", "Validating inputs", lung_volume=1.5)],
                     list_image_pks=lambda name: [], upload_exists=lambda pk: True,
                     wait_timeout=5.0, poll_interval=1.0, sleep=clock.sleep, clock=clock)
    assert isinstance(rec.reconcile(IMAGE_UPLOAD, claimed=frozenset), Wait)
    assert 5.0 <= clock.now <= 6.0


def test_reconciler_over_a_server_view_maps_404_to_gone() -> None:
    class Client:
        def list_jobs(self, algorithm_pk: str) -> list[Job]:
            assert algorithm_pk == "alg"
            return []

        def list_images(self, *, name: str) -> list[object]:
            return []

        def get_upload(self, pk: str) -> object:
            raise NotFoundError("gone", status=404)

    rec = Reconciler.for_view(ServerView(Client()), "alg")  # type: ignore[arg-type]
    evidence = rec.evidence(IMAGE_UPLOAD)
    assert evidence.uploads_gone == {"u1": True}
    assert isinstance(decide(IMAGE_UPLOAD, evidence, set()), NoJob)
