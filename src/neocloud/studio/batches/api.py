"""``/v1/batches``, OpenAI's batch API: create, retrieve, list (cursor), cancel.

Errors are OpenAI's shapes naming ``param``: a file of another org, or none, is 404
``file_not_found``; a file of the wrong purpose is 400 ``invalid_file_purpose``; cancelling a
batch already done is 409 ``batch_not_cancellable``. Reading is for any key of the org;
creating and cancelling need role ``member`` (as running a model does).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from neocloud.studio.auth import StudioCaller, require_spend
from neocloud.studio.batches import service
from neocloud.studio.batches.domain import (
    COMPLETION_WINDOWS,
    ENDPOINTS,
    LIST_LIMIT_MAX,
    METADATA_MAX_PAIRS,
    BatchStatus,
)
from neocloud.studio.openai_routes import list_page, ok_response, studio_runtime
from neocloud.studio.schemas import load_json
from neocloud.web.schemas import ErrorOut

router = APIRouter(tags=["studio batches"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A bad parameter; `param` names it"},
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    403: {"model": ErrorOut, "description": "The key's role may not do this"},
    404: {"model": ErrorOut, "description": "No such batch or file in the caller's organization"},
}
_BATCH = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["batch"]},
        "endpoint": {"type": "string", "enum": list(ENDPOINTS)},
        "status": {"type": "string", "enum": [s.value for s in BatchStatus]},
        "input_file_id": {"type": "string"},
        "output_file_id": {"type": ["string", "null"]},
        "error_file_id": {"type": ["string", "null"]},
        "request_counts": {"type": "object"},
        "errors": {"type": ["object", "null"]},
        "metadata": {"type": ["object", "null"]},
        "queued_reason": {
            "type": ["string", "null"],
            "description": "Not OpenAI's: why an in_progress batch waits (studio_runner=fleet: "
            "no capacity or quota, or preempted); null while it runs",
        },
    },
}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["input_file_id", "endpoint", "completion_window"],
                    "properties": {
                        "input_file_id": {"type": "string"},
                        "endpoint": {"type": "string", "enum": list(ENDPOINTS)},
                        "completion_window": {"type": "string", "enum": list(COMPLETION_WINDOWS)},
                        "metadata": {
                            "type": ["object", "null"],
                            "maxProperties": METADATA_MAX_PAIRS,
                            "additionalProperties": {"type": "string", "maxLength": 512},
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/batches",
    response_model=None,
    openapi_extra=_CREATE_BODY,
    responses={**_ERRORS, **ok_response("The batch, validating", _BATCH)},
)
async def create_batch(request: Request, caller: StudioCaller) -> dict[str, Any]:
    """A batch of the requests in a ``batch`` file, run within ``completion_window``."""
    require_spend(caller)
    runtime = studio_runtime(request)
    body = load_json(await request.body())
    if not isinstance(body, dict):
        body = {}
    row = service.create_batch(
        db=request.app.state.ctx.db,
        clock=runtime.clock,
        principal=caller,
        input_file_id=body.get("input_file_id"),
        endpoint=body.get("endpoint"),
        completion_window=body.get("completion_window"),
        metadata=body.get("metadata"),
    )
    runtime.batches.nudge()
    return service.batch_out(row)


@router.get(
    "/batches",
    response_model=None,
    responses={**_ERRORS, **ok_response("A page of batches", {"type": "object"})},
)
def list_batches(
    request: Request,
    caller: StudioCaller,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 20,
) -> dict[str, Any]:
    """The org's batches, newest first; ``after`` a batch id pages on."""
    rows, more = service.list_batches(
        db=request.app.state.ctx.db, principal=caller, after=after, limit=limit
    )
    data = [service.batch_out(r) for r in rows]
    return list_page(data, more)


@router.get(
    "/batches/{batch_id}",
    response_model=None,
    responses={**_ERRORS, **ok_response("The batch", _BATCH)},
)
def retrieve_batch(batch_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    row = service.get_batch(db=request.app.state.ctx.db, principal=caller, batch_id=batch_id)
    return service.batch_out(row)


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=None,
    responses={
        **_ERRORS,
        409: {"model": ErrorOut, "description": "The batch is done already"},
        **ok_response("The batch, cancelling (or cancelled)", _BATCH),
    },
)
def cancel_batch(batch_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Cancel: ``cancelling`` until the worker has written what finished, then ``cancelled``."""
    require_spend(caller)
    runtime = studio_runtime(request)
    row = service.cancel_batch(
        db=request.app.state.ctx.db, clock=runtime.clock, principal=caller, batch_id=batch_id
    )
    runtime.batches.nudge()
    return service.batch_out(row)
