"""ServerView.jobs: the job-list strategy (from the end, pages of 1,000, early stop,
stragglers)."""

from __future__ import annotations

from fake_job_list import FakeClient, job_json

from gcbatch.api.server_view import ServerView


def view(client: FakeClient) -> ServerView:
    return ServerView(client)  # type: ignore[arg-type]


def test_fetch_uses_the_list_in_pages_of_1000() -> None:
    server = FakeClient([job_json(f"j{i:04d}") for i in range(2500)])
    found = view(server).jobs("alg-pk", [f"j{i:04d}" for i in range(0, 2500, 3)])
    assert len(found) == len(range(0, 2500, 3))
    # the list's length (a 1-item page), then pages from its end towards its start
    assert [(p["offset"], p["limit"]) for _, p in server.requests] == [
        (0, 1), (1500, 1000), (500, 1000), (0, 500)]


def test_fetch_follows_a_server_with_a_smaller_max_limit() -> None:
    server = FakeClient([job_json(f"j{i:04d}") for i in range(1000)], max_limit=300)
    found = view(server).jobs("alg-pk", [f"j{i:04d}" for i in range(0, 1000, 7)])
    assert len(found) == len(range(0, 1000, 7))
    # a short page teaches the server's page size; the same end is read again in it
    # (the first, short page already held the oldest 300)
    assert [p["offset"] for _, p in server.requests] == [0, 0, 700, 400, 100]


def test_fetch_stops_paging_when_everything_was_found() -> None:
    # a study's jobs behind a long history: the list's newest end holds them
    server = FakeClient([job_json(f"j{i:06d}") for i in range(100_020)])
    wanted = [f"j{i:06d}" for i in range(100_000, 100_020)]
    assert set(view(server).jobs("alg-pk", wanted)) == set(wanted)
    assert [(p["offset"], p["limit"]) for _, p in server.requests] == [(0, 1), (99_020, 1000)]


def test_fetch_looks_up_stragglers_one_by_one_when_cheaper() -> None:
    # ours are near the end of 10 pages, but one is among the oldest (and one is gone)
    server = FakeClient([job_json(f"j{i:05d}") for i in range(10_000)])
    found = view(server).jobs("alg-pk", ["j00003", "j09998", "j09999", "gone"])
    assert set(found) == {"j00003", "j09998", "j09999"}
    assert [r for r, _ in server.requests] == [
        "algorithms/jobs/", "algorithms/jobs/", "job gone", "job j00003"]


def test_fetch_reads_the_whole_list_when_the_jobs_are_everywhere() -> None:
    server = FakeClient([job_json(f"j{i:06d}") for i in range(100_000)])
    wanted = [f"j{i:06d}" for i in range(100_000)]
    assert len(view(server).jobs("alg-pk", wanted)) == 100_000
    assert len(server.requests) == 101  # the length, then 100 pages


def test_fetch_few_jobs_directly() -> None:
    server = FakeClient([job_json("a"), job_json("b")])
    assert set(view(server).jobs("alg-pk", ["a", "zzz"])) == {"a"}
    assert [r for r, _ in server.requests] == ["job a", "job zzz"]
    assert view(server).jobs("alg-pk", []) == {}
