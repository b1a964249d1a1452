"""The job and image lists' filters as the platform checks them (django-filter model
choices on uuid pks, observed on the real application, GC 9957bfc), and the image list's
order (``Image.Meta.ordering = ("name",)``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gcbatch.sandbox.app import SandboxApp
from gcbatch.sandbox.transport import SandboxTransport

UNKNOWN = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    app = SandboxApp(None)
    with httpx.Client(transport=SandboxTransport(app), base_url="http://localhost/api/v1/",
                      headers={"Authorization": "Bearer demo-token"}) as client:
        yield client
    app.close()


@pytest.mark.parametrize(("query", "body"), [
    ("algorithms/jobs/?input_image=x", {"input_image": ["“x” is not a valid UUID."]}),
    ("algorithms/jobs/?output_image=x", {"output_image": ["“x” is not a valid UUID."]}),
    ("algorithms/jobs/?input_image=", {"input_image": ["“” is not a valid UUID."]}),
    ("algorithms/jobs/?input_image=x&output_image=y", {
        "input_image": ["“x” is not a valid UUID."],
        "output_image": ["“y” is not a valid UUID."]}),
    (f"algorithms/jobs/?input_image={UNKNOWN}", {"input_image": [
        f"Select a valid choice. {UNKNOWN} is not one of the available choices."]}),
    ("cases/images/?job_input=x", {"job_input": ["“x” is not a valid UUID."]}),
    ("cases/images/?job_output=", {"job_output": ["“” is not a valid UUID."]}),
    ("cases/images/?archive=x", {"archive": ["“x” is not a valid UUID."]}),
    (f"cases/images/?job_input={UNKNOWN}", {"job_input": [
        f"Select a valid choice. {UNKNOWN} is not one of the available choices."]}),
    (f"cases/images/?archive={UNKNOWN}", {"archive": [
        f"Select a valid choice. {UNKNOWN} is not one of the available choices."]}),
    (f"cases/images/?job_input=x&archive={UNKNOWN}", {
        "job_input": ["“x” is not a valid UUID."],
        "archive": [f"Select a valid choice. {UNKNOWN} is not one of the available choices."]}),
])
def test_bad_filter_values_answer_the_platforms_messages(
    api: httpx.Client, query: str, body: dict[str, list[str]]
) -> None:
    answer = api.get(query)
    assert (answer.status_code, answer.json()) == (400, body)


def test_a_filter_naming_an_existing_object_of_anyone_is_accepted(api: httpx.Client) -> None:
    archive = api.get("archives/", params={"slug": "lung-archive"}).json()["results"][0]
    images = api.get("cases/images/", params={"archive": archive["pk"]}).json()
    assert images["count"] == 3
    image = images["results"][0]["pk"]
    jobs = api.get("algorithms/jobs/", params={"input_image": image})
    assert jobs.status_code == 200 and jobs.json()["count"] == 0
    # an empty name is no filter (a CharFilter, not a model choice)
    assert api.get("cases/images/?name=").json()["count"] == 3


def test_images_are_listed_by_name(api: httpx.Client) -> None:
    names = [i["name"] for i in api.get("cases/images/").json()["results"]]
    assert names == sorted(names) == ["p001.mha", "p002.mha", "p003.mha"]
