"""``/v1/files``, OpenAI's files API: upload (multipart), list, retrieve, content, delete.

Errors are OpenAI's 400/404 shapes naming ``param``. Reading is for any key of the org;
uploading and deleting need role ``member`` (as running a model does).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from neocloud.kernel.errors import InvalidRequest
from neocloud.studio import files
from neocloud.studio.auth import StudioCaller, require_spend
from neocloud.studio.openai_routes import list_page, ok_response, studio_runtime
from neocloud.web.schemas import ErrorOut

router = APIRouter(tags=["studio files"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A bad parameter or file; `param` names it"},
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    403: {"model": ErrorOut, "description": "The key's role may not do this"},
    404: {"model": ErrorOut, "description": "No such file in the caller's organization"},
    413: {"model": ErrorOut, "description": "The file, or the org's files, are over the limit"},
}
_FILE_OBJECT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["file"]},
        "bytes": {"type": "integer"},
        "created_at": {"type": "integer"},
        "filename": {"type": "string"},
        "purpose": {"type": "string", "enum": [p.value for p in files.Purpose]},
        "status": {"type": "string"},
        "expires_at": {"type": ["integer", "null"]},
        "status_details": {"type": ["string", "null"]},
    },
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["fine-tune", "batch"]},
                    },
                }
            }
        },
    }
}


@router.post(
    "/files",
    response_model=None,
    openapi_extra=_UPLOAD_BODY,
    responses={**_ERRORS, **ok_response("The file", _FILE_OBJECT)},
)
async def upload_file(request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Upload a JSONL file (``purpose``: ``fine-tune`` or ``batch``), checked line by line."""
    runtime = studio_runtime(request)
    limits = runtime.file_limits
    try:
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            purpose = form.get("purpose")
            if not isinstance(upload, UploadFile):
                raise InvalidRequest(
                    "'file' is required: a multipart part with a file",
                    code="missing_required_parameter",
                    param="file",
                )
            if not isinstance(purpose, str) or not purpose:
                raise InvalidRequest(
                    "'purpose' is required", code="missing_required_parameter", param="purpose"
                )
            content = await upload.read(limits.file_max_bytes + 1)
            filename = upload.filename or "file.jsonl"
    except MultiPartException as exc:
        raise InvalidRequest(
            f"the body must be multipart/form-data: {exc.message}",
            code="invalid_multipart",
            param="file",
        ) from None
    row = await run_in_threadpool(
        lambda: files.create_file(
            db=request.app.state.ctx.db,
            clock=runtime.clock,
            store=runtime.files,
            limits=limits,
            principal=caller,
            filename=filename,
            purpose=purpose,
            content=content,
        )
    )
    return files.file_out(row)


@router.get(
    "/files",
    response_model=None,
    responses={**_ERRORS, **ok_response("A page of files", {"type": "object"})},
)
def list_files(
    request: Request,
    caller: StudioCaller,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=files.LIST_LIMIT_MAX)] = files.LIST_LIMIT_MAX,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    purpose: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """The org's files, newest first by default; ``after`` a file id pages on."""
    rows, more = files.list_files(
        db=request.app.state.ctx.db,
        principal=caller,
        after=after,
        limit=limit,
        order=order,
        purpose=purpose,
    )
    data = [files.file_out(r) for r in rows]
    return list_page(data, more)


@router.get(
    "/files/{file_id}",
    response_model=None,
    responses={**_ERRORS, **ok_response("The file", _FILE_OBJECT)},
)
def retrieve_file(file_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    row = files.get_file(db=request.app.state.ctx.db, principal=caller, file_id=file_id)
    return files.file_out(row)


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses={
        **_ERRORS,
        200: {"description": "The file's bytes", "content": {"application/octet-stream": {}}},
    },
)
def file_content(file_id: str, request: Request, caller: StudioCaller) -> Response:
    runtime = studio_runtime(request)
    row, content = files.file_content(
        db=request.app.state.ctx.db, store=runtime.files, principal=caller, file_id=file_id
    )
    safe = "".join(c for c in row.filename if c.isalnum() or c in "._-") or "file"
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{safe}"'},
    )


@router.delete(
    "/files/{file_id}",
    response_model=None,
    responses={**_ERRORS, **ok_response("Deleted", {"type": "object"})},
)
def delete_file(file_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Delete a file and its content (role member or higher)."""
    require_spend(caller)
    runtime = studio_runtime(request)
    files.delete_file(
        db=request.app.state.ctx.db, store=runtime.files, principal=caller, file_id=file_id
    )
    return {"id": file_id, "object": "file", "deleted": True}
