"""Storage wire shapes: pools (operator) and filesystems (tenants)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from neocloud.storage.domain import MAX_MOUNT_PATH, MAX_POOL_NODES, MAX_REPLICA, MAX_SIZE_GIB
from neocloud.storage.service import FsView
from neocloud.storage.tables import FsAttachmentRow, FsMountRow, StoragePoolRow
from neocloud.web.fields import Id
from neocloud.web.schemas import RequestModel, ResponseModel, Time

POOL_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
FS_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
BRICK_ROOT = r"^/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)+$"


class PoolCreate(RequestModel):
    """Storage nodes (``role=storage``, available, in no other pool) as one pool."""

    name: str = Field(min_length=1, max_length=63, pattern=POOL_NAME)
    backend: Literal["glusterfs", "local"] = "glusterfs"
    node_ids: list[Id] = Field(
        default_factory=list,
        max_length=MAX_POOL_NODES,
        description="the pool's storage nodes, in brick order (a glusterfs pool needs a multiple"
        " of replica)",
    )
    replica: int = Field(2, ge=1, le=MAX_REPLICA, strict=True, description="copies of each file")
    brick_root: str = Field(
        "/srv/neocloud/bricks",
        max_length=200,
        pattern=BRICK_ROOT,
        description="where bricks go on each node (an absolute path, two levels at least)",
    )


class PoolOut(ResponseModel):
    id: str
    object: Literal["storage_pool"] = "storage_pool"
    name: str
    backend: str
    node_ids: list[str]
    replica: int
    brick_root: str
    state: str
    reason: str | None
    created_at: Time
    updated_at: Time

    @classmethod
    def of(cls, row: StoragePoolRow) -> PoolOut:
        return cls(
            id=row.id,
            name=row.name,
            backend=row.backend,
            node_ids=list(row.node_ids),
            replica=row.replica,
            brick_root=row.brick_root,
            state=row.state,
            reason=row.reason,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class FilesystemCreate(RequestModel):
    name: str = Field(min_length=1, max_length=63, pattern=FS_NAME)
    size_gib: int = Field(ge=1, le=MAX_SIZE_GIB, strict=True)
    pool: str = Field(min_length=1, max_length=63, description="the pool's name or id")
    project_id: Id | None = None


class FilesystemResize(RequestModel):
    size_gib: int = Field(
        ge=1, le=MAX_SIZE_GIB, strict=True, description="the new size: at least the current"
    )


class FilesystemAttach(RequestModel):
    instance_id: Id | None = Field(None, description="an instance of the org (or cluster_id)")
    cluster_id: Id | None = Field(None, description="a cluster of the org: every member")
    mount_path: str = Field(
        min_length=2, max_length=MAX_MOUNT_PATH, description="an absolute path, e.g. /mnt/data"
    )
    read_only: bool = False


class MountOut(ResponseModel):
    instance_id: str
    node_id: str
    state: str
    reason: str | None
    simulated: bool
    mounted_at: Time | None

    @classmethod
    def of(cls, row: FsMountRow) -> MountOut:
        return cls(
            instance_id=row.instance_id,
            node_id=row.node_id,
            state=row.state,
            reason=row.reason,
            simulated=row.simulated,
            mounted_at=row.mounted_at,
        )


class AttachmentOut(ResponseModel):
    id: str
    instance_id: str | None
    cluster_id: str | None
    mount_path: str
    read_only: bool
    state: str
    reason: str | None
    mounts: list[MountOut]
    created_at: Time

    @classmethod
    def of(cls, row: FsAttachmentRow, mounts: list[FsMountRow]) -> AttachmentOut:
        return cls(
            id=row.id,
            instance_id=row.instance_id,
            cluster_id=row.cluster_id,
            mount_path=row.mount_path,
            read_only=row.read_only,
            state=row.state,
            reason=row.reason,
            mounts=[MountOut.of(m) for m in mounts],
            created_at=row.created_at,
        )


class FilesystemOut(ResponseModel):
    id: str
    object: Literal["filesystem"] = "filesystem"
    name: str
    org_id: str
    project_id: str | None
    pool: str
    pool_id: str
    backend: str
    size_gib: int
    size_bytes: int
    applied_gib: int = Field(description="the size the backend enforces now")
    used_bytes: int | None = Field(description="bytes used when last measured (used_at)")
    used_at: Time | None
    state: str
    reason: str | None
    attachments: list[AttachmentOut]
    created_at: Time
    updated_at: Time
    deleted_at: Time | None

    @classmethod
    def of(cls, view: FsView) -> FilesystemOut:
        fs = view.fs
        return cls(
            id=fs.id,
            name=fs.name,
            org_id=fs.org_id,
            project_id=fs.project_id,
            pool=view.pool.name if view.pool else "",
            pool_id=fs.pool_id,
            backend=view.pool.backend if view.pool else "",
            size_gib=fs.size_gib,
            size_bytes=fs.size_gib << 30,
            applied_gib=fs.applied_gib,
            used_bytes=fs.used_bytes,
            used_at=fs.used_at,
            state=fs.state,
            reason=fs.reason,
            attachments=[AttachmentOut.of(a, view.mounts.get(a.id, [])) for a in view.attachments],
            created_at=fs.created_at,
            updated_at=fs.updated_at,
            deleted_at=fs.deleted_at,
        )
