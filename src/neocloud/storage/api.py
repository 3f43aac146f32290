"""Storage routes: ``/storage-pools`` (operator) and ``/filesystems`` (tenants). Thin: the
services validate and write desired state; the worker's storage step acts on it."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from neocloud.storage import service
from neocloud.storage.domain import Backend
from neocloud.storage.schemas import (
    FilesystemAttach,
    FilesystemCreate,
    FilesystemOut,
    FilesystemResize,
    PoolCreate,
    PoolOut,
)
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAG_POOLS: list[str | Enum] = ["storage pools"]
TAG_FS: list[str | Enum] = ["filesystems"]
PoolRef = Annotated[str, Path(max_length=63)]
FsId = Annotated[str, Path(max_length=40)]
AttId = Annotated[str, Path(max_length=40)]


def nudge(request: Request) -> None:
    poke = getattr(request.app.state, "compute_nudge", None)
    if poke is not None:
        poke()


@router.post("/storage-pools", response_model=PoolOut, status_code=201, tags=TAG_POOLS)
def create_pool(request: Request, body: PoolCreate, ctx: Ctx, caller: Caller) -> PoolOut:
    """Group storage nodes into a pool (operator admin). Each node must have ``role=storage``,
    be available and in no other pool; a glusterfs pool needs a multiple of ``replica`` nodes
    (422 naming ``node_ids`` or the node's index). A glusterfs pool starts ``creating`` while
    the worker starts glusterd and joins the nodes, then ``ready`` (or ``failed`` with why)."""
    spec = service.PoolSpec(
        name=body.name,
        backend=Backend(body.backend),
        node_ids=list(body.node_ids),
        replica=body.replica,
        brick_root=body.brick_root,
    )
    row = service.create_pool(db=ctx.db, clock=ctx.clock, actor=caller, spec=spec)
    nudge(request)
    return PoolOut.of(row)


@router.get("/storage-pools", response_model=ListOut[PoolOut], tags=TAG_POOLS)
def list_pools(ctx: Ctx, caller: Caller, paging: Paging) -> ListOut[PoolOut]:
    """Pools, by id (tenants see them to choose one for a filesystem)."""
    page = service.list_pools(db=ctx.db, actor=caller, limit=paging.limit, after=paging.after)
    return ListOut(
        data=[PoolOut.of(p) for p in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/storage-pools/{pool_id}", response_model=PoolOut, tags=TAG_POOLS)
def get_pool(pool_id: PoolRef, ctx: Ctx, caller: Caller) -> PoolOut:
    """One pool, by id or name."""
    return PoolOut.of(service.get_pool(db=ctx.db, actor=caller, pool=pool_id))


@router.delete("/storage-pools/{pool_id}", response_model=PoolOut, tags=TAG_POOLS)
def delete_pool(pool_id: PoolRef, ctx: Ctx, caller: Caller) -> PoolOut:
    """Delete a pool (operator admin); 409 ``pool_in_use`` naming its filesystems while it
    holds any."""
    return PoolOut.of(service.delete_pool(db=ctx.db, clock=ctx.clock, actor=caller, pool=pool_id))


@router.post("/filesystems", response_model=FilesystemOut, status_code=201, tags=TAG_FS)
def create_filesystem(
    request: Request, body: FilesystemCreate, ctx: Ctx, caller: Caller
) -> FilesystemOut:
    """A shared filesystem of ``size_gib`` GiB on a pool (by name or id; an unknown one is a
    422 on ``pool``), within the org's ``storage-gib`` quota (403 ``quota_exceeded``). It
    starts ``creating`` and becomes ``available``; billed per GiB-month, per second, from
    now until deleted."""
    spec = service.FsSpec(
        name=body.name, size_gib=body.size_gib, pool=body.pool, project_id=body.project_id
    )
    view = service.create_filesystem(db=ctx.db, clock=ctx.clock, actor=caller, spec=spec)
    nudge(request)
    return FilesystemOut.of(view)


@router.get("/filesystems", response_model=ListOut[FilesystemOut], tags=TAG_FS)
def list_filesystems(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> ListOut[FilesystemOut]:
    """The org's filesystems by id (deleted ones with ``?state=deleted``)."""
    views, page = service.list_filesystems(
        db=ctx.db, actor=caller, limit=paging.limit, after=paging.after, state=state
    )
    return ListOut(
        data=[FilesystemOut.of(v) for v in views],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/filesystems/{filesystem_id}", response_model=FilesystemOut, tags=TAG_FS)
def get_filesystem(filesystem_id: FsId, ctx: Ctx, caller: Caller) -> FilesystemOut:
    """State, size, bytes used, and where it is mounted (each member's mount and reason)."""
    return FilesystemOut.of(service.get_filesystem(db=ctx.db, actor=caller, fs_id=filesystem_id))


@router.post("/filesystems/{filesystem_id}/resize", response_model=FilesystemOut, tags=TAG_FS)
def resize_filesystem(
    request: Request, filesystem_id: FsId, body: FilesystemResize, ctx: Ctx, caller: Caller
) -> FilesystemOut:
    """Grow it (a smaller ``size_gib`` is a 422 ``shrink_not_supported``); the backend's limit
    follows (``applied_gib``)."""
    view = service.resize_filesystem(
        db=ctx.db, clock=ctx.clock, actor=caller, fs_id=filesystem_id, size_gib=body.size_gib
    )
    nudge(request)
    return FilesystemOut.of(view)


@router.post("/filesystems/{filesystem_id}/attach", response_model=FilesystemOut, tags=TAG_FS)
def attach_filesystem(
    request: Request, filesystem_id: FsId, body: FilesystemAttach, ctx: Ctx, caller: Caller
) -> FilesystemOut:
    """Mount it at ``mount_path`` on an instance, or on every member of a cluster (members
    that join later too). Another org's instance or cluster is a 404; a path in use there, or
    the filesystem attached there already, a 409."""
    spec = service.AttachSpec(
        mount_path=body.mount_path,
        read_only=body.read_only,
        instance_id=body.instance_id,
        cluster_id=body.cluster_id,
    )
    view = service.attach_filesystem(
        db=ctx.db, clock=ctx.clock, actor=caller, fs_id=filesystem_id, spec=spec
    )
    nudge(request)
    return FilesystemOut.of(view)


@router.post(
    "/filesystems/{filesystem_id}/attachments/{attachment_id}/detach",
    response_model=FilesystemOut,
    tags=TAG_FS,
)
def detach_filesystem(
    request: Request, filesystem_id: FsId, attachment_id: AttId, ctx: Ctx, caller: Caller
) -> FilesystemOut:
    """Unmount it from every member of that attachment; the data stays."""
    view = service.detach_filesystem(
        db=ctx.db, clock=ctx.clock, actor=caller, fs_id=filesystem_id, attachment_id=attachment_id
    )
    nudge(request)
    return FilesystemOut.of(view)


@router.delete("/filesystems/{filesystem_id}", response_model=FilesystemOut, tags=TAG_FS)
def delete_filesystem(
    request: Request, filesystem_id: FsId, ctx: Ctx, caller: Caller
) -> FilesystemOut:
    """Delete it and its data; 409 ``filesystem_attached`` (naming each attachment) while it
    is attached. Billing stops at once."""
    view = service.delete_filesystem(db=ctx.db, clock=ctx.clock, actor=caller, fs_id=filesystem_id)
    nudge(request)
    return FilesystemOut.of(view)
