"""Fault injection for the sandbox, as data.

The real platform sits behind load balancers and proxies that sometimes answer 429 or
502/503/504, reset connections, or lose the answer to a request the application already
committed. gcbatch must survive all of that without ever creating a duplicate job, so the
sandbox can play each of those failures on demand, reproducibly.

A :class:`FaultPlan` is plain data: a global added latency, a seed and an ordered list of
:class:`FaultRule`. A :class:`FaultInjector` holds the plan that is in force (it can be
replaced at runtime through ``POST /_sandbox/faults``) and decides, request by request,
what happens. Both transports (``server.py`` over real sockets and ``transport.py``
in-process) ask the same injector, so a fault behaves the same on either.

Fault actions:

``latency``
    add ``ms`` milliseconds before the request is handled (sums with the plan's global
    ``latency_ms`` and with other latency rules that fire).
``<status>`` (e.g. ``429``, ``502``, ``503``, ``504``)
    answer that status without calling the app (the app never sees the request), with a
    small HTML body like a proxy's, an ``X-Sandbox-Fault`` header and, when given,
    ``Retry-After``.
``reset``
    read the request, then close the connection with no answer (a TCP RST by default;
    ``close=fin`` for an orderly close). The app never sees the request.
``drop_after_commit``
    hand the request to the app (so a job POST really creates the job), then close the
    connection without answering: the client cannot know whether its request took effect.
``late_commit``
    what a gateway in front of a slow application does: answer at once (``answer=504``,
    the default, or any 5xx; ``answer=drop`` closes the connection instead), and hand the
    request to the app ``after=S`` seconds later (``after_max=S2``: a delay drawn from
    [S, S2] by the plan's RNG), so the job appears long after the client gave up.
``garble``
    let the app answer, then replace the top-level JSON field ``field=NAME`` of its body
    with a string (``{"count": "garbled"}``): a server answering nonsense.

Compact syntax (``--faults`` on ``gcbatch sandbox serve``; also accepted in JSON)::

    [TARGET:]ACTION[:RATE][:KEY=VALUE[,KEY=VALUE...]]

    TARGET  *                              every request (the default)
            POST                           every request with that method
            POST /api/v1/algorithms/jobs/  method(s) and a path pattern
            GET,HEAD uploads/*             several methods; a path not starting with
                                           "/", "*" or "~" is relative to /api/v1/
            ~/api/v1/uploads/[^/]+/        "~" starts a regular expression (full match)
            Paths are globs where "*" also crosses "/"; the query string is not matched.
    ACTION  429 | 500 | 502 | 503 | 504 | any 4xx/5xx | reset | drop_after_commit
            | late_commit | garble | latency | latency=MS (shorthand for latency with ms=MS)
    RATE    probability in [0, 1] that a matching request is hit (default 1)
    KEYS    retry_after=SECONDS  Retry-After header (statuses only)
            ms=MS                latency added when the rule fires (any action)
            skip=N               let the first N matching requests through
            times=N              fire at most N times
            close=rst|fin        how reset/drop_after_commit close the connection
            after=S, after_max=S2  late_commit: the app sees the request S (to S2) s later
            answer=504|drop      late_commit: the immediate answer (a 5xx, or none)
            field=NAME           garble: the JSON field to garble

Examples::

    POST /api/v1/algorithms/jobs/:drop_after_commit:0.1
    *:503:0.2
    *:429:0.05:retry_after=1
    POST algorithms/jobs/:reset:1:skip=2,times=1   # only the 3rd job POST is reset
    POST algorithms/jobs/:late_commit:0.3:after=2  # 30% of job POSTs: 504, job 2 s later
    GET algorithms/jobs/:garble:field=count        # job lists with a count that is no number
    GET *:latency=50

Faults never apply to the sandbox's own ``/_sandbox/`` endpoints. Rules are tried in
order; every matching latency rule that fires adds its delay, and the first failure rule
that fires decides the outcome. The random draws come from one RNG seeded by the plan's
``seed`` (a random seed is chosen and reported when none is given), so a sequential run
replays exactly.
"""

from __future__ import annotations

