"""A fake job list for tests of what reads it: limit/offset pages, details, counting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gcbatch.api.models import Job
from gcbatch.errors import NotFoundError

SERVER = "http://127.0.0.1:9/api/v1/"


def job_json(pk: str, status: str = "Queued", **extra: Any) -> dict[str, Any]:
    return {"pk": pk, "api_url": f"{SERVER}algorithms/jobs/{pk}/", "status": status,
            "inputs": [], "outputs": [], "exec_duration": None, **extra}


class FakeClient:
    """The job list (limit/offset, count) and job details, counting requests."""

    def __init__(self, jobs: list[dict[str, Any]], max_limit: int = 1000) -> None:
        self.jobs = jobs
        self.max_limit = max_limit
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def get_json(self, path_or_url: str, params: Mapping[str, object] | None = None) -> object:
        params = dict(params or {})
        self.requests.append((path_or_url, params))
        assert path_or_url == "algorithms/jobs/"
        assert params["algorithm_image__algorithm"] == "alg-pk"
        limit, offset = int(str(params["limit"])), int(str(params["offset"]))
        assert limit <= 1000
        limit = min(limit, self.max_limit)
        page = self.jobs[offset:offset + limit]
        more = offset + limit < len(self.jobs)
        return {"count": len(self.jobs), "next": "x" if more else None, "previous": None,
                "results": page}

    def get_algorithm(self, slug: str) -> object:
        self.requests.append((f"algorithm {slug}", {}))
        return type("Algorithm", (), {"pk": "alg-pk"})()

    def get_job(self, pk_or_url: str) -> Job:
        self.requests.append((f"job {pk_or_url}", {}))
        for job in self.jobs:
            if job["pk"] == pk_or_url:
                return Job.from_json(job)
        raise NotFoundError("No Job matches the given query.", status=404)
