"""The operator's model registry, under ``/api/v1/studio/models``.

``GET`` lists the whole catalog (built-in and registered, servable or not) to any key, with
where a registered model runs (path, upstream URLs) shown to operator staff only; ``POST``
registers a local checkpoint or an upstream and ``DELETE`` removes one (operator admins). A
change is served by this process at once and by the others within their poll (``registry``).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from neocloud.kernel.auth import Principal
from neocloud.kernel.errors import Conflict, NotFound
from neocloud.studio.catalog import CatalogModel, Flavor
from neocloud.studio.registry import ModelSpec, list_registered, register_model, remove_model
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import StudioModelRow
from neocloud.web.deps import Caller, Ctx
from neocloud.web.schemas import ERROR_RESPONSES, ListOut, RequestModel, ResponseModel, Time

router = APIRouter(responses=ERROR_RESPONSES)
TAGS: list[str | Enum] = ["studio models"]


class StudioModelCreate(RequestModel):
    id: str = Field(max_length=128, examples=["acme/llama-3-8b"])
    path: str | None = Field(None, max_length=1000, description="A local HF checkpoint dir")
    upstream_urls: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Base URLs of an OpenAI-compatible server's replicas",
        examples=[["http://10.0.0.5:8000/v1"]],
    )
    upstream_model: str | None = Field(None, max_length=256)
    context_length: int | None = Field(None, ge=1)
    # Required for a registration (422 ``price_required`` without): 0 serves it free on purpose.
    input_price_per_m: Decimal | None = Field(
        None, max_digits=20, decimal_places=6, description="Per 1M tokens; 0 is free"
    )
    output_price_per_m: Decimal | None = Field(
        None, max_digits=20, decimal_places=6, description="Per 1M tokens; 0 is free"
    )
    flavor: Flavor = Flavor.BASE
    deprecated_on: date | None = None


class PricingOut(ResponseModel):
    input_per_m_tokens: str
    output_per_m_tokens: str


class StudioModelOut(ResponseModel):
    id: str
    object: Literal["studio.model"] = "studio.model"
    kind: str
    engine: str
    source: Literal["builtin", "path", "upstream"]
    context_length: int
    flavor: str
    pricing: PricingOut
    deprecated_on: date | None
    servable: bool
    path: str | None = None
    upstream_urls: list[str] | None = None
    upstream_model: str | None = None
    created_at: Time | None = None


class DeletedOut(ResponseModel):
    id: str
    object: Literal["studio.model"] = "studio.model"
    deleted: bool = True


def _runtime(request: Request) -> StudioRuntime:
    runtime: StudioRuntime = request.app.state.studio
    return runtime


def _out(
    runtime: StudioRuntime, model: CatalogModel, row: StudioModelRow | None, caller: Principal
) -> StudioModelOut:
    show = row is not None and caller.is_operator
    source: Any = row.source if row is not None else "builtin"
    return StudioModelOut(
        id=model.id,
        kind=model.kind.value,
        engine=model.engine,
        source=source,
        context_length=model.context_length,
        flavor=model.flavor.value,
        pricing=PricingOut(
            input_per_m_tokens=str(model.input_price_per_m),
            output_per_m_tokens=str(model.output_price_per_m),
        ),
        deprecated_on=model.deprecated_on,
        servable=runtime.catalog.is_servable(model, runtime.clock.now()),
        path=row.path if show and row is not None else None,
        upstream_urls=row.upstream_urls if show and row is not None else None,
        upstream_model=model.upstream_model,
        created_at=row.created_at if row is not None else None,
    )


@router.get("/studio/models", response_model=ListOut[StudioModelOut], tags=TAGS)
def list_studio_models(request: Request, ctx: Ctx, caller: Caller) -> ListOut[StudioModelOut]:
    """Every model of the catalog, built-in and registered, with its engine and prices."""
    runtime = _runtime(request)
    rows = {row.id: row for row in list_registered(db=ctx.db)}
    models = sorted(runtime.catalog.models.values(), key=lambda m: m.id)
    data = [_out(runtime, m, rows.get(m.id), caller) for m in models]
    return ListOut(data=data, has_more=False)


@router.post("/studio/models", response_model=StudioModelOut, status_code=201, tags=TAGS)
def create_studio_model(
    body: StudioModelCreate, request: Request, ctx: Ctx, caller: Caller
) -> StudioModelOut:
    """Register a local checkpoint (``path``) or an upstream (``upstream_urls``); operator
    admins. Served by this process at once, by the others within their poll."""
    runtime = _runtime(request)
    registered = {row.id for row in list_registered(db=ctx.db)}
    row = register_model(
        db=ctx.db,
        clock=ctx.clock,
        principal=caller,
        spec=ModelSpec(
            id=body.id,
            path=body.path,
            upstream_urls=tuple(body.upstream_urls),
            upstream_model=body.upstream_model,
            context_length=body.context_length,
            input_price_per_m=body.input_price_per_m,
            output_price_per_m=body.output_price_per_m,
            flavor=body.flavor,
            deprecated_on=body.deprecated_on,
        ),
        taken=set(runtime.catalog.models) - registered,
    )
    runtime.models.sync()
    return _out(runtime, runtime.catalog.models[row.id], row, caller)


@router.get("/studio/models/{model_id:path}", response_model=StudioModelOut, tags=TAGS)
def get_studio_model(model_id: str, request: Request, ctx: Ctx, caller: Caller) -> StudioModelOut:
    runtime = _runtime(request)
    model = runtime.catalog.models.get(model_id)
    if model is None:
        raise NotFound(f"no model {model_id!r}", code="model_not_found", param="model")
    row = next((r for r in list_registered(db=ctx.db) if r.id == model_id), None)
    return _out(runtime, model, row, caller)


@router.delete("/studio/models/{model_id:path}", response_model=DeletedOut, tags=TAGS)
def delete_studio_model(model_id: str, request: Request, ctx: Ctx, caller: Caller) -> DeletedOut:
    """Remove a registered model (operator admins); built-in models cannot be removed."""
    runtime = _runtime(request)
    registered = {row.id for row in list_registered(db=ctx.db)}
    if model_id in runtime.catalog.models and model_id not in registered:
        caller.require_operator(write=True)
        raise Conflict(
            f"the model {model_id!r} is built in and cannot be removed",
            code="model_builtin",
            param="model",
        )
    remove_model(db=ctx.db, principal=caller, model_id=model_id)
    _runtime(request).models.sync()
    return DeletedOut(id=model_id)
