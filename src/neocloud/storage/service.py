"""Storage use cases: pools (operator) and filesystems (tenants), one transaction each.

The API writes desired state only: a pool ``creating``, a filesystem ``creating`` with its
size, an attachment ``attaching``, ``detaching`` or a filesystem ``deleting``; the storage
reconciler (``storage.steps``) acts on the nodes through their drivers and records what
happened, with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.domain import CLUSTER_FINAL, INSTANCE_FINAL, ClusterState, InstanceState
from neocloud.compute.tables import ClusterRow, InstanceRow
from neocloud.db.engine import Database
from neocloud.db.pagination import Page, paginate
from neocloud.fleet.domain import NodeRole, NodeState
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, QuotaExceeded, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.storage.domain import (
    LIVE_ATTACH,
    MAX_ATTACHMENTS,
    MAX_SIZE_GIB,
    AttachState,
    Backend,
    FsState,
    PoolState,
    check_mount_path,
    check_replica,
    volume_name,
)
from neocloud.storage.tables import (
    FilesystemRow,
    FsAttachmentRow,
    FsMountRow,
    FsSizeIntervalRow,
    StoragePoolRow,
)
from neocloud.tenancy.quotas import effective_quota

STORAGE_QUOTA = "storage-gib"  # the quota's name (tenancy's quotas, in GiB)
DEFAULT_STORAGE_QUOTA_GIB = 10240  # an org without an override or a default: 10 TiB
DEFAULT_BRICK_ROOT = "/srv/neocloud/bricks"


# -- pools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    name: str
    backend: Backend
    node_ids: Sequence[str]
    replica: int
    brick_root: str = DEFAULT_BRICK_ROOT


def create_pool(*, db: Database, clock: Clock, actor: Principal, spec: PoolSpec) -> StoragePoolRow:
    """A pool of ``role=storage`` nodes that are available and in no other pool; its node
    count must make whole replica sets. A glusterfs pool starts ``creating`` (the reconciler
    joins its nodes), a local one ``ready``."""
    actor.require_operator(write=True)
    check_replica(spec.backend, len(spec.node_ids), spec.replica)
    if len(set(spec.node_ids)) != len(spec.node_ids):
        raise ValidationFailed("node_ids names a node twice", param="node_ids")
    now = clock.now()
    with db.transaction() as s:
        if s.scalar(sa.select(StoragePoolRow.id).where(StoragePoolRow.name == spec.name)):
            raise Conflict(
                f"a storage pool named {spec.name!r} exists",
                code="duplicate_pool_name",
                param="name",
            )
        taken = _nodes_in_pools(s)
        for i, node_id in enumerate(spec.node_ids):
            node = s.get(NodeRow, node_id)
            param = f"node_ids[{i}]"
            if node is None:
                raise ValidationFailed(f"no node {node_id}", code="node_not_found", param=param)
            if node.role != NodeRole.STORAGE.value:
                raise ValidationFailed(
                    f"node {node_id} ({node.hostname}) has role {node.role}; a pool takes"
                    " storage nodes",
                    code="not_a_storage_node",
                    param=param,
                )
            if node.state != NodeState.AVAILABLE.value or node.hold:
                raise ValidationFailed(
                    f"node {node_id} ({node.hostname}) is {node.state}"
                    f"{' (cordoned)' if node.hold else ''}; a pool takes available nodes",
                    code="node_not_available",
                    param=param,
                )
            if node_id in taken:
                raise ValidationFailed(
                    f"node {node_id} is in pool {taken[node_id]} already",
                    code="node_in_pool",
                    param=param,
                )
        ready = spec.backend is Backend.LOCAL
        row = StoragePoolRow(
            id=new_id("pool", at=now),
            name=spec.name,
            backend=spec.backend.value,
            node_ids=list(spec.node_ids),
            replica=spec.replica,
            brick_root=spec.brick_root,
            state=(PoolState.READY if ready else PoolState.CREATING).value,
            reason="local directories" if ready else "joining the nodes",
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        try:
            s.flush()
        except sa.exc.IntegrityError:
            raise Conflict(
                f"a storage pool named {spec.name!r} exists",
                code="duplicate_pool_name",
                param="name",
            ) from None
        return row


def _nodes_in_pools(s: Session) -> dict[str, str]:
    out: dict[str, str] = {}
    for pool in s.scalars(
        sa.select(StoragePoolRow).where(StoragePoolRow.state != PoolState.DELETED.value)
    ):
        for node_id in pool.node_ids:
            out[node_id] = pool.id
    return out


def list_pools(
    *, db: Database, actor: Principal, limit: int, after: str | None
) -> Page[StoragePoolRow]:
    """Pools, ordered by id; tenants see them too (to name one), deleted ones left out."""
    with db.transaction() as s:
        stmt = sa.select(StoragePoolRow).where(StoragePoolRow.state != PoolState.DELETED.value)
        return paginate(s, stmt, StoragePoolRow.id.expression, limit=limit, after=after)


def get_pool(*, db: Database, actor: Principal, pool: str) -> StoragePoolRow:
    with db.transaction() as s:
        return _pool(s, pool, param="pool_id", status=404)


def _pool(s: Session, ref: str, *, param: str, status: int) -> StoragePoolRow:
    """A pool by id or name; an unknown one is a 404 (a path) or a 422 (a field)."""
    row = (
        s.get(StoragePoolRow, ref)
        or s.scalars(sa.select(StoragePoolRow).where(StoragePoolRow.name == ref)).first()
    )
    if row is None or row.state == PoolState.DELETED.value:
        if status == 404:
            raise NotFound(f"no storage pool {ref}", code="pool_not_found", param=param)
        raise ValidationFailed(f"no storage pool {ref!r}", code="unknown_pool", param=param)
    return row


def delete_pool(*, db: Database, clock: Clock, actor: Principal, pool: str) -> StoragePoolRow:
    """Refused (409 ``pool_in_use``, naming them) while filesystems live on it."""
    actor.require_operator(write=True)
    now = clock.now()
    with db.transaction() as s:
        row = _pool(s, pool, param="pool_id", status=404)
        fs = list(
            s.scalars(
                sa.select(FilesystemRow.id).where(
                    FilesystemRow.pool_id == row.id,
                    FilesystemRow.state != FsState.DELETED.value,
                )
            )
        )
        if fs:
            raise Conflict(
                f"storage pool {row.name} holds {len(fs)} filesystems: {', '.join(fs[:10])}",
                code="pool_in_use",
                param="pool_id",
                details={"filesystems": fs},
            )
        row.state = PoolState.DELETED.value
        row.reason = "deleted"
        row.updated_at = now
        return row


# -- filesystems ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FsSpec:
    name: str
    size_gib: int
    pool: str
    project_id: str | None = None


def storage_gib_in_use(s: Session, org_id: str) -> int:
    """GiB the org's filesystems hold (asked sizes of every filesystem not deleted)."""
    total = s.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(FilesystemRow.size_gib), 0)).where(
            FilesystemRow.org_id == org_id,
            FilesystemRow.state.not_in([FsState.DELETED.value, FsState.DELETING.value]),
        )
    )
    return int(total or 0)