import fnmatch
import json
import random
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gcbatch.sandbox.http import Request, Response

__all__ = [
    "ADMIN_PREFIX",
    "FAULTS_PATH",
    "Decision",
    "FaultInjector",
    "FaultPlan",
    "FaultRule",
    "FaultSpecError",
    "fault_response",
    "garble_response",
    "late_commit_answer",
    "parse_fault_spec",
    "schedule_late",
]

ADMIN_PREFIX = "/_sandbox/"
FAULTS_PATH = "/_sandbox/faults"
API_PREFIX = "/api/v1/"

LATENCY = "latency"
STATUS = "status"
RESET = "reset"
DROP_AFTER_COMMIT = "drop_after_commit"
LATE_COMMIT = "late_commit"
GARBLE = "garble"
ACTIONS = (LATENCY, STATUS, RESET, DROP_AFTER_COMMIT, LATE_COMMIT, GARBLE)
#: late_commit delays longer than this are refused (a typo, not a fault worth playing)
_LATE_COMMIT_MAX_S = 3600.0
_CLOSE_MODES = ("rst", "fin")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OPTION_KEYS = ("retry_after", "ms", "skip", "times", "close", "after", "after_max",
                "answer", "field")
_EVENT_LOG_SIZE = 1000

# Reason phrases for the bodies of injected statuses (a proxy's page, not the app's JSON).
_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    507: "Insufficient Storage",
}


class FaultSpecError(ValueError):
    """A fault rule or plan that cannot be understood; the message says why."""


def _compile_path(path: str) -> re.Pattern[str]:
    if path.startswith("~"):
        try:
            return re.compile(path[1:])
        except re.error as exc:
            raise FaultSpecError(f"bad regular expression {path[1:]!r}: {exc}") from None
    return re.compile(fnmatch.translate(path))


def _normalise_path(path: str) -> str:
    path = path.strip()
    if not path:
        return "*"
    if path[0] in "/*~":
        return path
    return API_PREFIX + path


