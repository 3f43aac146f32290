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
RESERVED_USERS = frozenset({"postgres", "public"})
STORAGE_GIB_MIN, STORAGE_GIB_MAX = 1, 4096
MAX_ALLOWED_CIDRS = 32
PASSWORD_BYTES = 24  # secrets.token_urlsafe: 32 characters
# Ports a database server listens on, per service node (one port per database).
PORT_FIRST, PORT_LAST = 15432, 15999
