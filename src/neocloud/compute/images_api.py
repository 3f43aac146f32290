"""Image routes: the catalog for everyone, publish/change/retire for operator admins.

Mounted by ``compute.api``'s router (so under ``/api/v1`` with compute's other routes)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query

from neocloud.compute import images
from neocloud.compute.schemas import ImageCreate, ImageOut, ImageUpdate
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAG_IMAGES: list[str | Enum] = ["images"]
ImageName = Annotated[str, Path(max_length=64)]


@router.get("/images", response_model=ListOut[ImageOut], tags=TAG_IMAGES)
def list_images(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    include_retired: Annotated[bool, Query(description="also retired images")] = False,
) -> ListOut[ImageOut]:
    """The OS images instances and clusters may name (by name), with their OS, CUDA driver
    and toolkit, login user, whether cloud-init is there, the drivers that can install them,
    and which one is the default."""
    page = images.list_images(
        db=ctx.db, include_retired=include_retired, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[ImageOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/images/{name}", response_model=ImageOut, tags=TAG_IMAGES)
def get_image(name: ImageName, ctx: Ctx, caller: Caller) -> ImageOut:
    """One image, retired or not."""
    return ImageOut.of(images.get_image(db=ctx.db, name=name))


@router.post("/images", response_model=ImageOut, status_code=201, tags=TAG_IMAGES)
def publish_image(ctx: Ctx, caller: Caller, body: ImageCreate) -> ImageOut:
    """Publish an image (operator admins). Names are never reused (409 ``image_exists``);
    the first image, or one with ``is_default``, becomes the default."""
    spec = images.ImageSpec(**body.model_dump())
    return ImageOut.of(images.publish_image(db=ctx.db, clock=ctx.clock, actor=caller, spec=spec))


@router.patch("/images/{name}", response_model=ImageOut, tags=TAG_IMAGES)
def update_image(name: ImageName, ctx: Ctx, caller: Caller, body: ImageUpdate) -> ImageOut:
    """Change an image's description or drivers, or make it the default (operator admins).
    A retired image is 409 ``image_retired``."""
    changes = images.ImageChanges(**body.model_dump())
    row = images.update_image(db=ctx.db, clock=ctx.clock, actor=caller, name=name, changes=changes)
    return ImageOut.of(row)


@router.delete("/images/{name}", response_model=ImageOut, tags=TAG_IMAGES)
def retire_image(name: ImageName, ctx: Ctx, caller: Caller) -> ImageOut:
    """Retire an image (operator admins): no new instance takes it, those running keep it.
    The default image is 409 ``image_is_default`` until another is made the default."""
    return ImageOut.of(images.retire_image(db=ctx.db, clock=ctx.clock, actor=caller, name=name))
