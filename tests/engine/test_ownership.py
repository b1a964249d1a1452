"""Which job is whose: relate a job to an in-doubt case's attempt, rank the look-alikes.

Pure: jobs are built here; image names are given as the server would tell them.
"""

from __future__ import annotations

from fake_jobs import make_job

from gcbatch.api.models import Job
from gcbatch.engine.ownership import (
    Candidate,
    Relation,
    describe_candidate,
    handle_of,
    image_pks,
    listing,
    relate,
)
from gcbatch.engine.sent import Sent, SentFile, SentInput, Stage


def job(pk: str, status: str = "Queued", **inputs: object) -> Job:
    return make_job(pk, status, file_dir="media/x/", **inputs)


IMAGE = Sent(attempt="a2", stage=Stage.POST, inputs=(
    SentInput("ct-image", "uploads", files=(SentFile("p1.gcb-1a2b3c4d.mha", upload_pk="u1"),)),
    SentInput("lung-volume", "value", value=1.5),
))
FILE = Sent(attempt="a3", stage=Stage.POST, inputs=(
    SentInput("age", "value", value=42),
    SentInput("lab-report", "upload", files=(SentFile("p1.gcb-0badf00d.json", upload_pk="u9"),)),
))
VALUES = Sent(attempt="a1", stage=Stage.POST, inputs=(
    SentInput("age", "value", value=42), SentInput("lung-volume", "value", value=1.5)))
NAMES = {"i-ours": "p1.gcb-1a2b3c4d.mha", "i-p2": "p2.gcb-99999999.mha",
         "i-old": "p1.gcb-00000000.mha", "i-ui": "scan.mha"}


def rel(sent: Sent, j: Job, owner: str | None = None) -> Candidate:
    return relate(sent, j, NAMES, case_id="p1", owner=owner)


def test_handles_are_read_from_gcbatch_names_only() -> None:
    assert handle_of("p1.gcb-1a2b3c4d.mha") == ("p1", "1a2b3c4d")
    assert handle_of("a.b.gcb-0badf00d.nii.gz") == ("a.b", "0badf00d")
    assert handle_of("p1.gcb-1a2b3c4d") == ("p1", "1a2b3c4d")
    assert handle_of("scan.mha") is None
    assert handle_of("p1.gcb-XYZ.mha") is None


def test_an_image_named_after_this_attempt_is_ours() -> None:
    got = rel(IMAGE, job("j", ct_image=("image", "i-ours"), lung_volume=1.5))
    assert got.relation == Relation.OURS
    assert "carries this case's upload names (p1.gcb-1a2b3c4d.mha)" in describe_candidate(got)


def test_images_named_for_another_case_or_attempt_or_by_hand() -> None:
    other = rel(IMAGE, job("j", ct_image=("image", "i-p2"), lung_volume=1.5))
    assert (other.relation, other.tag) == (Relation.OTHER_CASE, "p2")
    assert describe_candidate(other).startswith(
        "made for case p2 (another study's, or an older attempt)")
    older = rel(IMAGE, job("j", ct_image=("image", "i-old"), lung_volume=1.5))
    assert older.relation == Relation.OTHER_ATTEMPT
    by_hand = rel(IMAGE, job("j", ct_image=("image", "i-ui"), lung_volume=1.5))
    assert by_hand.relation == Relation.CANNOT_TELL
    assert "was not uploaded by gcbatch" in describe_candidate(by_hand)
    unread = rel(IMAGE, job("j", ct_image=("image", "i-unknown"), lung_volume=1.5))
    assert unread.relation == Relation.CANNOT_TELL and unread.unread


def test_file_values_are_told_by_their_stored_name() -> None:
    assert rel(FILE, job("j", age=42, lab_report=("file", "p1.gcb-0badf00d.json"))
               ).relation == Relation.OURS
    assert rel(FILE, job("j", age=42, lab_report=("file", "o1.gcb-12345678.json"))
               ).relation == Relation.OTHER_CASE


def test_other_values_or_sockets_are_different_whatever_the_names() -> None:
    for j in (job("j", ct_image=("image", "i-ours"), lung_volume=2.5),
              job("j", ct_image=("image", "i-ours")),
              job("j", ct_image=("image", "i-ours"), lung_volume=1.5, age=3),
              job("j", ct_image=("file", "p1.gcb-1a2b3c4d.mha"), lung_volume=1.5)):
        got = rel(IMAGE, j)
        assert got.relation == Relation.DIFFERENT, j
    text = describe_candidate(rel(FILE, job("j", age=41, lab_report=("file", "x"))))
    assert text == "not this case's: its age is 41, this case sent 42"


