"""Managed database routes: ``/databases`` (create or restore, list, read, delete), their
backups, and the CA certificate to verify the server with; the rules are in ``service.py``."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from neocloud.databases import service
from neocloud.databases.domain import PRESETS, STORAGE_GIB_MAX, STORAGE_GIB_MIN
from neocloud.databases.schemas import (
    BackupOut,
    DatabaseCreate,
    DatabaseCreated,
    DatabaseOptionsOut,
    DatabaseOut,
    PresetOut,
    connection_uri,
)
from neocloud.web.deps import Caller, Ctx, Paging
from neocloud.web.schemas import ERROR_RESPONSES, ListOut

router = APIRouter(responses=ERROR_RESPONSES)
TAGS: list[str | Enum] = ["databases"]
DatabaseId = Annotated[str, Path(max_length=40)]


def nudge(request: Request) -> None:
    """Wake the worker (its cycle runs the database steps too)."""
    poke = getattr(request.app.state, "compute_nudge", None)
    if poke is not None:
        poke()


@router.get("/database-options", response_model=DatabaseOptionsOut, tags=TAGS)
def database_options(ctx: Ctx, caller: Caller) -> DatabaseOptionsOut:
    """What a create may ask for: the PostgreSQL versions the service nodes have now, the
    size presets, and the storage bounds."""
    del caller
    return DatabaseOptionsOut(
        versions=service.offered_versions(db=ctx.db),
        presets=[PresetOut.of(p) for p in PRESETS.values()],
        storage_gib_min=STORAGE_GIB_MIN,
        storage_gib_max=STORAGE_GIB_MAX,
    )


@router.post("/databases", response_model=DatabaseCreated, status_code=201, tags=TAGS)
def create_database(
    request: Request, ctx: Ctx, caller: Caller, body: DatabaseCreate
) -> DatabaseCreated:
    """Create a managed PostgreSQL database (or restore a backup into a new one with
    ``restore_from``). The answer is the only one that carries the password and the full
    connection string; send an ``Idempotency-Key`` to retry safely (a replay answers them as
    null). Bounds: ``name`` 1-63 of ``[a-z0-9_]``, ``storage_gib`` 1-4096, at most 32
    ``allowed_cidrs``; the org's live databases at most ``NEOCLOUD_DATABASES_MAX_PER_ORG``."""
    created = service.create_database(
        db=ctx.db,
        clock=ctx.clock,
        box=request.app.state.secret_box,
        actor=caller,
        request=service.DatabaseRequest(
            name=body.name,
            version=body.version,
            preset=body.preset,
            storage_gib=body.storage_gib,
            user=body.user,
            allowed_cidrs=tuple(body.allowed_cidrs),
            restore_from=body.restore_from,
        ),
        max_per_org=ctx.settings.databases_max_per_org,
    )
    nudge(request)
    out = DatabaseOut.of(created.row)
    return DatabaseCreated(
        **out.model_dump(),
        password=created.password,
        connection_string=connection_uri(created.row, created.password),
    )


@router.get("/databases", response_model=ListOut[DatabaseOut], tags=TAGS)
def list_databases(
    ctx: Ctx,
    caller: Caller,
    paging: Paging,
    deleted: Annotated[bool, Query(description="Include deleted databases")] = False,
) -> ListOut[DatabaseOut]:
    """Your organization's databases, oldest first."""
    page = service.list_databases(
        db=ctx.db, actor=caller, limit=paging.limit, after=paging.after, deleted=deleted
    )
    return ListOut(
        data=[DatabaseOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/databases/{database_id}", response_model=DatabaseOut, tags=TAGS)
def get_database(ctx: Ctx, caller: Caller, database_id: DatabaseId) -> DatabaseOut:
    """A database: state and reason, health, where to connect (never the password)."""
    return DatabaseOut.of(service.get_database(db=ctx.db, actor=caller, database_id=database_id))


@router.delete("/databases/{database_id}", response_model=DatabaseOut, tags=TAGS)
def delete_database(
    request: Request, ctx: Ctx, caller: Caller, database_id: DatabaseId
) -> DatabaseOut:
    """Delete a database: its server stops and its data directory, backups and OS user are
    removed (``deleting``, then ``deleted``)."""
    row = service.delete_database(db=ctx.db, clock=ctx.clock, actor=caller, database_id=database_id)
    nudge(request)
    return DatabaseOut.of(row)


@router.post(
    "/databases/{database_id}/backups", response_model=BackupOut, status_code=202, tags=TAGS
)
def create_backup(request: Request, ctx: Ctx, caller: Caller, database_id: DatabaseId) -> BackupOut:
    """Back up a running database now (``pg_dump``): ``pending``, then ``completed`` or
    ``failed``. Scheduled backups run every ``NEOCLOUD_DATABASES_BACKUP_INTERVAL_H`` hours."""
    row = service.create_backup(db=ctx.db, clock=ctx.clock, actor=caller, database_id=database_id)
    nudge(request)
    return BackupOut.of(row)


@router.get("/databases/{database_id}/backups", response_model=ListOut[BackupOut], tags=TAGS)
def list_backups(
    ctx: Ctx, caller: Caller, paging: Paging, database_id: DatabaseId
) -> ListOut[BackupOut]:
    """A database's backups, oldest first; restore one with ``POST /databases`` and
    ``restore_from``."""
    page = service.list_backups(
        db=ctx.db, actor=caller, database_id=database_id, limit=paging.limit, after=paging.after
    )
    return ListOut(
        data=[BackupOut.of(r) for r in page.items],
        has_more=page.has_more,
        next_cursor=page.next_cursor,
    )


@router.get("/databases/{database_id}/ca", tags=TAGS, response_class=Response)
def get_ca(ctx: Ctx, caller: Caller, database_id: DatabaseId) -> Response:
    """The CA certificate (PEM) the server's certificate chains to: save it and connect with
    ``sslmode=verify-full&sslrootcert=FILE``."""
    pem = service.ca_certificate(db=ctx.db, actor=caller, database_id=database_id)
    return Response(pem, media_type="application/x-pem-file")
