"""What the studio's OpenAI-shaped job routers (files, fine-tuning, batches) share: a list page
in OpenAI's cursor shape, an OpenAPI 200 answer with a schema, and the runtime of the app."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from neocloud.studio.runtime import StudioRuntime


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's list object: ``after`` the ``last_id`` pages on while ``has_more``."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def ok_response(description: str, schema: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """An OpenAPI ``responses`` entry: 200 with a JSON body of ``schema``."""
    return {200: {"description": description, "content": {"application/json": {"schema": schema}}}}


def studio_runtime(request: Request) -> StudioRuntime:
    runtime: StudioRuntime = request.app.state.studio
    return runtime
