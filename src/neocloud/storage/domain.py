"""Storage rules, no I/O: states, bounds, names, and the checks every input goes through."""

from __future__ import annotations

import posixpath
import re
from enum import StrEnum

from neocloud.kernel.errors import ValidationFailed

MAX_SIZE_GIB = 1 << 20  # 1 PiB: the most one filesystem may hold
MAX_POOL_NODES = 64
MAX_REPLICA = 3
MAX_MOUNT_PATH = 200
MAX_ATTACHMENTS = 16  # per filesystem
# A mount path may not sit on (or under) what the operating system needs.
_SYSTEM_PATHS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root",
    "/run", "/sbin", "/sys", "/usr", "/var", "/tmp", "/home",  # noqa: S108 - refused, not used
)  # fmt: skip
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/-]{1,199}$")


class Backend(StrEnum):
    GLUSTERFS = "glusterfs"  # one replicated Gluster volume per filesystem, FUSE-mounted
    LOCAL = "local"  # directories under the platform's data dir (make run, the simulator)


class PoolState(StrEnum):
    CREATING = "creating"  # the reconciler joins the nodes (gluster peer probe)
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class FsState(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class AttachState(StrEnum):
    ATTACHING = "attaching"  # some member is not mounted yet
    ATTACHED = "attached"  # every live member is mounted
    DEGRADED = "degraded"  # mounted, but a storage node did not answer
    FAILED = "failed"  # some member could not be mounted (reason says which, why)
    DETACHING = "detaching"
    DETACHED = "detached"


class MountState(StrEnum):
    MOUNTED = "mounted"
    FAILED = "failed"
    UNMOUNTING = "unmounting"
    GONE = "gone"


LIVE_ATTACH = frozenset(
    {AttachState.ATTACHING, AttachState.ATTACHED, AttachState.DEGRADED, AttachState.FAILED}
)


def check_replica(backend: Backend, node_count: int, replica: int) -> None:
    """A glusterfs pool needs at least ``replica`` nodes, a whole number of replica sets; a
    local pool has one copy (replica 1) and needs no node."""
    if backend is Backend.LOCAL:
        if replica != 1:
            raise ValidationFailed(
                "a local pool keeps one copy: replica must be 1", param="replica"
            )
        return
    if node_count < 1:
        raise ValidationFailed("a glusterfs pool needs storage nodes", param="node_ids")
    if node_count < replica:
        raise ValidationFailed(
            f"replica {replica} needs at least {replica} nodes; {node_count} given",
            param="node_ids",
        )
    if node_count % replica:
        raise ValidationFailed(
            f"{node_count} nodes do not make whole replica sets of {replica}: give a multiple of"
            f" {replica}",
            param="node_ids",
        )


def check_mount_path(path: str) -> str:
    """An absolute, normalized path of at most ``MAX_MOUNT_PATH`` characters (letters, digits,
    ``._-/``), not ``/`` and not on or under a system directory."""
    if not _PATH_RE.fullmatch(path) or len(path) > MAX_MOUNT_PATH:
        raise ValidationFailed(
            f"mount_path must be an absolute path of at most {MAX_MOUNT_PATH} characters"
            " (letters, digits, . _ - /)",
            param="mount_path",
        )
    norm = posixpath.normpath(path)
    if norm != path.rstrip("/") or ".." in norm.split("/") or norm == "/":
        raise ValidationFailed("mount_path must be normalized (no .., no //)", param="mount_path")
    for system in _SYSTEM_PATHS:
        if norm == system or norm.startswith(system + "/"):
            raise ValidationFailed(
                f"mount_path may not be on or under {system}", param="mount_path"
            )
    return norm


def volume_name(fs_id: str) -> str:
    """The Gluster volume of a filesystem: ``nc-`` and its id, lowercased."""
    return "nc-" + fs_id.lower().replace("_", "-")
