"""How one apply runs: the knobs behind ``apply``'s flags, as a frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field

from gcbatch.targeting import Targeting

__all__ = [
    "DEFAULT_ANSWER_WINDOW",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_LOOKAHEAD",
    "DEFAULT_MAX_POSTS_PER_CASE",
    "DEFAULT_MAX_RESENDS",
    "DEFAULT_POST_TIMEOUT",
    "MAX_TRANSFERS",
    "ApplyOptions",
]

#: Workers carrying cases. At 20 ms per request, 16 POSTs in flight already keep a client
#: core busy (1,000 value-only jobs: CPU-bound, not latency-bound); 32 measured ~8 %
#: slower, the connection pool's per-request bookkeeping growing with its connections.
#: The platform runs 16 active jobs per user anyway; uploads are bounded separately.
DEFAULT_CONCURRENCY = 16
#: Files sent at the same time (each with a few parts in flight): bounds memory and
#: sockets whatever ``--concurrency`` is.
MAX_TRANSFERS = 8
#: Cases whose files may be uploaded ahead of a free slot.
DEFAULT_LOOKAHEAD = 2
#: Seconds after a job POST without a definite answer before "no job on the server" is
#: believed. The platform's gateway (nginx, whose default proxy_read_timeout is 60 s)
#: gives up on a request after 60 s while the application, which sets no time limit of
#: its own, still finishes it and commits the job (ATOMIC_REQUESTS: at the request's
#: end): seen 2-75 s late. Three times the gateway's limit.
DEFAULT_ANSWER_WINDOW = 180.0
#: Seconds a job POST may wait for its answer before it counts as unanswered.
DEFAULT_POST_TIMEOUT = 60.0
#: Job POSTs without a definite answer one case may send in one run (then it stays in doubt).
DEFAULT_MAX_POSTS_PER_CASE = 3
#: Job POSTs sent again after an unanswered one, in one run, all cases together.
DEFAULT_MAX_RESENDS = 100


@dataclass(frozen=True)
class ApplyOptions:
    concurrency: int = DEFAULT_CONCURRENCY
    #: None: "auto" (learn the server's limit from its refusals); else never more of ours
    max_active: int | None = None
    targeting: Targeting = field(default_factory=Targeting)
    replace: bool = False
    keep_going: bool = False
    retry_failed: bool = False
    resubmit_in_doubt: bool = False
    #: seconds to wait for a validating job that may be an in-doubt case's
    reconcile_wait: float = 60.0
    #: see DEFAULT_ANSWER_WINDOW (``--answer-window``)
    answer_window: float = DEFAULT_ANSWER_WINDOW
    #: see DEFAULT_POST_TIMEOUT (``--post-timeout``)
    post_timeout: float = DEFAULT_POST_TIMEOUT
    max_posts_per_case: int = DEFAULT_MAX_POSTS_PER_CASE
    max_resends: int = DEFAULT_MAX_RESENDS
    #: status polling while a worker waits for a slot (grows to ``poll_max`` when idle)
    poll_min: float = 0.2
    poll_max: float = 5.0
    lookahead: int = DEFAULT_LOOKAHEAD
    #: the lockfile is rewritten after this many events, and at least every
    #: ``checkpoint_seconds`` while events happen (a rewrite is O(cases); events are O(1))
    checkpoint_every: int = 5000
    checkpoint_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.max_active is not None and self.max_active < 1:
            raise ValueError("--max-active must be at least 1")
        if not 0 <= self.answer_window <= 86_400:
            raise ValueError("--answer-window must be between 0 and 86400 seconds")
        if not 0 < self.post_timeout <= 3600:
            raise ValueError("--post-timeout must be between 0 and 3600 seconds")
        if self.max_posts_per_case < 1 or self.max_resends < 0:
            raise ValueError("the resend bounds must be positive")
