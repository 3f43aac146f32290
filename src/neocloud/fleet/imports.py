"""Importing a fleet spec: every node of a file in one transaction, with bulk inserts.

31,250 nodes (a 250,000-GPU fleet) load into PostgreSQL in well under a minute: rows are built
in memory and inserted with executemany in batches, and the only checks against the database are
the fleet's levels, existing domains and existing hostnames (one query per 1,000 names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.db.base import Base, table_of
from neocloud.db.engine import Database
from neocloud.fleet.domain import Health, NodeState, parse_enum
from neocloud.fleet.node_drivers import DriverSettings
from neocloud.fleet.spec import FleetSpec, expand
from neocloud.fleet.tables import (
    DomainRow,
    FleetImportRow,
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

IMPORT_STATES = (NodeState.AVAILABLE, NodeState.ENROLLED, NodeState.BURN_IN)
_CHUNK = 1000


@dataclass(frozen=True)
class ImportResult:
    import_id: str
    nodes_created: int
    gpus_created: int
    domains_created: int
    initial_state: NodeState


def import_spec(
    *,
    db: Database,
    clock: Clock,
    spec: FleetSpec,
    initial_state: NodeState | str = NodeState.AVAILABLE,
    actor: str = "system",
    box: SecretBox | None = None,
) -> ImportResult:
    """Load every node of ``spec`` in one transaction: all of them, or none.

    New nodes start ``available`` (or ``enrolled``/``burn_in`` for hardware still to be burnt in).
    A hostname that already exists, or a domain name already used under another parent, is a
    ``Conflict`` naming it. Nodes' credentials (an ssh node's private key) are sealed with
    ``box``, which a spec with credentials needs.
    """
    state = parse_enum(NodeState, str(initial_state), "initial_state")
    if state not in IMPORT_STATES:
        raise ValidationFailed(
            f"initial_state must be one of: {', '.join(s.value for s in IMPORT_STATES)}",
            param="initial_state",
        )
    now = clock.now()
    planned = list(expand(spec))
    if box is None and any(p.driver.credentials for p in planned):
        raise ValidationFailed(
            "the spec holds node credentials but this import has no secret box to seal them",
            code="no_secret_box",
        )
    with db.transaction() as session:
        settle_levels(session, spec.levels, now)
        domains_created = add_domains(session, spec.levels, planned, now)
        _refuse_existing_hostnames(session, [p.hostname for p in planned])
        import_id = new_id("imp", at=now)
        nodes: list[dict[str, Any]] = []
        doms: list[dict[str, Any]] = []
        labels: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for p in planned:
            node_id = new_id("node", at=now)
            t = p.template
            nodes.append(
                {
                    "id": node_id,
                    "hostname": p.hostname,
                    "gpu_model": t.gpu_model,
                    "gpu_count": t.gpu_count,
                    "vcpus": t.vcpus,
                    "ram_gib": t.ram_gib,
                    "nvme_gib": t.nvme,
                    "topology": p.topology,
                    "state": state.value,
                    "state_reason": "imported",
                    "hold": False,
                    "resume_state": None,
                    "drain_requested_at": None,
                    "health": Health.HEALTHY.value,
                    "health_checks": {},
                    "labels": p.labels,
                    "bmc": p.bmc,
                    **driver_columns(p.driver, box),
                    "capex_amount": t.capex,
                    "capex_currency": t.currency if t.capex is not None else None,
                    "book_life_years": t.book_life_years,
                    "in_service_at": _midnight(p.in_service),
                    "import_id": import_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            doms.extend(
                {"node_id": node_id, "level": lv, "name": nm} for lv, nm in p.topology.items()
            )
            labels.extend({"node_id": node_id, "key": k, "value": v} for k, v in p.labels.items())
            events.append(
                {
                    "id": new_id("evt", at=now),
                    "node_id": node_id,
                    "at": now,
                    "from_state": None,
                    "to_state": state.value,
                    "reason": f"imported ({import_id})",
                    "actor": actor,
                }
            )
        gpus = sum(int(n["gpu_count"]) for n in nodes)
        session.add(
            FleetImportRow(
                id=import_id,
                at=now,
                actor=actor,
                nodes_created=len(nodes),
                gpus_created=gpus,
                initial_state=state.value,
            )
        )
        for table, rows in (
            (NodeRow, nodes),
            (NodeDomainRow, doms),
            (NodeLabelRow, labels),
            (NodeEventRow, events),
        ):
            _bulk_insert(session, table, rows)
    return ImportResult(import_id, len(nodes), gpus, domains_created, state)


def driver_columns(settings: DriverSettings, box: SecretBox | None) -> dict[str, Any]:
    """The ``nodes`` columns of a node's driver settings: the driver, its non-secret settings
    (with the names of the sealed credentials under ``credentials``), the sealed credentials."""
    if settings.driver == "sim" and not settings.config:
        return {"driver": "sim", "driver_config": None, "driver_secret": None}
    config = dict(settings.config)
    sealed = None
    if settings.credentials:
        if box is None:
            raise ValidationFailed("no secret box to seal the node's credentials")
        config["credentials"] = settings.credential_names
        sealed = box.seal(dict(settings.credentials))
    return {"driver": settings.driver, "driver_config": config, "driver_secret": sealed}


def _bulk_insert(session: Session, row: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    table = table_of(row)
    for start in range(0, len(rows), 5000):
        session.execute(sa.insert(table), list(rows[start : start + 5000]))


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime(day.year, day.month, day.day, tzinfo=UTC)


def settle_levels(session: Session, levels: list[str], now: datetime) -> None:
    row = session.get(FleetSettingsRow, 1, with_for_update=True)
    if row is None:
        session.add(FleetSettingsRow(id=1, levels=list(levels), updated_at=now))
        session.flush()
    elif list(row.levels) != list(levels):
        raise Conflict(
            f"the spec's levels {list(levels)} differ from the fleet's {list(row.levels)}",
            code="levels_mismatch",
            param="levels",
        )


def add_domains(session: Session, levels: list[str], planned: Iterable[Any], now: datetime) -> int:
    wanted: dict[tuple[str, str], str] = {}
    for p in planned:
        path: list[str] = []
        for level in levels:
            name = p.topology[level]
            wanted.setdefault((level, name), "/".join(path))
            path.append(name)
    existing = {(d.level, d.name): d.parent_path for d in session.scalars(sa.select(DomainRow))}
    new = []
    for (level, name), parent in wanted.items():
        have = existing.get((level, name))
        if have is None:
            new.append({"level": level, "name": name, "parent_path": parent, "created_at": now})
        elif have != parent:
            raise Conflict(
                f"{level} {name!r} already exists under {have or '(root)'}, not under "
                f"{parent or '(root)'}; domain names are unique within their level",
                code="duplicate_domain",
                param=level,
            )
    _bulk_insert(session, DomainRow, new)
    return len(new)


def _refuse_existing_hostnames(session: Session, hostnames: list[str]) -> None:
    for start in range(0, len(hostnames), _CHUNK):
        chunk = hostnames[start : start + _CHUNK]
        taken = set(session.scalars(sa.select(NodeRow.hostname).where(NodeRow.hostname.in_(chunk))))
        if taken:
            first = next(h for h in chunk if h in taken)
            raise Conflict(
                f"a node with hostname {first!r} already exists ({len(taken)}+ duplicates); "
                "nothing was imported",
                code="duplicate_hostname",
                param="hostname",
                details={"hostname": first},
            )
