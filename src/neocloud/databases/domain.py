"""Managed databases' rules, pure: states and their transitions, size presets, bounds.

A database is ``provisioning`` until its server answers (``running``) or a step fails
(``failed``, with the reason); ``delete`` asks for ``deleting`` and the worker ends it
``deleted`` once the server, its data directory and its OS user are gone. A running database
whose health check fails goes ``failed``; it is billed only while ``running``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class DatabaseState(StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


# The one table of allowed moves (``lifecycle.move`` checks it).
TRANSITIONS: dict[DatabaseState, frozenset[DatabaseState]] = {
    DatabaseState.PROVISIONING: frozenset(
        {DatabaseState.RUNNING, DatabaseState.FAILED, DatabaseState.DELETING}
    ),
    DatabaseState.RUNNING: frozenset({DatabaseState.FAILED, DatabaseState.DELETING}),
    DatabaseState.FAILED: frozenset({DatabaseState.RUNNING, DatabaseState.DELETING}),
    DatabaseState.DELETING: frozenset({DatabaseState.DELETED, DatabaseState.FAILED}),
    DatabaseState.DELETED: frozenset(),
}
LIVE = (
    DatabaseState.PROVISIONING.value,
    DatabaseState.RUNNING.value,
    DatabaseState.FAILED.value,
    DatabaseState.DELETING.value,
)


def can_move(src: DatabaseState, dst: DatabaseState) -> bool:
    """Whether a database in ``src`` may go to ``dst`` (staying put is always allowed)."""
    return src == dst or dst in TRANSITIONS[src]


class BackupState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    DELETED = "deleted"  # with its database


@dataclass(frozen=True, slots=True)
class Preset:
    """A size a tenant picks: vCPUs and GiB of memory the server may use, and the server
    settings that follow from them (``max_connections``, ``shared_buffers`` in MiB)."""

    name: str
    vcpus: int
    ram_gib: int
    max_connections: int
    shared_buffers_mib: int


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("small", 2, 4, 100, 1024),
        Preset("medium", 4, 16, 200, 4096),
        Preset("large", 8, 32, 400, 8192),
    )
}

# Bounds of a create request (documented in docs/databases.md and the API's schema).
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # a PostgreSQL identifier that needs no quoting
RESERVED_NAMES = frozenset({"postgres", "template0", "template1"})
USER_RE = NAME_RE
RESERVED_USERS = frozenset({"postgres", "public", "neocloud"})
STORAGE_GIB_MIN, STORAGE_GIB_MAX = 1, 4096
MAX_ALLOWED_CIDRS = 32
PASSWORD_BYTES = 24  # secrets.token_urlsafe: 32 characters
# Ports a database server listens on, per service node (one port per database).
PORT_FIRST, PORT_LAST = 15432, 15999


class Action(StrEnum):
    """What the worker does next for a database (``decide``)."""

    PLACE_AND_CREATE = "create"
    DELETE = "delete"
    BACKUP = "backup"
    HEALTH = "health"


def decide(
    state: DatabaseState, *, ever_ran: bool, backup_pending: bool, health_due: bool
) -> Action | None:
    """The worker's next step for a database that no step holds now (the decision table is
    tested row by row): deletion first; a provisioning database is placed and created; one
    that has run is backed up when a backup waits, else health-checked when due (a failed one
    too: it comes back ``running`` when its server answers again); a database that failed
    before it ever ran waits for its deletion."""
    if state is DatabaseState.DELETING:
        return Action.DELETE
    if state is DatabaseState.PROVISIONING:
        return Action.PLACE_AND_CREATE
    if state in (DatabaseState.RUNNING, DatabaseState.FAILED) and ever_ran:
        if backup_pending and state is DatabaseState.RUNNING:
            return Action.BACKUP
        if health_due:
            return Action.HEALTH
    return None


@dataclass(frozen=True, slots=True)
class NodeRoom:
    """A service node as placement sees it: what it has, what its live databases take, the
    versions it offers and the ports its databases hold."""

    node_id: str
    hostname: str
    vcpus: int
    ram_gib: int
    disk_gib: int
    used_vcpus: int
    used_ram_gib: int
    used_disk_gib: int
    versions: tuple[str, ...]
    ports: frozenset[int]


def place(
    nodes: list[NodeRoom], *, version: str, preset: Preset, storage_gib: int, pinned: str | None
) -> tuple[NodeRoom, int] | str:
    """The node with the most free memory that offers ``version`` and has room for ``preset``
    and ``storage_gib``, and the first free port on it; else the reason none fits.
    ``pinned``: only that node (a restore runs where its backup is)."""
    reasons = []
    fits = []
    for n in nodes:
        if pinned is not None and n.node_id != pinned:
            continue
        if version not in n.versions:
            reasons.append(f"{n.hostname}: no PostgreSQL {version}")
        elif n.vcpus - n.used_vcpus < preset.vcpus or n.ram_gib - n.used_ram_gib < preset.ram_gib:
            reasons.append(
                f"{n.hostname}: {n.vcpus - n.used_vcpus} vCPUs and"
                f" {n.ram_gib - n.used_ram_gib} GiB free, {preset.name} needs {preset.vcpus}"
                f" and {preset.ram_gib}"
            )
        elif n.disk_gib - n.used_disk_gib < storage_gib:
            reasons.append(f"{n.hostname}: {n.disk_gib - n.used_disk_gib} GiB of disk free")
        else:
            port = next((p for p in range(PORT_FIRST, PORT_LAST + 1) if p not in n.ports), None)
            if port is None:
                reasons.append(f"{n.hostname}: every port {PORT_FIRST}-{PORT_LAST} is taken")
            else:
                fits.append((n, port))
    if fits:
        return max(fits, key=lambda f: (f[0].ram_gib - f[0].used_ram_gib, f[0].node_id))
    if pinned is not None and not any(n.node_id == pinned for n in nodes):
        return "the node holding the backup is not an available service node"
    if not nodes:
        return "no service node is available"
    return "no service node fits: " + "; ".join(reasons)
