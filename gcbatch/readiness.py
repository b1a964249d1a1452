"""What only the server can tell before the first upload: ``image:`` URLs the user may see,
and whether the platform would run a job of the algorithm now at all.

Every ``image:`` URL must be an image of this server that the user may see (the job POST
would refuse the case; :func:`image_verdicts` asks with one GET per distinct URL).

And what no GET shows, asked before the first upload (:func:`probe_readiness`): whether
the platform would run a job of this algorithm now at all — its container image ready
("Algorithm image is not ready to be used": the algorithm's serializer has no field for
it, and the images endpoint shows images to the algorithm's editors only, without saying
which one is active), and the user's credits ("You have run out of algorithm credits":
the balance is not shown either). The platform's job serializer checks exactly these
first, in that order, then the active-jobs limit, and only then whether the inputs match
an interface. A job POST with *no inputs* therefore gets one of those refusals, or the
interface mismatch, and can never make a job: an interface has at least one input (the
platform's ``AlgorithmInterfaceManager`` refuses one without). One request, refused by
construction, tells what the first real POST would have met after all the uploads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal, get_args

from gcbatch.api.client import GrandChallengeClient
from gcbatch.api.http import error_messages
from gcbatch.api.models import Algorithm
from gcbatch.errors import ApiError, ConfigError, InDoubtError, NotFoundError, TransportError
from gcbatch.problems import Problem
from gcbatch.sources import Case

__all__ = [
    "READINESS",
    "Readiness",
    "ReadinessKind",
    "RefusalKind",
    "image_problems",
    "image_urls",
    "image_verdicts",
    "probe_readiness",
    "refusal_kind",
]


# --------------------------------------------------------------------------- image: URLs


def image_urls(cases: Iterable[Case]) -> list[str]:
    """The distinct ``image:`` URLs of these cases, in order of first use."""
    seen: dict[str, None] = {}
    for case in cases:
        for source in case.inputs:
            if source.kind == "image" and source.image_url:
                seen.setdefault(source.image_url, None)
    return list(seen)


def image_verdicts(client: GrandChallengeClient, urls: Sequence[str], *,
                   workers: int = 8) -> dict[str, str | None]:
    """url → None when it is an image of this server the user may see, else why not
    (one GET per URL, a few at a time). An image that could not be asked about (the
    server did not answer) passes: the job POST is the final word."""

    def verdict(url: str) -> tuple[str, str | None]:
        if not client.is_api_url(url):
            return url, "is not an image URL of this server"
        try:
            client.get_image(url)
        except NotFoundError:
            return url, "no such image, or you may not see it (the server answers 404)"
        except ConfigError as exc:
            return url, str(exc)
        except (ApiError, TransportError):
            return url, None
        return url, None

    if not urls:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(urls))),
                            thread_name_prefix="gcbatch-preflight") as pool:
        return dict(pool.map(verdict, urls))


def image_problems(cases: Iterable[Case], verdicts: Mapping[str, str | None]) -> list[Problem]:
    """Check 6, from :func:`image_verdicts` (pure)."""
    problems: list[Problem] = []
    for case in cases:
        for source in case.inputs:
            if source.kind == "image" and source.image_url:
                why = verdicts.get(source.image_url)
                if why:
                    problems.append(Problem(case.id, source.socket,
                                            f"image {source.image_url} {why}"))
    return problems


# --------------------------------------------------------------------------- readiness

#: what a job POST's refusal says about the server's state (in the serializer's order)
RefusalKind = Literal["not_ready", "credits", "too_many_active", "interfaces", "other"]

_REFUSALS: tuple[tuple[str, RefusalKind], ...] = (
    ("algorithm image is not ready to be used", "not_ready"),
    ("run out of algorithm credits", "credits"),
    ("too many active jobs", "too_many_active"),
    ("does not match any of the algorithm's interfaces", "interfaces"),
)


def refusal_kind(exc: BaseException) -> RefusalKind:
    """Which of the job serializer's object-level checks refused a job POST."""
    body = getattr(exc, "body", None)
    messages = error_messages(body) if body is not None else [str(exc)]
    text = " ".join(messages).lower()
    for needle, kind in _REFUSALS:
        if needle in text:
            return kind
    return "other"


#: ready: a job would be accepted; at_limit: ready, but the active-jobs limit is reached
#: now; not_ready: the image; no_credits: the user's credits; unknown: could not tell
ReadinessKind = Literal["ready", "at_limit", "not_ready", "no_credits", "unknown"]
READINESS: frozenset[str] = frozenset(get_args(ReadinessKind))


@dataclass(frozen=True)
class Readiness:
    """What the server said about running a job of the algorithm now."""

    kind: ReadinessKind
    detail: str = ""

    @property
    def blocks(self) -> bool:
        """No job can be made now, whatever the cases (plan shows them ``!``)."""
        return self.kind in ("not_ready", "no_credits")

    def explain(self, slug: str) -> str:
        if self.kind == "not_ready":
            return (f"algorithm {slug!r}: its container image is not ready to be used (the "
                    "server refuses every job until its editors make an image active); "
                    "nothing was uploaded")
        if self.kind == "no_credits":
            return ("you have run out of algorithm credits (the server refuses every job "
                    "until its rolling month frees some); nothing was uploaded")
        return self.detail


def probe_readiness(client: GrandChallengeClient, algorithm: Algorithm) -> Readiness:
    """Ask the server whether it would run a job of ``algorithm`` now, making none: a job
    POST with no inputs (see the module docstring)."""
    if not algorithm.interfaces or any(not i.input_slugs for i in algorithm.interfaces):
        return Readiness("unknown", "not asked: an interface without inputs could match")
    try:
        job = client.create_job(algorithm.api_url, [])
    except (ApiError, TransportError, InDoubtError) as exc:
        kind = refusal_kind(exc) if isinstance(exc, ApiError) and exc.status == 400 else "other"
        verdicts: dict[RefusalKind, ReadinessKind] = {
            "not_ready": "not_ready", "credits": "no_credits",
            "too_many_active": "at_limit", "interfaces": "ready"}
        if kind in verdicts:
            return Readiness(verdicts[kind])
        return Readiness("unknown", f"the server's answer told nothing: {exc}")
    # an interface without inputs after all: the server made a job of nothing
    return Readiness("ready", f"the server made job {job.pk} from no inputs")