@dataclass(frozen=True)
class FaultRule:
    """One fault: which requests it targets, what it does, and how often.

    ``methods`` is empty for "any method". ``path`` is a glob (``*`` crosses ``/``) or,
    with a leading ``~``, a regular expression that must match the whole path.
    """

    action: str
    methods: tuple[str, ...] = ()
    path: str = "*"
    rate: float = 1.0
    status: int | None = None
    retry_after: str | None = None
    latency_ms: float = 0.0
    skip: int = 0
    times: int | None = None
    close: str = "rst"
    #: late_commit: the app sees the request this many seconds later (up to after_max)
    after_s: float = 0.0
    after_max_s: float | None = None
    #: late_commit: "504" (any 5xx) or "drop"
    answer: str = "504"
    #: garble: the top-level JSON field replaced
    garble_field: str = "count"
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise FaultSpecError(f"unknown fault action {self.action!r}")
        if self.action == STATUS:
            if self.status is None or not 400 <= self.status <= 599:
                raise FaultSpecError(f"a status fault needs a 4xx/5xx status, not {self.status}")
        elif self.status is not None:
            raise FaultSpecError(f"{self.action} takes no status")
        if not 0.0 <= self.rate <= 1.0:
            raise FaultSpecError(f"rate must be between 0 and 1, not {self.rate}")
        if self.latency_ms < 0:
            raise FaultSpecError("ms must not be negative")
        if self.action == LATENCY and self.latency_ms <= 0:
            raise FaultSpecError("a latency fault needs ms=N (N > 0), e.g. 'latency=50'")
        if self.retry_after is not None and self.action != STATUS:
            raise FaultSpecError("retry_after only applies to status faults")
        if self.skip < 0 or (self.times is not None and self.times < 0):
            raise FaultSpecError("skip and times must not be negative")
        if self.action == LATE_COMMIT:
            if not 0 <= self.after_s <= _LATE_COMMIT_MAX_S:
                raise FaultSpecError(f"after must be between 0 and {_LATE_COMMIT_MAX_S:.0f} s")
            if self.after_max_s is not None and not \
                    self.after_s <= self.after_max_s <= _LATE_COMMIT_MAX_S:
                raise FaultSpecError("after_max must be at least after (and at most 3600)")
            if self.answer != "drop" and not (self.answer.isdigit()
                                              and 500 <= int(self.answer) <= 599):
                raise FaultSpecError(f"answer must be a 5xx status or 'drop', not {self.answer!r}")
        elif self.after_s or self.after_max_s is not None or self.answer != "504":
            raise FaultSpecError("after, after_max and answer only apply to late_commit")
        if self.action == GARBLE and not self.garble_field:
            raise FaultSpecError("garble needs field=NAME")
        if self.close not in _CLOSE_MODES:
            raise FaultSpecError(f"close must be one of {', '.join(_CLOSE_MODES)}")
        for method in self.methods:
            if method not in _METHODS:
                raise FaultSpecError(f"unknown HTTP method {method!r}")
        object.__setattr__(self, "_pattern", _compile_path(self.path))

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule targets a request (the path has no query string)."""
        if self.methods and method.upper() not in self.methods:
            return False
        return self._pattern.fullmatch(path) is not None

    @property
    def action_token(self) -> str:
        """The ACTION part of the compact syntax (``503``, ``reset``, ...)."""
        return str(self.status) if self.action == STATUS else self.action

    def to_spec(self) -> str:
        """This rule in the compact CLI syntax (parses back to an equal rule)."""
        target = ",".join(self.methods) + " " + self.path if self.methods else self.path
        parts = [target, self.action_token, _fmt_number(self.rate)]
        options = []
        if self.retry_after is not None:
            options.append(f"retry_after={self.retry_after}")
        if self.latency_ms:
            options.append(f"ms={_fmt_number(self.latency_ms)}")
        if self.skip:
            options.append(f"skip={self.skip}")
        if self.times is not None:
            options.append(f"times={self.times}")
        if self.close != "rst":
            options.append(f"close={self.close}")
        if self.action == LATE_COMMIT:
            options.append(f"after={_fmt_number(self.after_s)}")
            if self.after_max_s is not None:
                options.append(f"after_max={_fmt_number(self.after_max_s)}")
            if self.answer != "504":
                options.append(f"answer={self.answer}")
        if self.action == GARBLE:
            options.append(f"field={self.garble_field}")
        if options:
            parts.append(",".join(options))
        return ":".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "methods": list(self.methods),
            "path": self.path,
            "rate": self.rate,
            "status": self.status,
            "retry_after": self.retry_after,
            "ms": self.latency_ms,
            "skip": self.skip,
            "times": self.times,
            "close": self.close,
            "after": self.after_s,
            "after_max": self.after_max_s,
            "answer": self.answer,
            "field": self.garble_field,
            "spec": self.to_spec(),
        }

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        """A rule from JSON: either a compact-syntax string or an object.

        Object keys: ``action`` (``latency``/``status``/``reset``/``drop_after_commit``,
        or a status number), ``status``, ``methods`` (list) or ``method`` (string, ``*``
        for any), ``path``, ``rate``, ``retry_after``, ``ms``, ``skip``, ``times``,
        ``close``. ``spec`` (as produced by :meth:`to_json`) is ignored when ``action``
        is present.
        """
        if isinstance(data, str):
            return parse_fault_spec(data)
        if not isinstance(data, Mapping):
            raise FaultSpecError(f"a fault rule must be a string or an object, not {data!r}")
        if "action" not in data and isinstance(data.get("spec"), str):
            return parse_fault_spec(data["spec"])
        known = {"action", "status", "methods", "method", "path", "rate", "spec", *_OPTION_KEYS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultSpecError(f"unknown fault rule key(s): {', '.join(unknown)}")
        action_raw = data.get("action")
        status = data.get("status")
        action = str(action_raw) if action_raw is not None else ""
        if action.isdigit():
            status, action = int(action), STATUS
        if status is not None and not isinstance(status, int):
            raise FaultSpecError(f"status must be an integer, not {status!r}")
        methods_raw = data.get("methods", data.get("method", ()))
        if isinstance(methods_raw, str):
            methods_raw = [] if methods_raw.strip() in ("", "*") else methods_raw.split(",")
        if not isinstance(methods_raw, Sequence):
            raise FaultSpecError("methods must be a list of HTTP methods")
        return cls(
            action=action,
            methods=tuple(str(m).strip().upper() for m in methods_raw),
            path=_normalise_path(str(data.get("path", "*"))),
            rate=_number(data.get("rate", 1.0), "rate"),
            status=status,
            retry_after=None if data.get("retry_after") is None else str(data["retry_after"]),
            latency_ms=_number(data.get("ms", 0), "ms"),
            skip=_integer(data.get("skip", 0), "skip"),
            times=None if data.get("times") is None else _integer(data["times"], "times"),
            close=str(data.get("close", "rst")),
            after_s=_number(data.get("after", 0), "after"),
            after_max_s=None if data.get("after_max") is None
            else _number(data["after_max"], "after_max"),
            answer=str(data.get("answer", "504")),
            garble_field=str(data.get("field", "count")),
        )


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise FaultSpecError(f"{name} must be a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise FaultSpecError(f"{name} must be a number, not {value!r}") from None


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise FaultSpecError(f"{name} must be an integer")
    try:
        return int(str(value))
    except ValueError:
        raise FaultSpecError(f"{name} must be an integer, not {value!r}") from None


def _is_action_token(token: str) -> bool:
    token = token.strip()
    if token in (RESET, DROP_AFTER_COMMIT, LATE_COMMIT, GARBLE, LATENCY) \
            or token.startswith(LATENCY + "="):
        return True
    return token.isdigit() and 400 <= int(token) <= 599


def parse_fault_spec(text: str) -> FaultRule:
    """Parse one rule in the compact syntax (see the module docstring).

    The string is read from the right, so a regular-expression target may itself
    contain colons: the rightmost action word splits target from rate and options.
    """
    tokens = text.strip().split(":")
    positions = [i for i, tok in enumerate(tokens) if _is_action_token(tok)]
    if not positions:
        raise FaultSpecError(
            f"no fault action in {text!r}: expected one of 429, 502, 503, 504 (any 4xx/5xx), "
            "reset, drop_after_commit, late_commit, garble, latency=MS"
        )
    at = positions[-1]
    target = ":".join(tokens[:at]).strip()
    action_token = tokens[at].strip()
    rest = [tok.strip() for tok in tokens[at + 1 :]]

    data: dict[str, Any] = {}
    if action_token.startswith(LATENCY + "="):
        data["action"] = LATENCY
        data["ms"] = action_token.split("=", 1)[1]
    elif action_token.isdigit():
        data["action"] = STATUS
        data["status"] = int(action_token)
    else:
        data["action"] = action_token

    if rest and "=" not in rest[0]:
        data["rate"] = rest.pop(0)
    if len(rest) > 1:
        raise FaultSpecError(f"too many ':' parts after the action in {text!r}")
    if rest:
        for option in rest[0].split(","):
            option = option.strip()
            if not option:
                continue
            key, sep, value = option.partition("=")
            key = key.strip()
            if not sep or key not in _OPTION_KEYS:
                raise FaultSpecError(
                    f"bad option {option!r} in {text!r}: expected key=value with key one of "
                    + ", ".join(_OPTION_KEYS)
                )
            data[key] = value.strip()

    methods: list[str] = []
    path = "*"
    if target and target != "*":
        head, sep, tail = target.partition(" ")
        head_methods = [m.strip().upper() for m in head.split(",")]
        if head == "*" and sep:
            path = tail
        elif all(m in _METHODS for m in head_methods) and head == head.upper():
            methods = head_methods
            path = tail if sep else "*"
        elif sep:
            raise FaultSpecError(f"{text!r}: {head!r} is not an HTTP method (or '*')")
        else:
            path = target
    data["methods"] = methods
    data["path"] = _normalise_path(path)
    try:
        return FaultRule.from_json(data)
    except FaultSpecError as exc:
        raise FaultSpecError(f"{text!r}: {exc}") from None


@dataclass(frozen=True)
class FaultPlan:
    """Everything the injector does: global latency, a seed, and the ordered rules."""

    rules: tuple[FaultRule, ...] = ()
    latency_ms: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise FaultSpecError("latency_ms must not be negative")

    @classmethod
    def parse(
        cls, specs: Iterable[str] = (), *, latency_ms: float = 0.0, seed: int | None = None
    ) -> FaultPlan:
        """A plan from compact-syntax strings (the CLI's repeated ``--faults``)."""
        return cls(tuple(parse_fault_spec(s) for s in specs), float(latency_ms), seed)

    @classmethod
    def from_json(cls, data: Any) -> FaultPlan:
        """A plan from JSON: ``{"latency_ms", "seed", "rules": [...]}`` or just the list."""
        if isinstance(data, list):
            data = {"rules": data}
        if not isinstance(data, Mapping):
            raise FaultSpecError("a fault plan must be a JSON object or a list of rules")
        unknown = sorted(set(data) - {"rules", "latency_ms", "seed"})
        if unknown:
            raise FaultSpecError(f"unknown fault plan key(s): {', '.join(unknown)}")
        rules_raw = data.get("rules", [])
        if not isinstance(rules_raw, list):
            raise FaultSpecError("rules must be a list")
        seed = data.get("seed")
        return cls(
            rules=tuple(FaultRule.from_json(r) for r in rules_raw),
            latency_ms=_number(data.get("latency_ms", 0), "latency_ms"),
            seed=None if seed is None else _integer(seed, "seed"),
        )

    @classmethod
    def load(cls, text: str) -> FaultPlan:
        """A plan from a JSON document's text."""
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise FaultSpecError(f"fault plan is not valid JSON: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "seed": self.seed,
            "rules": [r.to_json() for r in self.rules],
        }


@dataclass(frozen=True)
class Decision:
    """What to do with one request: wait ``delay_s``, then ``rule``'s failure (if any).

    ``commit_after_s``: for ``late_commit``, when the app is to see the request (drawn
    from the plan's RNG when the rule gives a range)."""

    delay_s: float = 0.0
    rule: FaultRule | None = None
    commit_after_s: float = 0.0

    @property
    def action(self) -> str | None:
        return None if self.rule is None else self.rule.action


NO_FAULT = Decision()


def fault_response(rule: FaultRule) -> Response:
    """The answer for an injected status: a proxy-style HTML page, not the app's JSON."""
    assert rule.status is not None
    reason = _REASONS.get(rule.status, "Error")
    body = (
        f"<html><head><title>{rule.status} {reason}</title></head>"
        f"<body><h1>{rule.status} {reason}</h1></body></html>\n"
    ).encode()
    headers: list[tuple[str, str]] = [
        ("Content-Type", "text/html"),
        ("X-Sandbox-Fault", rule.action_token),
    ]
    if rule.retry_after is not None:
        headers.append(("Retry-After", rule.retry_after))
    return Response(rule.status, tuple(headers), body)


def late_commit_answer(rule: FaultRule) -> Response | None:
    """What the client gets at once for a late commit: a gateway's 5xx page, or None
    (the connection is dropped)."""
    if rule.answer == "drop":
        return None
    status = int(rule.answer)
    return fault_response(FaultRule(action=STATUS, status=status, path=rule.path))


def garble_response(rule: FaultRule, response: Response) -> Response:
    """``response`` with its JSON body's ``rule.garble_field`` replaced by a string
    (unchanged when the body is not a JSON object with that field)."""
    try:
        data = json.loads(response.body)
    except (ValueError, UnicodeDecodeError):
        return response
    if not isinstance(data, dict) or rule.garble_field not in data:
        return response
    data[rule.garble_field] = "garbled"
    body = json.dumps(data).encode()
    return Response(response.status, response.headers, body)


def schedule_late(after_s: float, call: Any) -> None:
    """Run ``call()`` ``after_s`` seconds from now on a daemon timer (a late commit: the
    application still working on a request its gateway already answered)."""
    timer = threading.Timer(after_s, call)
    timer.daemon = True
    timer.start()


def _json_response(status: int, payload: Any) -> Response:
    return Response(
        status,
        (("Content-Type", "application/json"),),
        json.dumps(payload, sort_keys=True).encode(),
    )


class FaultInjector:
    """The fault plan in force and the bookkeeping to apply it; thread-safe.

    Counters (how many requests each rule saw and how often it fired) and the event log
    are reset whenever a new plan is set, and so is the RNG (to the plan's seed).
    """

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._event_seq = 0
        self._events: deque[dict[str, Any]] = deque(maxlen=_EVENT_LOG_SIZE)
        self.set_plan(plan or FaultPlan())

    def set_plan(self, plan: FaultPlan) -> None:
        seed = plan.seed if plan.seed is not None else secrets.randbits(32)
        with self._lock:
            self._plan = plan
            self._seed = seed
            self._rng = random.Random(seed)
            self._seen = [0] * len(plan.rules)
            self._fired = [0] * len(plan.rules)
            self._events.clear()

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @property
    def seed(self) -> int:
        """The seed in use (chosen at random when the plan gave none)."""
        return self._seed

    @staticmethod
    def is_exempt(path: str) -> bool:
        """The sandbox's own admin endpoints are never faulted."""
        return path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/")

    def decide(self, method: str, path: str) -> Decision:
        """Roll the dice for one request (``path`` without its query string)."""
        plan = self._plan
        if self.is_exempt(path) or (not plan.rules and not plan.latency_ms):
            return NO_FAULT
        with self._lock:
            if plan is not self._plan:  # replaced between the read above and the lock
                plan = self._plan
            delay_ms = plan.latency_ms
            failure: FaultRule | None = None
            commit_after = 0.0
            for index, rule in enumerate(plan.rules):
                if rule.action != LATENCY and failure is not None:
                    continue
                if not rule.matches(method, path):
                    continue
                self._seen[index] += 1
                if self._seen[index] <= rule.skip:
                    continue
                if rule.times is not None and self._fired[index] >= rule.times:
                    continue
                if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                    continue
                self._fired[index] += 1
                delay_ms += rule.latency_ms
                if rule.action != LATENCY:
                    failure = rule
                    commit_after = rule.after_s
                    if rule.action == LATE_COMMIT and rule.after_max_s is not None:
                        commit_after = self._rng.uniform(rule.after_s, rule.after_max_s)
                    self._event_seq += 1
                    self._events.append(
                        {
                            "seq": self._event_seq,
                            "method": method,
                            "path": path,
                            "action": rule.action_token,
                            "rule": index,
                        }
                    )
        return Decision(delay_ms / 1000.0, failure, commit_after)

    def snapshot(self, since: int = 0) -> dict[str, Any]:
        """The plan, the seed, per-rule counters, and fault events after ``since``."""
        with self._lock:
            rules = []
            for index, rule in enumerate(self._plan.rules):
                entry = rule.to_json()
                entry["seen"] = self._seen[index]
                entry["fired"] = self._fired[index]
                rules.append(entry)
            return {
                "latency_ms": self._plan.latency_ms,
                "seed": self._seed,
                "rules": rules,
                "events": [e for e in self._events if e["seq"] > since],
            }

    def handle_admin(self, request: Request) -> Response | None:
        """Answer ``GET``/``POST /_sandbox/faults``; None for any other request.

        ``POST`` replaces the whole plan with the JSON body (a plan object, or a list of
        rules given as compact strings or objects); an empty body or ``{}`` clears it.
        """
        if request.path.rstrip("/") != FAULTS_PATH:
            return None
        if request.method in ("GET", "HEAD"):
            since_raw = request.first("since") or "0"
            try:
                since = int(since_raw)
            except ValueError:
                return _json_response(400, {"since": ["A valid integer is required."]})
            return _json_response(200, self.snapshot(since))
        if request.method == "POST":
            try:
                text = request.body.decode() if request.body.strip() else "{}"
                plan = FaultPlan.load(text)
            except (FaultSpecError, UnicodeDecodeError) as exc:
                return _json_response(400, {"detail": str(exc)})
            self.set_plan(plan)
            return _json_response(200, self.snapshot())
        return Response(
            405,
            (("Content-Type", "application/json"), ("Allow", "GET, POST")),
            json.dumps({"detail": f'Method "{request.method}" not allowed.'}).encode(),
        )