def storage_usage(*, db: Database, org_id: str) -> dict[str, int]:
    """Tenancy's quota usage port: GiB in use under ``storage-gib``."""
    with db.transaction() as s:
        return {STORAGE_QUOTA: storage_gib_in_use(s, org_id)}


def _check_quota(s: Session, limit: int | None, org_id: str, extra: int) -> None:
    allowed = DEFAULT_STORAGE_QUOTA_GIB if limit is None else limit
    used = storage_gib_in_use(s, org_id)
    if used + extra > allowed:
        raise QuotaExceeded(
            f"storage quota is {allowed} GiB; {used} GiB in use, {extra} GiB more requested",
            param="size_gib",
            details={"quota": STORAGE_QUOTA, "limit": allowed, "usage": used, "requested": extra},
        )


def _check_size(size_gib: int) -> None:
    if not 1 <= size_gib <= MAX_SIZE_GIB:
        raise ValidationFailed(f"size_gib must be 1..{MAX_SIZE_GIB}", param="size_gib")


def create_filesystem(*, db: Database, clock: Clock, actor: Principal, spec: FsSpec) -> FsView:
    """A filesystem of the caller's org on a ready (or still joining) pool, within the org's
    storage quota; a name in use in the org is a 409."""
    actor.require_org_role(actor.org_id, Role.MEMBER)
    _check_size(spec.size_gib)
    limit = effective_quota(db=db, org_id=actor.org_id, gpu_model=STORAGE_QUOTA)
    now = clock.now()
    with db.transaction() as s:
        pool = _pool(s, spec.pool, param="pool", status=422)
        if pool.state not in (PoolState.READY.value, PoolState.CREATING.value):
            raise Conflict(
                f"storage pool {pool.name} is {pool.state}: {pool.reason or ''}".rstrip(": "),
                code="pool_not_ready",
                param="pool",
            )
        if spec.project_id is not None:
            from neocloud.compute.service import check_project

            check_project(s, actor, spec.project_id)
        if s.scalar(
            sa.select(FilesystemRow.id).where(
                FilesystemRow.org_id == actor.org_id,
                FilesystemRow.name == spec.name,
                FilesystemRow.state != FsState.DELETED.value,
            )
        ):
            raise Conflict(
                f"a filesystem named {spec.name!r} exists in the organization",
                code="duplicate_filesystem_name",
                param="name",
            )
        _check_quota(s, limit, actor.org_id, spec.size_gib)
        fs_id = new_id("fs", at=now)
        row = FilesystemRow(
            id=fs_id,
            org_id=actor.org_id,
            project_id=spec.project_id,
            name=spec.name,
            pool_id=pool.id,
            size_gib=spec.size_gib,
            applied_gib=0,
            volume=volume_name(fs_id),
            state=FsState.CREATING.value,
            reason="waiting for the pool" if pool.state != PoolState.READY.value else "creating",
            created_by=actor.key_id,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.add(
            FsSizeIntervalRow(
                filesystem_id=fs_id, org_id=actor.org_id, size_gib=spec.size_gib, start_at=now
            )
        )
        s.flush()
        return _view(s, row)


def _visible(s: Session, actor: Principal, fs_id: str, *, lock: bool = False) -> FilesystemRow:
    row = s.get(FilesystemRow, fs_id, with_for_update=lock)
    if row is None or not (actor.is_operator or row.org_id == actor.org_id):
        raise NotFound(f"no filesystem {fs_id}", code="filesystem_not_found", param="filesystem_id")
    return row


@dataclass(frozen=True)
class FsView:
    """A filesystem with its pool, live attachments and their mounts, for the answer."""

    fs: FilesystemRow
    pool: StoragePoolRow | None
    attachments: list[FsAttachmentRow]
    mounts: dict[str, list[FsMountRow]]


def _view(s: Session, fs: FilesystemRow) -> FsView:
    atts = list(
        s.scalars(
            sa.select(FsAttachmentRow)
            .where(
                FsAttachmentRow.filesystem_id == fs.id,
                FsAttachmentRow.state != AttachState.DETACHED.value,
            )
            .order_by(FsAttachmentRow.id)
        )
    )
    mounts: dict[str, list[FsMountRow]] = {a.id: [] for a in atts}
    if atts:
        for m in s.scalars(
            sa.select(FsMountRow)
            .where(FsMountRow.attachment_id.in_(list(mounts)))
            .order_by(FsMountRow.instance_id)
        ):
            mounts[m.attachment_id].append(m)
    return FsView(fs, s.get(StoragePoolRow, fs.pool_id), atts, mounts)


def get_filesystem(*, db: Database, actor: Principal, fs_id: str) -> FsView:
    with db.transaction() as s:
        return _view(s, _visible(s, actor, fs_id))


def list_filesystems(
    *, db: Database, actor: Principal, limit: int, after: str | None, state: str | None = None
) -> tuple[list[FsView], Page[FilesystemRow]]:
    """The caller's org's filesystems (an operator's: all), deleted ones only when asked."""
    with db.transaction() as s:
        stmt = sa.select(FilesystemRow)
        if not actor.is_operator:
            stmt = stmt.where(FilesystemRow.org_id == actor.org_id)
        if state is not None:
            stmt = stmt.where(FilesystemRow.state == _parse(FsState, state, "state").value)
        else:
            stmt = stmt.where(FilesystemRow.state != FsState.DELETED.value)
        page = paginate(s, stmt, FilesystemRow.id.expression, limit=limit, after=after)
        return [_view(s, fs) for fs in page.items], page


def _parse(kind: type[FsState], value: str, param: str) -> FsState:
    try:
        return kind(value.strip().lower())
    except ValueError:
        known = ", ".join(m.value for m in kind)
        raise ValidationFailed(f"{param} must be one of: {known}", param=param) from None


def _live(fs: FilesystemRow) -> None:
    if fs.state in (FsState.DELETING.value, FsState.DELETED.value):
        raise Conflict(
            f"filesystem {fs.id} is {fs.state}", code="filesystem_deleted", param="filesystem_id"
        )


def resize_filesystem(
    *, db: Database, clock: Clock, actor: Principal, fs_id: str, size_gib: int
) -> FsView:
    """Grow a filesystem (the reconciler raises the backend's limit); shrinking is a 422,
    the same size changes nothing."""
    _check_size(size_gib)
    now = clock.now()
    with db.transaction() as s:
        fs = _visible(s, actor, fs_id, lock=True)
        actor.require_org_role(fs.org_id, Role.MEMBER)
        _live(fs)
        if size_gib < fs.size_gib:
            raise ValidationFailed(
                f"a filesystem only grows: size_gib {size_gib} is below its {fs.size_gib} GiB",
                code="shrink_not_supported",
                param="size_gib",
            )
        if size_gib > fs.size_gib:
            _check_quota(s, _quota_in(s, fs.org_id), fs.org_id, size_gib - fs.size_gib)
            _end_interval(s, fs.id, now)
            s.add(
                FsSizeIntervalRow(
                    filesystem_id=fs.id, org_id=fs.org_id, size_gib=size_gib, start_at=now
                )
            )
            fs.size_gib = size_gib
            fs.updated_at = now
        return _view(s, fs)


def _quota_in(s: Session, org_id: str) -> int | None:
    """The org's storage quota read inside the caller's transaction (tenancy's rows)."""
    from neocloud.tenancy.domain import resolve_quota
    from neocloud.tenancy.tables import QuotaDefaultRow, QuotaRow

    override = s.scalar(
        sa.select(QuotaRow.limit_gpus).where(
            QuotaRow.org_id == org_id, QuotaRow.gpu_model == STORAGE_QUOTA
        )
    )
    default = s.scalar(
        sa.select(QuotaDefaultRow.limit_gpus).where(QuotaDefaultRow.gpu_model == STORAGE_QUOTA)
    )
    return resolve_quota(default, override)[0]


def _end_interval(s: Session, fs_id: str, now: datetime) -> None:
    s.execute(
        sa.update(FsSizeIntervalRow)
        .where(FsSizeIntervalRow.filesystem_id == fs_id, FsSizeIntervalRow.end_at.is_(None))
        .values(end_at=now)
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class AttachSpec:
    mount_path: str
    read_only: bool = False
    instance_id: str | None = None
    cluster_id: str | None = None


def attach_filesystem(
    *, db: Database, clock: Clock, actor: Principal, fs_id: str, spec: AttachSpec
) -> FsView:
    """Attach to one of the org's instances or clusters (exactly one of them) at an absolute
    ``mount_path``; the reconciler mounts it on every member, and on members that join later.
    Another org's instance or cluster is a 404, as reading it would be."""
    path = check_mount_path(spec.mount_path)
    if (spec.instance_id is None) == (spec.cluster_id is None):
        raise ValidationFailed(
            "give exactly one of instance_id and cluster_id", param="instance_id"
        )
    now = clock.now()
    with db.transaction() as s:
        fs = _visible(s, actor, fs_id, lock=True)
        actor.require_org_role(fs.org_id, Role.MEMBER)
        _live(fs)
        if fs.state == FsState.FAILED.value:
            raise Conflict(
                f"filesystem {fs.id} failed: {fs.reason or 'see its reason'}",
                code="filesystem_failed",
                param="filesystem_id",
            )
        if spec.instance_id is not None:
            inst = s.get(InstanceRow, spec.instance_id)
            if inst is None or inst.org_id != fs.org_id:
                raise NotFound(
                    f"no instance {spec.instance_id}",
                    code="instance_not_found",
                    param="instance_id",
                )
            if InstanceState(inst.state) in INSTANCE_FINAL:
                raise Conflict(
                    f"instance {inst.id} is {inst.state}",
                    code="instance_ended",
                    param="instance_id",
                )
        else:
            clu = s.get(ClusterRow, spec.cluster_id)
            if clu is None or clu.org_id != fs.org_id:
                raise NotFound(
                    f"no cluster {spec.cluster_id}", code="cluster_not_found", param="cluster_id"
                )
            if ClusterState(clu.state) in CLUSTER_FINAL:
                raise Conflict(
                    f"cluster {clu.id} is {clu.state}", code="cluster_ended", param="cluster_id"
                )
        live = list(
            s.scalars(
                sa.select(FsAttachmentRow).where(
                    FsAttachmentRow.org_id == fs.org_id,
                    FsAttachmentRow.state.in_([x.value for x in LIVE_ATTACH]),
                    FsAttachmentRow.instance_id == spec.instance_id
                    if spec.instance_id
                    else FsAttachmentRow.cluster_id == spec.cluster_id,
                )
            )
        )
        for a in live:
            if a.filesystem_id == fs.id:
                raise Conflict(
                    f"filesystem {fs.id} is attached there already ({a.id}, {a.mount_path})",
                    code="already_attached",
                    param="filesystem_id",
                    details={"attachment_id": a.id},
                )
            if a.mount_path == path:
                raise Conflict(
                    f"{path} holds filesystem {a.filesystem_id} there already",
                    code="mount_path_in_use",
                    param="mount_path",
                )
        count = s.scalar(
            sa.select(sa.func.count()).where(
                FsAttachmentRow.filesystem_id == fs.id,
                FsAttachmentRow.state.in_([x.value for x in LIVE_ATTACH]),
            )
        )
        if (count or 0) >= MAX_ATTACHMENTS:
            raise Conflict(
                f"filesystem {fs.id} has {MAX_ATTACHMENTS} attachments, the most it may have",
                code="too_many_attachments",
                param="filesystem_id",
            )
        s.add(
            FsAttachmentRow(
                id=new_id("fsa", at=now),
                filesystem_id=fs.id,
                org_id=fs.org_id,
                instance_id=spec.instance_id,
                cluster_id=spec.cluster_id,
                mount_path=path,
                read_only=spec.read_only,
                state=AttachState.ATTACHING.value,
                reason="waiting for the members to run"
                if fs.state != FsState.AVAILABLE.value
                else "mounting",
                created_at=now,
                updated_at=now,
            )
        )
        s.flush()
        return _view(s, fs)


def detach_filesystem(
    *, db: Database, clock: Clock, actor: Principal, fs_id: str, attachment_id: str
) -> FsView:
    """Unmount from every member (``detaching``, then gone); repeating it is harmless."""
    now = clock.now()
    with db.transaction() as s:
        fs = _visible(s, actor, fs_id, lock=True)
        actor.require_org_role(fs.org_id, Role.MEMBER)
        att = s.get(FsAttachmentRow, attachment_id)
        if att is None or att.filesystem_id != fs.id:
            raise NotFound(
                f"no attachment {attachment_id} of filesystem {fs.id}",
                code="attachment_not_found",
                param="attachment_id",
            )
        if att.state in (AttachState.DETACHING.value, AttachState.DETACHED.value):
            return _view(s, fs)
        att.state = AttachState.DETACHING.value
        att.reason = "unmounting from every member"
        att.updated_at = now
        return _view(s, fs)


def delete_filesystem(*, db: Database, clock: Clock, actor: Principal, fs_id: str) -> FsView:
    """Delete it and its data: refused (409 ``filesystem_attached``, naming them) while
    attached; billing stops now, the reconciler removes the volume and its bricks."""
    now = clock.now()
    with db.transaction() as s:
        fs = _visible(s, actor, fs_id, lock=True)
        actor.require_org_role(fs.org_id, Role.MEMBER)
        if fs.state in (FsState.DELETING.value, FsState.DELETED.value):
            return _view(s, fs)
        atts = list(
            s.scalars(
                sa.select(FsAttachmentRow)
                .where(
                    FsAttachmentRow.filesystem_id == fs.id,
                    FsAttachmentRow.state != AttachState.DETACHED.value,
                )
                .order_by(FsAttachmentRow.id)
            )
        )
        if atts:
            named = [
                f"{a.id} ({a.instance_id or a.cluster_id} at {a.mount_path}, {a.state})"
                for a in atts
            ]
            raise Conflict(
                f"filesystem {fs.id} is attached: {'; '.join(named)}; detach it first",
                code="filesystem_attached",
                param="filesystem_id",
                details={
                    "attachments": [
                        {
                            "id": a.id,
                            "instance_id": a.instance_id,
                            "cluster_id": a.cluster_id,
                            "mount_path": a.mount_path,
                            "state": a.state,
                        }
                        for a in atts
                    ]
                },
            )
        fs.state = FsState.DELETING.value
        fs.reason = "removing the volume and its data"
        fs.updated_at = now
        _end_interval(s, fs.id, now)
        return _view(s, fs)
