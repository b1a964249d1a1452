"""The anchor: the official client, gcapi 0.16.1, driven the way its documentation teaches.

Run with the interpreter of gcapi's own virtualenv (``harness.ensure_gcapi_venv``); this
file imports nothing from gcbatch. It is our own code, written after reading gcapi's
user docs (``docs/usage/algorithm/start_algorithm_jobs.md``,
``docs/usage/retries/handling_limits.md`` and ``docs/examples/upload_retry_strategy.py``
of DIAGNijmegen/rse-gcapi):

* submit: a plain loop of ``client.start_algorithm_job(algorithm_slug=..., inputs=[
  SocketValueSpec(...)])``, one case after the other, keeping the job pks in a list;
* inspect: ``[client.algorithm_jobs.detail(pk) for pk in jobs]`` - one GET per job;
* download: ``client.download_socket_value(value, output_directory=...)`` per output;
* limits: the docs' answer to "too many ..." 400s is a retry strategy - a subclass of
  ``gcapi.retries.SelectiveBackoffStrategy`` whose ``get_delay`` recognises the message
  and waits 5 minutes (their example does it for uploads and says "a similar construct
  would work for other limit-related responses"); ``--limit-wait`` sets that wait, so the
  benchmark can also run a practical 5 s variant.

Default client settings everywhere (``gcapi.Client(base_url=...)``; the token comes from
``GRAND_CHALLENGE_AUTHORIZATION`` and the sandbox's CA from ``SSL_CERT_FILE``, which
gcapi's httpx 0.23 honours), because the benchmark compares against what users get.

Each command prints one JSON line with what it did (job pks, timings, retry count).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import gcapi
import httpx
from gcapi import SocketValueSpec

TERMINAL = {"Succeeded", "Failed", "Cancelled"}


class ActiveJobsRetryStrategy(gcapi.retries.SelectiveBackoffStrategy):
    """The docs' limit-retry construct, aimed at the active-jobs limit.

    gcapi builds one instance per failing request by calling the class with no arguments,
    so the wait is a class attribute set from the command line. Anything that is not the
    active-jobs 400 is not retried (as in the docs' example).
    """

    wait_s: float = 300.0
    hits: int = 0

    def __init__(self) -> None:
        super().__init__(backoff_factor=0.1, maximum_number_of_retries=5)

    def get_delay(self, latest_response: httpx.Response) -> float | None:
        if latest_response.status_code == httpx.codes.BAD_REQUEST:
            # The docs' example calls .json() straight away; inside gcapi 0.16.1's
            # RetryTransport the response is still an unread stream, so that raises
            # httpx.ResponseNotRead at the first refusal. Reading it first is the one
            # change a user has to make for the documented construct to run at all.
            latest_response.read()
            try:
                errors = latest_response.json().get("non_field_errors", [])
            except (ValueError, AttributeError):
                errors = []
            if len(errors) == 1 and "too many active jobs" in str(errors[0]).casefold():
                type(self).hits += 1
                return self.wait_s
        return None


def _client(base_url: str, limit_wait: float | None) -> gcapi.Client:
    if limit_wait is None:
        return gcapi.Client(base_url=base_url)
    ActiveJobsRetryStrategy.wait_s = limit_wait
    return gcapi.Client(base_url=base_url, retry_strategy=ActiveJobsRetryStrategy)


def _specs(inputs: dict[str, Any]) -> list[SocketValueSpec]:
    specs = []
    for slug, source in sorted(inputs.items()):
        if "value" in source:
            specs.append(SocketValueSpec(socket_slug=slug, value=source["value"]))
        elif "files" in source:
            specs.append(SocketValueSpec(socket_slug=slug, files=list(source["files"])))
        elif "file" in source:
            specs.append(SocketValueSpec(socket_slug=slug, file=source["file"]))
        else:
            raise SystemExit(f"unsupported source for {slug}: {source!r}")
    return specs


def cmd_submit(args: argparse.Namespace) -> dict[str, Any]:
    cases = json.loads(Path(args.cases).read_text())
    start = time.perf_counter()
    client = _client(args.base_url, args.limit_wait)
    jobs: list[str] = []
    # The docs' loop: one start_algorithm_job per case, pks kept in a list.
    for case in cases:
        job = client.start_algorithm_job(
            algorithm_slug=args.algorithm, inputs=_specs(case["inputs"])
        )
        jobs.append(str(job.pk))
    submitted_s = time.perf_counter() - start
    result: dict[str, Any] = {
        "submitted": len(jobs),
        "submit_s": submitted_s,
        "limit_retries": ActiveJobsRetryStrategy.hits,
    }
    if args.until_succeeded:
        # The docs' inspection, repeated until every job has ended.
        statuses: dict[str, str] = {}
        pending = list(jobs)
        polls = 0
        while pending:
            polls += 1
            for pk in pending:
                statuses[pk] = client.algorithm_jobs.detail(pk).status
            pending = [pk for pk in pending if statuses[pk] not in TERMINAL]
            if pending:
                time.sleep(args.poll_interval)
        result["makespan_s"] = time.perf_counter() - start
        result["status_rounds"] = polls
        counts: dict[str, int] = {}
        for status in statuses.values():
            counts[status] = counts.get(status, 0) + 1
        result["statuses"] = counts
    if args.jobs_out:
        Path(args.jobs_out).write_text(json.dumps(jobs))
    return result


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    jobs = json.loads(Path(args.jobs).read_text())
    start = time.perf_counter()
    client = _client(args.base_url, None)
    # Exactly the docs' line: one detail GET per job.
    details = [client.algorithm_jobs.detail(pk) for pk in jobs]
    counts: dict[str, int] = {}
    for job in details:
        counts[job.status] = counts.get(job.status, 0) + 1
    return {"jobs": len(details), "status_s": time.perf_counter() - start, "statuses": counts}


def cmd_download(args: argparse.Namespace) -> dict[str, Any]:
    jobs = json.loads(Path(args.jobs).read_text())
    out = Path(args.out)
    start = time.perf_counter()
    client = _client(args.base_url, None)
    n = 0
    for pk in jobs:
        job = client.algorithm_jobs.detail(pk)
        if job.status != "Succeeded":
            continue
        for value in job.outputs:
            client.download_socket_value(value, output_directory=out / str(pk))
            n += 1
    return {"outputs": n, "download_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="https://.../api/v1/")
    sub = parser.add_subparsers(dest="command", required=True)

    submit = sub.add_parser("submit", help="start one job per case, in a loop")
    submit.add_argument("--algorithm", required=True)
    submit.add_argument("--cases", required=True, help="JSON: [{id, inputs: {socket: src}}]")
    submit.add_argument(
        "--limit-wait",
        type=float,
        default=None,
        help="retry 'too many active jobs' after this many seconds (the docs' construct)",
    )
    submit.add_argument("--until-succeeded", action="store_true")
    submit.add_argument("--poll-interval", type=float, default=1.0)
    submit.add_argument("--jobs-out", default=None)
    submit.set_defaults(func=cmd_submit)

    status = sub.add_parser("status", help="one detail GET per job")
    status.add_argument("--jobs", required=True, help="JSON list of job pks")
    status.set_defaults(func=cmd_status)

    download = sub.add_parser("download", help="download_socket_value per output")
    download.add_argument("--jobs", required=True)
    download.add_argument("--out", required=True)
    download.set_defaults(func=cmd_download)

    args = parser.parse_args(argv)
    result = args.func(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
