"""Registering one server: a node with its driver and credentials, in state ``enrolled``.

Burn-in (``compute.burn_in``) then checks it through the driver it names before any tenant
can get it. The node's credentials are sealed with the platform's secret box before they are
stored; the node's first event records the driver and which credentials were set, never them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.engine import Database
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.domain import NO_GPU_MODEL, Health, NodeRole, NodeState
from neocloud.fleet.imports import add_domains, driver_columns, settle_levels
from neocloud.fleet.node_drivers import DriverSettings
from neocloud.fleet.spec import DEFAULT_LEVELS, NAME_PATTERN
from neocloud.fleet.tables import (
    FleetSettingsRow,
    NodeDomainRow,
    NodeEventRow,
    NodeLabelRow,
    NodeRow,
)
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.kernel.secrets import SecretBox


@dataclass(frozen=True)
class NodeRegistration:
    """One server to register (counts already bounded by the wire schema)."""

    hostname: str
    gpu_model: str | None
    gpu_count: int | None
    vcpus: int
    ram_gib: int
    nvme_gib: int
    topology: dict[str, str]
    driver: DriverSettings
    labels: dict[str, str] = field(default_factory=dict)
    role: NodeRole = NodeRole.GPU


@dataclass(frozen=True)
class _Planned:
    topology: dict[str, str]


def register_node(
    *, db: Database, clock: Clock, box: SecretBox, node: NodeRegistration, actor: str
) -> NodeRow:
    """Store a new node in ``enrolled`` with its domains, labels and sealed credentials, all
    or nothing. A hostname in use is a ``Conflict``; topology that does not name exactly the
    fleet's levels, or a domain name used under another parent, is refused naming it."""
    model, gpus = gpus_of(node.role, node.gpu_model, node.gpu_count)
    now = clock.now()
    with db.transaction() as session:
        levels = _fleet_levels(session)
        topology = _check_topology(node.topology, levels)
        settle_levels(session, levels, now)
        taken = session.scalar(sa.select(NodeRow.id).where(NodeRow.hostname == node.hostname))
        if taken is not None:
            raise _duplicate(node.hostname)
        add_domains(session, levels, [_Planned(topology)], now)
        node_id = new_id("node", at=now)
        creds = node.driver.credential_names
        row = NodeRow(
            id=node_id,
            hostname=node.hostname,
            role=node.role.value,
            gpu_model=model,
            gpu_count=gpus,
            vcpus=node.vcpus,
            ram_gib=node.ram_gib,
            nvme_gib=node.nvme_gib,
            topology=topology,
            state=NodeState.ENROLLED.value,
            state_reason="registered",
            hold=False,
            resume_state=None,
            drain_requested_at=None,
            health=Health.HEALTHY.value,
            health_checks={},
            labels=dict(node.labels),
            bmc=None,
            created_at=now,
            updated_at=now,
            **driver_columns(node.driver, box),
        )
        session.add(row)
        try:
            session.flush()  # the unique hostname index decides a race
        except sa.exc.IntegrityError:
            raise _duplicate(node.hostname) from None
        for level, name in topology.items():
            session.add(NodeDomainRow(node_id=node_id, level=level, name=name))
        for key, value in node.labels.items():
            session.add(NodeLabelRow(node_id=node_id, key=key, value=value))
        role = "" if node.role is NodeRole.GPU else f" as a {node.role.value} node"
        reason = f"registered{role}: driver {node.driver.driver}" + (
            f"; credentials set: {', '.join(creds)}" if creds else ""
        )
        session.add(
            NodeEventRow(
                id=new_id("evt", at=now),
                node_id=node_id,
                at=now,
                from_state=None,
                to_state=NodeState.ENROLLED.value,
                reason=reason,
                actor=actor,
            )
        )
        return row


def gpus_of(role: NodeRole, gpu_model: str | None, gpu_count: int | None) -> tuple[str, int]:
    """The (catalog model, count) a node of ``role`` is stored with: a GPU node names a catalog
    model and at least one GPU; a storage or service node has none (``NO_GPU_MODEL``, 0) and
    naming GPUs for it is refused."""
    if role is NodeRole.GPU:
        if gpu_model is None:
            raise ValidationFailed("a gpu node needs gpu_model", param="gpu_model")
        if gpu_count is None or gpu_count < 1:
            raise ValidationFailed("a gpu node needs gpu_count of at least 1", param="gpu_count")
        return resolve_gpu_model(gpu_model, param="gpu_model").id, gpu_count
    if gpu_model is not None and gpu_model.strip().lower() != NO_GPU_MODEL:
        raise ValidationFailed(
            f"a {role.value} node has no GPUs: leave gpu_model out", param="gpu_model"
        )
    if gpu_count:
        raise ValidationFailed(
            f"a {role.value} node has no GPUs: gpu_count must be 0 or left out", param="gpu_count"
        )
    return NO_GPU_MODEL, 0


def _fleet_levels(session: Session) -> list[str]:
    row = session.get(FleetSettingsRow, 1)
    return list(row.levels) if row is not None else list(DEFAULT_LEVELS)


def _check_topology(topology: dict[str, str], levels: list[str]) -> dict[str, str]:
    """``topology`` in the fleet's level order, if it names exactly those levels."""
    if set(topology) != set(levels):
        unknown = sorted(set(topology) - set(levels))
        missing = [lv for lv in levels if lv not in topology]
        what = f"unknown level {unknown[0]!r}" if unknown else f"missing level {missing[0]!r}"
        raise ValidationFailed(
            f"topology must name exactly the fleet's levels {levels}: {what}",
            code="unknown_level" if unknown else "missing_level",
            param=f"topology.{unknown[0]}" if unknown else "topology",
        )
    for level in levels:
        if re.fullmatch(NAME_PATTERN, topology[level]) is None:
            raise ValidationFailed(
                f"topology.{level}: {topology[level]!r} is not a valid name (lowercase letters, "
                "digits and hyphens, at most 63)",
                param=f"topology.{level}",
            )
    return {level: topology[level] for level in levels}


def _duplicate(hostname: str) -> Conflict:
    return Conflict(
        f"a node with hostname {hostname!r} already exists",
        code="duplicate_hostname",
        param="hostname",
        details={"hostname": hostname},
    )
