"""Pre-flight: every problem of every case at once, each naming case and socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gcbatch.api.models import Algorithm, ArchiveItem, Interface, Socket, SocketValue
from gcbatch.errors import PreflightError
from gcbatch.preflight import (
    Problem,
    check_algorithm,
    check_cases,
    check_json_files,
    duplicate_values,
    is_json_file_socket,
    run_preflight,
    value_only_key,
)
from gcbatch.sources import Case, Source

CT = Socket("ct-image", kind="Image", super_kind="Image", relative_path="images/ct-image")
VOL = Socket("lung-volume", kind="Float", super_kind="Value", relative_path="lung-volume.json")
AGE = Socket("age", kind="Integer", super_kind="Value", relative_path="age.json")
FLAG = Socket("flag", kind="Bool", super_kind="Value", relative_path="flag.json")
NAME = Socket("name", kind="String", super_kind="Value", relative_path="name.json")
INFO = Socket("info", kind="Anything", super_kind="Value", relative_path="info.json")
LAB = Socket("lab-report", kind="Anything", super_kind="File", relative_path="lab-report.json")
PDF = Socket("report", kind="PDF file", super_kind="File", relative_path="report.pdf")
ALG = Algorithm(pk="a", api_url="http://x/api/v1/algorithms/a/", slug="alg", interfaces=(
    Interface(inputs=(CT,)),
    Interface(inputs=(CT, VOL)),
    Interface(inputs=(AGE, VOL, LAB)),
    Interface(inputs=(AGE, FLAG, NAME, INFO)),
    Interface(inputs=(PDF,)),
))


def case(cid: str, *sources: Source) -> Case:
    return Case(id=cid, inputs=tuple(sorted(sources, key=lambda s: s.socket)), fingerprint="f")


def value(socket: str, v: Any) -> Source:
    return Source(socket=socket, kind="value", value=v)


def file(socket: str, path: Path, kind: str = "file") -> Source:
    return Source(socket=socket, kind=kind, paths=(path,))


def test_good_cases_have_no_problems(tmp_path: Path) -> None:
    scan = tmp_path / "a.mha"
    scan.write_bytes(b"x")
    lab = tmp_path / "lab.json"
    lab.write_text('{"ok": 1}')
    cases = [
        case("a", file("ct-image", scan)),
        case("b", file("ct-image", scan, "files"), value("lung-volume", 1)),
        case("c", value("age", 3), value("lung-volume", 2.5), file("lab-report", lab)),
        case("d", value("age", 3), value("flag", False), value("name", "x"),
             value("info", {"a": [1]})),
        case("e", Source(socket="ct-image", kind="image", image_url="http://x/i/1/")),
    ]
    assert check_cases(cases, ALG) == []
    assert check_json_files(cases, ALG) == []
    run_preflight(cases, ALG, "alg")


def test_all_problems_at_once_each_naming_case_and_socket(tmp_path: Path) -> None:
    scan = tmp_path / "a.mha"
    scan.write_bytes(b"x")
    cases = [
        case("wrong-set", value("age", 3)),
        case("extra", file("ct-image", scan), value("age", 3)),
        case("value-in-image", value("ct-image", 3)),
        case("files-in-file", value("age", 1), value("lung-volume", 1),
             file("lab-report", scan, "files")),
        case("types", value("age", "3"), value("flag", 1), value("name", 3), value("info", None)),
        case("float", value("ct-image", None), value("lung-volume", "big")),
    ]
    problems = check_cases(cases, ALG)
    text = "\n".join(p.render() for p in problems)
    assert "case wrong-set: inputs {age} match none" in text and "missing" in text
    assert "case extra: inputs {age, ct-image}" in text and "not expected age" in text
    assert "case value-in-image, socket ct-image" in text and "use file:, files: or image:" in text
    assert "case files-in-file, socket lab-report" in text and "use file:" in text
    assert "case types, socket age: Integer socket needs an integer, got a string" in text
    assert "case types, socket flag: Bool socket needs true or false, got an integer" in text
    assert "case types, socket name: String socket needs a string, got an integer" in text
    assert "case types, socket info: value is null" in text
    assert "case float, socket lung-volume: Float socket needs a number" in text
    with pytest.raises(PreflightError) as info:
        run_preflight(cases, ALG, "alg")
    assert len(info.value.problems) == len(problems) >= 9
    assert info.value.exit_code == 2


def test_json_file_sockets_must_hold_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    cases = [case("c1", value("age", 1), value("lung-volume", 1), file("lab-report", bad)),
             case("c2", value("age", 2), value("lung-volume", 1), file("lab-report", bad)),
             case("c3", value("age", 3), value("lung-volume", 1), file("lab-report", binary))]
    reads: list[Path] = []

    def reader(path: Path) -> str | None:
        reads.append(path)
        from gcbatch.preflight import _default_json_reader
        return _default_json_reader(path)

    problems = check_json_files(cases, ALG, reader=reader)
    assert [p.case for p in problems] == ["c1", "c2", "c3"]
    assert "not valid JSON (line 1" in problems[0].message
    assert "Validating inputs" in problems[0].message
    assert "UTF-8" in problems[2].message
    assert reads == [bad, binary]  # each distinct file read once
    assert is_json_file_socket(LAB) and not is_json_file_socket(PDF)
    assert not is_json_file_socket(AGE)


def test_algorithm_missing_or_without_interfaces() -> None:
    assert "does not exist" in check_algorithm(None, "nope")[0].message
    empty = Algorithm(pk="a", api_url="u", slug="e")
    assert "no interfaces" in check_algorithm(empty, "e")[0].message
    with pytest.raises(PreflightError, match="nope"):
        run_preflight([case("a", value("age", 1))], None, "nope")


def test_archive_items_must_hold_the_right_kind() -> None:
    image_value = SocketValue("ct-image", socket=CT, image="http://x/api/v1/cases/images/1/")
    age_value = SocketValue("age", socket=AGE, value=64)
    item = ArchiveItem(pk="it1", values=(image_value, age_value))

    def src(socket: str, item_pk: str, item_socket: str) -> Source:
        return Source(socket=socket, kind="archive_item", item_pk=item_pk, item_socket=item_socket)

    ok = case("ok", src("ct-image", "it1", "ct-image"))
    wrong_kind = case("wrong", src("ct-image", "it1", "age"))
    missing_value = case("missing", src("ct-image", "it1", "heatmap"))
    missing_item = case("gone", src("ct-image", "it9", "ct-image"))
    problems = check_cases([ok, wrong_kind, missing_value, missing_item], ALG,
                           items={"it1": item})
    by_case = {p.case: p.message for p in problems}
    assert "ok" not in by_case
    assert "is a Value value, but this socket takes a Image" in by_case["wrong"]
    assert "has no value for socket heatmap (it holds age, ct-image)" in by_case["missing"]
    assert "does not exist" in by_case["gone"]


def test_identical_value_cases_are_reported() -> None:
    a = case("a", value("age", 1), value("flag", True), value("name", "n"), value("info", 1))
    b = case("b", value("age", 1), value("flag", True), value("name", "n"), value("info", 1))
    c = case("c", value("age", 1), value("flag", False), value("name", "n"), value("info", 1))
    problems = check_cases([a, b, c], ALG)
    assert [p.case for p in problems] == ["b"]
    assert "same inputs as case a" in problems[0].message
    assert value_only_key(case("u", file("ct-image", Path("/x")))) is None


def test_problem_rendering() -> None:
    assert Problem("c", "s", "m").render() == "case c, socket s: m"
    assert Problem("c", "", "m").render() == "case c: m"
    assert Problem("", "", "m").render() == "algorithm: m"
    assert Problem("c", "s", "m").as_json() == {"case": "c", "socket": "s", "message": "m"}


def test_archive_items_and_blocked_cases_against_the_sandbox(tmp_path: Path) -> None:
    from gcbatch.api.client import GrandChallengeClient
    from gcbatch.api.server_view import ServerView
    from gcbatch.manifest import load_manifest
    from gcbatch.preflight import blocked_cases
    from gcbatch.sandbox.app import SandboxApp
    from gcbatch.sources import expand

    app = SandboxApp(tmp_path / "sb.db")
    try:
        client = GrandChallengeClient("http://127.0.0.1:9/api/v1/", app.token("demo"),
                                      transport=app.transport())
        manifest_path = tmp_path / "study.yaml"
        manifest_path.write_text(
            "version: 1\nalgorithm: lung-nodule-detector\ncases:\n"
            "  - foreach: {archive: lung-archive}\n    id: 'item-{item.pk}'\n"
            "    inputs:\n      ct-image: {archive_item: '{item.pk}', socket: ct-image}\n"
            "  - foreach: {archive: lung-archive}\n    id: 'age-{item.pk}'\n"
            "    inputs:\n      ct-image: {archive_item: '{item.pk}', socket: age}\n")
        manifest = load_manifest(manifest_path)
        view = ServerView(client)
        algorithm = view.algorithm("lung-nodule-detector")
        assert algorithm is not None
        by_slug, by_pk = view.archive_items(["lung-archive"])
        assert len(by_slug["lung-archive"]) == 3
        cases = expand(manifest, archive_items=by_slug).cases
        blocked = blocked_cases(cases, algorithm, by_pk)
        assert sorted(blocked) == sorted(c.id for c in cases if c.id.startswith("age-"))
        assert all("ct-image" in reason and "Value" in reason for reason in blocked.values())
        client.close()
    finally:
        app.close()


def test_a_case_to_send_duplicating_a_locked_case_is_reported() -> None:
    """apply checks only the cases it sends; a settled case (no Case built) still counts
    for the duplicate-values check, through its lockfile digests."""
    from gcbatch.lockfile import CaseEntry, JobRecord

    def digested(cid: str, age: int) -> Case:
        inputs = (Source("age", "value", value=age, digest=f"sha256:age{age}"),
                  Source("lung-volume", "value", value=1, digest="sha256:vol1"))
        return Case(cid, inputs, "f")

    def locked(age: int) -> CaseEntry:
        inputs = {"age": f"sha256:age{age}", "lung-volume": "sha256:vol1"}
        return CaseEntry("f", inputs, JobRecord("j", "u", "Succeeded", "t", "f", inputs))

    new = digested("new", 3)
    problems = duplicate_values([new], locked={"old": locked(3), "other": locked(4)})
    assert [(p.case, "same inputs as case old" in p.message) for p in problems] == \
        [("new", True)]
    # its own (changed) lockfile entry does not count; two locked cases are not reported
    assert duplicate_values([new], locked={"new": locked(3)}) == []
    assert duplicate_values([], locked={"a": locked(3), "b": locked(3)}) == []
    # check_cases: per-case checks for `cases`, duplicates among `all_cases` and `locked`
    twin = digested("twin", 3)
    dups = [p.case for p in check_cases([twin], ALG, all_cases=[new, twin])
            if "same inputs" in p.message]
    assert dups == ["twin"]
    dups = [p.case for p in check_cases([twin], ALG, locked={"old": locked(3)})
            if "same inputs" in p.message]
    assert dups == ["twin"]


# -------------------------------------------------------------------- what the server tells


def _sandbox_client(tmp_path: Path, **config: Any) -> tuple[Any, Any]:
    from gcbatch.api.client import GrandChallengeClient
    from gcbatch.sandbox.app import SandboxApp
    from gcbatch.sandbox.config import SandboxConfig

    app = SandboxApp(tmp_path / "sb.db", config=SandboxConfig().replace(**config))
    client = GrandChallengeClient("http://127.0.0.1:9/api/v1/", app.token("demo"),
                                  transport=app.transport())
    return app, client


@pytest.mark.parametrize(("config", "kind"), [
    ({}, "ready"),
    ({"not_ready_algorithms": "risk-calculator"}, "not_ready"),
    ({"credits_per_month": 0}, "no_credits"),
    ({"max_active_jobs": 0}, "at_limit"),
])
def test_readiness_is_asked_with_a_job_post_that_can_make_no_job(
        tmp_path: Path, config: dict[str, Any], kind: str) -> None:
    from gcbatch.preflight import probe_readiness

    app, client = _sandbox_client(tmp_path, **config)
    try:
        algorithm = client.get_algorithm("risk-calculator")
        readiness = probe_readiness(client, algorithm)
        assert readiness.kind == kind
        assert readiness.blocks == (kind in ("not_ready", "no_credits"))
        assert app.stats()["users"]["demo"]["jobs"] == 0
        if readiness.blocks:
            assert "nothing was uploaded" in readiness.explain("risk-calculator")
    finally:
        client.close()
        app.close()


def test_readiness_is_not_asked_when_an_interface_takes_no_inputs() -> None:
    from gcbatch.preflight import probe_readiness

    odd = Algorithm(pk="a", api_url="http://x/api/v1/algorithms/a/", slug="alg",
                    interfaces=(Interface(inputs=(CT,)), Interface(inputs=())))

    class NoPost:
        def create_job(self, *args: Any) -> Any:
            raise AssertionError("a POST with no inputs could make a job here")

    readiness = probe_readiness(NoPost(), odd)  # type: ignore[arg-type]
    assert readiness.kind == "unknown" and not readiness.blocks


def test_refusals_are_told_apart_by_the_platforms_words() -> None:
    from gcbatch.errors import RequestRejectedError
    from gcbatch.preflight import refusal_kind

    def refused(message: str) -> RequestRejectedError:
        return RequestRejectedError(message, status=400, body={"non_field_errors": [message]})

    assert refusal_kind(refused("Algorithm image is not ready to be used")) == "not_ready"
    assert refusal_kind(refused("You have run out of algorithm credits")) == "credits"
    assert refusal_kind(refused("You have too many active jobs, please try again after "
                                "they have completed")) == "too_many_active"
    assert refusal_kind(refused("The set of inputs provided does not match any of the "
                                "algorithm's interfaces. ...")) == "interfaces"
    assert refusal_kind(refused("JSON does not fulfill schema")) == "other"


def test_image_urls_the_user_may_not_see_are_problems(tmp_path: Path) -> None:
    from gcbatch.preflight import image_problems, image_urls, image_verdicts

    app, client = _sandbox_client(tmp_path)
    try:
        items = client.list_archive_items(client.get_archive("lung-archive").pk)
        visible = next(v.image for item in items for v in item.values if v.image)
        assert visible
        hidden = "http://127.0.0.1:9/api/v1/cases/images/00000000-0000-4000-8000-000000000000/"
        foreign = "https://elsewhere.example/api/v1/cases/images/x/"
        cases = [case("ok", Source(socket="ct-image", kind="image", image_url=visible)),
                 case("hidden", Source(socket="ct-image", kind="image", image_url=hidden)),
                 case("foreign", Source(socket="ct-image", kind="image", image_url=foreign)),
                 case("again", Source(socket="ct-image", kind="image", image_url=hidden))]
        urls = image_urls(cases)
        assert urls == [visible, hidden, foreign]  # each asked once
        verdicts = image_verdicts(client, urls)
        assert verdicts[visible] is None
        problems = image_problems(cases, verdicts)
        assert sorted(p.case for p in problems) == ["again", "foreign", "hidden"]
        assert "may not see it" in next(p.message for p in problems if p.case == "hidden")
        assert "not an image URL of this server" in next(
            p.message for p in problems if p.case == "foreign")
        with pytest.raises(PreflightError, match="may not see it"):
            run_preflight(cases, ALG, "alg", images=verdicts)
    finally:
        client.close()
        app.close()
