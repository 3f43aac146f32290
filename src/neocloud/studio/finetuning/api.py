"""``/v1/fine_tuning/jobs`` (OpenAI's fine-tuning API) and ``DELETE /v1/models/{id}`` for a
fine-tuned model. Bodies are read and checked here so a bad one is OpenAI's 400 naming
``param``; creating and cancelling need role ``member`` (they spend), reading any key of the org.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from neocloud.kernel.errors import InvalidRequest
from neocloud.studio.auth import StudioCaller
from neocloud.studio.finetuning import service
from neocloud.studio.finetuning.serving import FineTunedModels, fine_tunable
from neocloud.studio.openai_routes import list_page, studio_runtime
from neocloud.studio.schemas import load_json
from neocloud.studio.tables import FineTuneCheckpointRow, FineTuneEventRow, FineTuneJobRow
from neocloud.web.schemas import ErrorOut

router = APIRouter(tags=["studio fine-tuning"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A bad parameter; `param` names it"},
    401: {"model": ErrorOut, "description": "Missing or invalid API key"},
    403: {"model": ErrorOut, "description": "The key's role may not do this"},
    404: {"model": ErrorOut, "description": "No such job (or model) in the caller's organization"},
    409: {"model": ErrorOut, "description": "The job has finished: it cannot be cancelled"},
}
_OBJECT = {"description": "OpenAI's object", "content": {"application/json": {"schema": {}}}}
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "training_file"],
                    "properties": {
                        "model": {"type": "string", "maxLength": 128},
                        "training_file": {"type": "string", "maxLength": 40},
                        "validation_file": {"type": ["string", "null"], "maxLength": 40},
                        "suffix": {"type": ["string", "null"], "maxLength": 64},
                        "seed": {"type": ["integer", "null"], "minimum": 0},
                        "hyperparameters": {"type": "object"},
                        "method": {"type": "object"},
                    },
                }
            }
        },
    }
}


def _models(request: Request) -> FineTunedModels:
    models: FineTunedModels = request.app.state.studio.finetunes
    return models


def job_out(row: FineTuneJobRow) -> dict[str, Any]:
    """OpenAI's ``fine_tuning.job`` object."""
    hp = dict(row.hyperparameters)
    return {
        "id": row.id,
        "object": "fine_tuning.job",
        "created_at": int(row.created_at.timestamp()),
        "error": row.error,
        "fine_tuned_model": row.fine_tuned_model,
        "finished_at": int(row.finished_at.timestamp()) if row.finished_at else None,
        "hyperparameters": {
            "n_epochs": hp["n_epochs"],
            "batch_size": hp["batch_size"],
            "learning_rate_multiplier": hp["learning_rate_multiplier"],
        },
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "model": row.model,
        "organization_id": row.org_id,
        "result_files": list(row.result_files),
        "seed": row.seed,
        "status": row.status,
        "trained_tokens": row.trained_tokens,
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "user_provided_suffix": row.suffix,
        "estimated_finish": None,
        "integrations": None,
        "metadata": None,
        "runner": row.runner,
        "queued_reason": row.reason,
    }


def event_out(row: FineTuneEventRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "fine_tuning.job.event",
        "created_at": int(row.created_at.timestamp()),
        "level": row.level,
        "message": row.message,
        "data": row.data,
        "type": row.type,
    }


def checkpoint_out(row: FineTuneCheckpointRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": int(row.created_at.timestamp()),
        "fine_tuned_model_checkpoint": row.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": row.job_id,
        "metrics": row.metrics,
        "step_number": row.step_number,
    }


Limit = Annotated[int, Query(ge=1, le=service.LIST_LIMIT_MAX)]
After = Annotated[str | None, Query(max_length=64)]


@router.post(
    "/fine_tuning/jobs",
    response_model=None,
    openapi_extra=_CREATE_BODY,
    responses={**_ERRORS, 200: _OBJECT},
)
async def create_job(request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Fine-tune ``model`` with LoRA on ``training_file`` (hyperparameters in the docs)."""
    body = load_json(await request.body())
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    runtime = studio_runtime(request)
    bases = fine_tunable(runtime.catalog)
    ctx = request.app.state.ctx
    row = await run_in_threadpool(
        lambda: service.create_job(
            db=ctx.db,
            clock=runtime.clock,
            principal=caller,
            bases=bases,
            body=body,
            runner=ctx.settings.studio_runner,  # shown on the job: where it will train
        )
    )
    nudge = getattr(request.app.state, "finetune_nudge", None)
    if nudge is not None:
        nudge()
    return job_out(row)


@router.get("/fine_tuning/jobs", response_model=None, responses={**_ERRORS, 200: _OBJECT})
def list_jobs(
    request: Request, caller: StudioCaller, after: After = None, limit: Limit = 20
) -> dict[str, Any]:
    """The org's jobs, newest first."""
    rows, more = service.list_jobs(
        db=request.app.state.ctx.db, principal=caller, after=after, limit=limit
    )
    return list_page([job_out(r) for r in rows], more)


@router.get("/fine_tuning/jobs/{job_id}", response_model=None, responses={**_ERRORS, 200: _OBJECT})
def retrieve_job(job_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    return job_out(service.get_job(db=request.app.state.ctx.db, principal=caller, job_id=job_id))


@router.post(
    "/fine_tuning/jobs/{job_id}/cancel",
    response_model=None,
    responses={**_ERRORS, 200: _OBJECT},
)
def cancel_job(job_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Cancel a job that has not finished; a running one stops at its next step."""
    row = service.cancel_job(
        db=request.app.state.ctx.db,
        clock=studio_runtime(request).clock,
        principal=caller,
        job_id=job_id,
    )
    return job_out(row)


@router.get(
    "/fine_tuning/jobs/{job_id}/events", response_model=None, responses={**_ERRORS, 200: _OBJECT}
)
def list_events(
    job_id: str, request: Request, caller: StudioCaller, after: After = None, limit: Limit = 20
) -> dict[str, Any]:
    """The job's events, newest first: messages, and each step's training (and validation)
    loss as ``type: metrics`` with ``data``."""
    rows, more = service.list_events(
        db=request.app.state.ctx.db, principal=caller, job_id=job_id, after=after, limit=limit
    )
    return list_page([event_out(r) for r in rows], more)


@router.get(
    "/fine_tuning/jobs/{job_id}/checkpoints",
    response_model=None,
    responses={**_ERRORS, 200: _OBJECT},
)
def list_checkpoints(
    job_id: str, request: Request, caller: StudioCaller, after: After = None, limit: Limit = 10
) -> dict[str, Any]:
    """The job's checkpoints (one per epoch), the latest first."""
    rows, more = service.list_checkpoints(
        db=request.app.state.ctx.db, principal=caller, job_id=job_id, after=after, limit=limit
    )
    return list_page([checkpoint_out(r) for r in rows], more)


@router.delete("/models/{model_id:path}", response_model=None, responses={**_ERRORS, 200: _OBJECT})
def delete_model(model_id: str, request: Request, caller: StudioCaller) -> dict[str, Any]:
    """Delete a fine-tuned model of the caller's org (role admin); it stops being served."""
    service.delete_model(db=request.app.state.ctx.db, principal=caller, model_id=model_id)
    _models(request).forget(model_id)
    return {"id": model_id, "object": "model", "deleted": True}
