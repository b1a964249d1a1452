"""ServerView.jobs: the job-list strategy (pages of 1,000, early stop, stragglers)."""

from __future__ import annotations

from fake_job_list import FakeClient, job_json

from gcbatch.api.server_view import ServerView


def view(client: FakeClient) -> ServerView:
    return ServerView(client)  # type: ignore[arg-type]


def test_fetch_uses_the_list_in_pages_of_1000() -> None:
    server = FakeClient([job_json(f"j{i:04d}") for i in range(2500)])
    found = view(server).jobs("alg-pk", [f"j{i:04d}" for i in range(0, 2500, 3)])
    assert len(found) == len(range(0, 2500, 3))
    assert [p["offset"] for _, p in server.requests] == [0, 1000, 2000]


def test_fetch_follows_a_server_with_a_smaller_max_limit() -> None:
    server = FakeClient([job_json(f"j{i:04d}") for i in range(1000)], max_limit=300)
    found = view(server).jobs("alg-pk", [f"j{i:04d}" for i in range(0, 1000, 7)])
    assert len(found) == len(range(0, 1000, 7))
    assert [p["offset"] for _, p in server.requests] == [0, 300, 600, 900]


def test_fetch_stops_paging_when_everything_was_found() -> None:
    server = FakeClient([job_json(f"j{i:04d}") for i in range(5000)])
    found = view(server).jobs("alg-pk", ["j0001", "j0002", "j0500"])
    assert set(found) == {"j0001", "j0002", "j0500"}
    assert len(server.requests) == 1


def test_fetch_looks_up_stragglers_one_by_one_when_cheaper() -> None:
    # 10 pages of other people's public jobs; ours are near the end
    server = FakeClient([job_json(f"j{i:05d}") for i in range(10_000)])
    found = view(server).jobs("alg-pk", ["j00003", "j09998", "j09999", "gone"])
    assert set(found) == {"j00003", "j09998", "j09999"}
    assert [r for r, _ in server.requests] == [
        "algorithms/jobs/", "job gone", "job j09998", "job j09999"]


def test_fetch_few_jobs_directly() -> None:
    server = FakeClient([job_json("a"), job_json("b")])
    assert set(view(server).jobs("alg-pk", ["a", "zzz"])) == {"a"}
    assert [r for r, _ in server.requests] == ["job a", "job zzz"]
    assert view(server).jobs("alg-pk", []) == {}