def test_upload_inputs_not_attached_cannot_be_told() -> None:
    validating = rel(IMAGE, job("j", "Validating inputs", lung_volume=1.5))
    assert validating.relation == Relation.CANNOT_TELL
    assert "not attached yet" in validating.detail
    cancelled = rel(IMAGE, job("j", "Cancelled", lung_volume=1.5))
    assert cancelled.relation == Relation.CANNOT_TELL
    assert describe_candidate(cancelled) == \
        "cannot tell: it ended Cancelled without its ct-image"


def test_a_claimed_job_says_whose_it_is() -> None:
    j = job("j", ct_image=("image", "i-ours"), lung_volume=1.5)
    assert describe_candidate(rel(IMAGE, j, owner="p7")) == "case p7's job in this lockfile"
    assert describe_candidate(rel(IMAGE, j, owner="p1")) == \
        "this case's own earlier job in this lockfile"
    # a claim never hides that the values differ
    assert rel(IMAGE, job("j", lung_volume=9.0), owner="p7").relation == Relation.DIFFERENT


def test_value_only_cases_match_on_values_and_failed_jobs_say_so() -> None:
    got = rel(VALUES, job("j", "Failed", age=42, lung_volume=1.5))
    assert got.relation == Relation.OURS
    assert describe_candidate(got) == "has exactly this case's inputs; it ended Failed"


def test_listing_ranks_best_first_drops_noise_and_counts_the_rest() -> None:
    jobs = [
        job("old-attempt", "Succeeded", ct_image=("image", "i-old"), lung_volume=1.5),
        job("other-study", ct_image=("image", "i-p2"), lung_volume=1.5),
        job("claimed-p2", ct_image=("image", "i-p2"), lung_volume=1.5),  # p2's own: noise
        job("claimed-validating", "Validating inputs", lung_volume=1.5),
        job("different", ct_image=("image", "i-ours"), lung_volume=9.0),
        job("unread", ct_image=("image", "i-unknown"), lung_volume=1.5),
        job("ours", ct_image=("image", "i-ours"), lung_volume=1.5),
        job("validating", "Validating inputs", lung_volume=1.5),
    ]
    claimed = {"claimed-p2": "p2", "claimed-validating": "p3"}
    shown, more = listing(IMAGE, jobs, NAMES, case_id="p1", claimed_by=claimed)
    assert [(c.job.pk, c.relation) for c in shown] == [
        ("ours", Relation.OURS),
        ("validating", Relation.CANNOT_TELL),
        ("old-attempt", Relation.OTHER_ATTEMPT),
        ("claimed-validating", Relation.CLAIMED),
        ("other-study", Relation.OTHER_CASE),
    ]
    assert more == 1  # the job whose image name was not read
    shown, more = listing(IMAGE, jobs, NAMES, case_id="p1", claimed_by=claimed, limit=2)
    assert [c.job.pk for c in shown] == ["ours", "validating"] and more == 4


def test_image_pks_are_those_of_upload_made_sockets() -> None:
    j = job("j", ct_image=("image", "i-ours"), lung_volume=1.5)
    assert image_pks(IMAGE, j) == ["i-ours"]
    assert image_pks(VALUES, j) == []


def test_candidates_as_json() -> None:
    got = rel(IMAGE, job("j", ct_image=("image", "i-p2"), lung_volume=1.5)).as_json()
    assert got == {"job": "j", "status": "Queued", "relation": "other_case",
                   "detail": "p2.gcb-99999999.mha", "tag": "p2",
                   "description": "made for case p2 (another study's, or an older "
                                  "attempt): p2.gcb-99999999.mha"}


def test_the_in_doubt_message_says_how_to_choose() -> None:
    from gcbatch.engine.reconcile import choose_hint

    hint = choose_hint("p1")
    assert "`gcbatch plan MANIFEST --case p1` says whose each job is" in hint
    assert "`gcbatch adopt MANIFEST p1 JOB`" in hint and "--resubmit-in-doubt" in hint
