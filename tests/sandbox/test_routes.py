"""The route table (gcbatch/sandbox/routes.py): its shape, and the answers it decides.

The answers pinned here are those no handler gives: the redirect of a URL without its
final slash, 404 pages, 405s with their ``Allow`` header, OPTIONS, HEAD, the refusals
of writes, and the doors outside the API (storage, admin) with their own 404 and 405.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator

import pytest

from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.http import Request, Response

BASE = "http://127.0.0.1:8123"
RO = "GET, HEAD, OPTIONS"
RW = "GET, POST, HEAD, OPTIONS"
ITEM = "GET, PUT, PATCH, HEAD, OPTIONS"
UUID = "00000000-0000-4000-8000-000000000000"
HTML = "text/html; charset=utf-8"


# -- the table's shape ----------------------------------------------------------------------


def test_every_handler_takes_its_patterns_parameters() -> None:
    from gcbatch.sandbox.routes import ROUTES

    for route in ROUTES:
        params = list(inspect.signature(route.handler).parameters.values())
        assert params[0].name == "ctx", route.pattern
        rest = params[1:]
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest):
            continue
        assert {p.name for p in rest} == set(route.regex.groupindex), route.pattern


def test_routes_of_one_url_agree_on_allow_and_pipeline() -> None:
    # The 405 of a URL takes the Allow of its first route: they must all say the same.
    from gcbatch.sandbox.routes import ROUTES, Route

    first: dict[str, Route] = {}
    for route in ROUTES:
        seen = first.setdefault(route.pattern, route)
        assert (seen.allow, seen.bare) == (route.allow, route.bare), route.pattern


def test_no_route_is_shadowed_by_an_earlier_one() -> None:
    from gcbatch.sandbox.routes import ANY, ROUTES, resolve

    for route in ROUTES:
        if route.methods == ANY or any(c in route.pattern for c in "(*?["):
            continue
        path = route.pattern.replace("{key:path}", "a/b").replace("{upload:path}", "u")
        for name in route.regex.groupindex:
            path = path.replace("{" + name + "}", "x1")
        for method in route.methods:
            found = resolve(method, path, ROUTES)
            assert found is not None and found.allowed, (method, path)
            assert found.route is route, (method, path, found.route.pattern)


# -- the answers it decides -----------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> Iterator[SandboxApp]:
    sandbox = SandboxApp(None, clock=lambda: 1_800_000_000.0)
    yield sandbox
    sandbox.close()


def call(app: SandboxApp, method: str, path: str, token: str | None = "demo-token") -> Response:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    target, _, query = path.partition("?")
    params = {k: (v,) for k, v in (p.split("=") for p in query.split("&") if p)}
    return app.handle(Request(method, target, params, headers, b"", BASE))


def body(response: Response) -> object:
    return json.loads(response.body) if response.body else None


@pytest.mark.parametrize(
    ("method", "path", "location"),
    [
        ("GET", "/api/v1/algorithms", f"{BASE}/api/v1/algorithms/"),
        ("HEAD", "/api/v1/algorithms/jobs", f"{BASE}/api/v1/algorithms/jobs/"),
        ("GET", "/api/v1/anything/at/all?a=1", f"{BASE}/api/v1/anything/at/all/?a=1"),
        # The bare root too (to a double slash, which then finds nothing).
        ("GET", "/api/v1/", f"{BASE}/api/v1//"),
    ],
)
def test_a_get_without_the_final_slash_is_redirected(
    app: SandboxApp, method: str, path: str, location: str
) -> None:
    response = call(app, method, path)
    assert (response.status, response.header("Location"), response.body) == (301, location, b"")


@pytest.mark.parametrize(
    ("method", "path", "token"),
    [
        ("POST", "/api/v1/uploads", "demo-token"),  # no slash, not a GET: not found
        ("OPTIONS", "/api/v1/algorithms", "demo-token"),
        ("GET", "/api/v1//", "demo-token"),
        ("GET", "/api/v1/algorithms/jobs/a/b/", "demo-token"),
        ("GET", "/api/v1/uploads/a/b/", "demo-token"),
        ("GET", "/api/v1/uploads/a/b/other/", "demo-token"),
        ("GET", "/api/v1/cases/", None),
        ("GET", "/", None),
        ("DELETE", "/nothing", "demo-token"),
    ],
)
def test_urls_no_view_serves_get_djangos_page(
    app: SandboxApp, method: str, path: str, token: str | None
) -> None:
    response = call(app, method, path, token)
    assert (response.status, response.header("Content-Type")) == (404, HTML)
    assert response.body == b"Not Found"


def test_the_token_is_checked_before_the_url(app: SandboxApp) -> None:
    response = call(app, "GET", "/nothing", token="wrong")
    assert (response.status, body(response)) == (401, {"detail": "Invalid token."})
    assert response.header("WWW-Authenticate") == "Bearer"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/algorithms/", RO),
        ("POST", "/api/v1/gcapi/", RO),
        ("PUT", "/api/v1/algorithms/jobs/", RW),
        ("POST", f"/api/v1/algorithms/jobs/{UUID}/", RO),
        ("DELETE", "/api/v1/uploads/", RW),
        ("POST", f"/api/v1/uploads/{UUID}/s3/list-parts/", RO),
        ("DELETE", "/api/v1/archives/items/", RW),
        ("POST", f"/api/v1/archives/items/{UUID}/", ITEM),
        # The multipart actions take PATCH only, not even OPTIONS.
        ("GET", f"/api/v1/uploads/{UUID}/s3/generate-presigned-urls/", "PATCH, OPTIONS"),
        ("OPTIONS", f"/api/v1/uploads/{UUID}/s3/complete-multipart-upload/", "PATCH, OPTIONS"),
        ("POST", "/media/images/a/b/c/d/e", "GET, HEAD"),
        ("OPTIONS", "/media/x", "GET, HEAD"),
    ],
)
def test_a_method_the_url_does_not_take_is_405_with_allow(
    app: SandboxApp, method: str, path: str, allow: str
) -> None:
    response = call(app, method, path)
    assert (response.status, response.header("Allow")) == (405, allow)
    assert body(response) == {"detail": f'Method "{method}" not allowed.'}


@pytest.mark.parametrize(
    ("path", "allow"),
    [
        ("/api/v1/gcapi/", RO),
        ("/api/v1/algorithms/jobs/", RW),
        (f"/api/v1/algorithms/jobs/{UUID}/", RO),
        ("/api/v1/archives/items/", RW),
        (f"/api/v1/archives/items/{UUID}/", ITEM),
    ],
)
def test_options_describe_nothing_but_allow(app: SandboxApp, path: str, allow: str) -> None:
    response = call(app, "OPTIONS", path, token=None)
    assert (response.status, response.header("Allow"), body(response)) == (200, allow, {})


def test_head_answers_like_get_without_a_body(app: SandboxApp) -> None:
    get = call(app, "GET", "/api/v1/algorithms/")
    head = call(app, "HEAD", "/api/v1/algorithms/")
    assert (head.status, head.headers, head.body) == (200, get.headers, b"")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", f"/api/v1/algorithms/jobs/{UUID}/", RO),
        ("DELETE", f"/api/v1/algorithms/jobs/{UUID}/", RO),
        ("POST", "/api/v1/archives/items/", RW),
        ("PATCH", f"/api/v1/archives/items/{UUID}/", ITEM),
    ],
)
def test_writes_the_platform_refuses_before_any_view(
    app: SandboxApp, method: str, path: str, allow: str
) -> None:
    refused = call(app, method, path)
    assert (refused.status, refused.header("Allow")) == (403, allow)
    assert body(refused) == {"detail": "You do not have permission to perform this action."}
    anonymous = call(app, method, path, token=None)
    assert (anonymous.status, anonymous.header("Allow")) == (401, allow)


def test_an_empty_segment_is_a_pk_that_is_not_found(app: SandboxApp) -> None:
    response = call(app, "GET", "/api/v1/algorithms//")
    assert (response.status, body(response)) == (404, {"detail": "Not found."})


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/_storage/public/logos/algorithm/x/logo.png", 404, "NoSuchKey"),
        ("GET", f"/_storage/uploads/{UUID}", 404, "NoSuchKey"),
        ("DELETE", "/_storage/protected/x", 405, "MethodNotAllowed"),
        ("POST", "/_storage/", 405, "MethodNotAllowed"),
        ("PUT", "/_storage/uploads/not-a-uuid", 403, "AccessDenied"),
    ],
)
def test_storage_answers_like_s3_without_a_token(
    app: SandboxApp, method: str, path: str, status: int, code: str
) -> None:
    response = call(app, method, path, token="wrong")  # never checked
    assert (response.status, response.header("Content-Type")) == (status, "application/xml")
    assert f"<Code>{code}</Code>".encode() in response.body


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/_sandbox/stats", 200),
        ("GET", "/_sandbox/stats//", 200),
        ("GET", "/_sandbox/config/", 200),
        ("HEAD", "/_sandbox/stats", 404),
        ("DELETE", "/_sandbox/config", 404),
        ("GET", "/_sandbox/faults", 404),  # answered by the transports, never the app
        ("GET", "/_sandbox/", 404),
    ],
)
def test_the_admin_door_takes_no_token_and_has_its_own_404(
    app: SandboxApp, method: str, path: str, status: int
) -> None:
    response = call(app, method, path, token="wrong")
    assert response.status == status
    if status == 404:
        assert body(response) == {"detail": "Not found."}
