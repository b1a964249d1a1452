"""Values the lockfile tests share: a server, an algorithm, job records, a journal's
worth of events and a lockfile with one of everything an entry can hold."""

from __future__ import annotations

import json
from dataclasses import replace

from gcbatch import lockfile as lf

SERVER = "https://grand-challenge.org/api/v1/"
ALG = lf.AlgorithmRef("lung-nodule-detector", "a1", "https://x/api/v1/algorithms/a1/")


def job(pk: str, fp: str = "sha256:1", status: str = "Queued") -> lf.JobRecord:
    return lf.JobRecord(pk=pk, api_url=f"https://x/api/v1/algorithms/jobs/{pk}/",
                        status=status, submitted_at="2026-11-27T14:00:00Z", fingerprint=fp,
                        inputs={"ct-image": "sha256:aa"})


def events_for_resubmit() -> list[dict[str, object]]:
    return [
        {"event": "begin", "server": SERVER, "algorithm": ALG.as_json()},
        {"event": "intent", "case": "c1", "fingerprint": "sha256:1", "inputs": {"x": "1"},
         "at": "t1"},
        {"event": "submitted", "case": "c1", "job": job("j1", "sha256:1").as_json()},
        {"event": "status", "case": "c1", "job": "j1", "status": "Succeeded"},
        {"event": "intent", "case": "c1", "fingerprint": "sha256:2", "inputs": {"x": "2"},
         "at": "t2"},
        {"event": "submitted", "case": "c1", "job": {**job("j2", "sha256:2").as_json(),
                                                     "inputs": {}}},
        {"event": "intent", "case": "c2", "fingerprint": "sha256:9", "at": "t3"},
        {"event": "rejected", "case": "c2", "reason": "bad input"},
        {"event": "intent", "case": "c3", "fingerprint": "sha256:7", "uploads": ["u.mha"],
         "at": "t4"},
    ]


def varied() -> lf.Lockfile:
    """A lockfile with one of everything a case entry can hold."""
    usual = job("j-usual", "sha256:u")
    ct = {"ct-image": "sha256:aa"}
    payload = {"inputs": [{"socket": "ct-image", "n": 1.5}, None, True]}
    odd_inputs = {"sköl": "wert\t\u2603", "\u00e9": "\\\\"}
    return lf.Lockfile(SERVER, ALG, {
        "usual": lf.CaseEntry("sha256:u", dict(usual.inputs), usual),
        "no-inputs": lf.CaseEntry("sha256:e", {}, replace(job("j-e", "sha256:e"), inputs={})),
        "never-submitted": lf.CaseEntry(),
        "other-fingerprint": lf.CaseEntry("sha256:new", ct, job("j-of", "sha256:old")),
        "other-inputs": lf.CaseEntry("sha256:1", {"ct-image": "sha256:bb"}, job("j-oi")),
        "job-without-inputs": lf.CaseEntry("sha256:1", ct, replace(job("j-wi"), inputs={})),
        "resubmitted": lf.CaseEntry("sha256:1", ct, job("j2", status="Started"),
                                    (job("j1", "sha256:0", "Failed"),)),
        "in-doubt": lf.CaseEntry("sha256:1", ct, job("j3"), (), lf.Intent(
            "sha256:2", "2026-11-27T15:00:00Z", {"ct-image": "sha256:cc"}, ("p.mha",), payload)),
        "päť-ü/ñ \"quoted\"\n": lf.CaseEntry("sha256:ü", odd_inputs, lf.JobRecord(
            "pk-ë", "https://x/ë/", "Queued", "t", "sha256:ü", dict(odd_inputs))),
    })


def v1_text(lock: lf.Lockfile) -> str:
    """What gcbatch wrote before format 2: every field of every entry, jobs in full."""
    return json.dumps({
        "format_version": 1, "server": lock.server, "algorithm": lock.algorithm.as_json(),
        "cases": {cid: {"fingerprint": e.fingerprint, "inputs": dict(e.inputs),
                        "job": e.job.as_json() if e.job else None,
                        "history": [h.as_json() for h in e.history],
                        "pending": e.pending.as_json() if e.pending else None}
                  for cid, e in lock.cases.items()},
    }, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
