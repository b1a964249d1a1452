"""``GET gcapi/``: which versions of the official client the server supports.

The sandbox advertises 0.16.1 (configurable) where the recorded server said 0.13.2, which
current gcapi warns about (docs/fidelity.md)."""

from __future__ import annotations

from gcbatch.sandbox.context import Ctx
from gcbatch.sandbox.http import Response
from gcbatch.sandbox.responses import json_response


def versions(ctx: Ctx) -> Response:
    return json_response(
        200,
        {
            "latest_version": ctx.config.gcapi_latest_version,
            "lowest_supported_version": ctx.config.gcapi_lowest_supported_version,
        },
        allow=ctx.allow,
    )
