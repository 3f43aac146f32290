"""Random operations (seeded) through the API and the worker keep the invariants: no GPU is
claimed twice at once, every running instance holds a live allocation on a busy node, and
usage never passes the quota."""

from __future__ import annotations

import random
from itertools import pairwise

import sqlalchemy as sa

from neocloud.client import ApiError, Client
from neocloud.compute.tables import AllocationRow, GpuClaimRow, InstanceRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.fleet import service as fleet_service
from neocloud.fleet.domain import CheckStatus
from neocloud.fleet.service import CheckResult
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client

TYPES = ["1xH100", "2xH100", "4xH100", "8xH100"]


def _check(db: Database, clock: VirtualClock, quota: int) -> None:
    now = clock.now()
    with db.transaction() as s:
        claims = s.execute(
            sa.select(
                GpuClaimRow.node_id, GpuClaimRow.gpu_index, GpuClaimRow.start_at, GpuClaimRow.end_at
            ).where(GpuClaimRow.firm.is_(True))
        ).all()
        running = list(s.scalars(sa.select(InstanceRow).where(InstanceRow.state == "running")))
        allocs = {a.id: a for a in s.scalars(sa.select(AllocationRow))}
        nodes = {n.id: n for n in s.scalars(sa.select(NodeRow))}
        live = s.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(InstanceRow.gpu_count), 0)).where(
                InstanceRow.state.in_(["pending", "provisioning", "running", "stopping"]),
                InstanceRow.cls.in_(["on_demand", "spot"]),
            )
        )
    per_gpu: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for node_id, gpu, start, end in claims:
        if end is not None and end <= start:
            continue
        hi = float("inf") if end is None else end.timestamp()
        per_gpu.setdefault((node_id, gpu), []).append((start.timestamp(), hi))
    for key, spans in per_gpu.items():
        spans.sort()
        for (_, e1), (s2, _) in pairwise(spans):
            assert e1 <= s2, f"GPU {key} double-booked"
    for inst in running:
        alloc = allocs[inst.allocation_id or ""]
        assert alloc.end_at is None or alloc.end_at > now
        assert nodes[alloc.node_id].state in ("allocated", "provisioning", "in_use", "draining")
    assert int(live or 0) <= quota


def test_random_operations_keep_the_invariants(
    fleet: Client, db: Database, clock: VirtualClock, worker: Worker
) -> None:
    rng = random.Random(7)
    quota = 48
    _, t = tenant_client(fleet, "rand", quota=quota)
    mine: list[str] = []
    refused: list[str] = []
    node_ids = [n["id"] for n in fleet.nodes.list()["data"]]
    for _ in range(40):
        op = rng.random()
        try:
            if op < 0.5:
                cls = "spot" if rng.random() < 0.3 else "on_demand"
                mine.append(t.instances.create(rng.choice(TYPES), cls=cls)["id"])
            elif op < 0.8 and mine:
                t.instances.terminate(rng.choice(mine))
            elif op < 0.85:
                fleet_service.report_health(
                    db=db,
                    clock=clock,
                    node_id=rng.choice(node_ids),
                    checks=[CheckResult("gpu", CheckStatus.FAIL, "Xid 79")],
                )
            else:
                clock.advance(rng.choice([1, 10, 31]))
        except ApiError as exc:
            refused.append(exc.code)
        worker.run_once()
        _check(db, clock, quota)
    assert set(refused) <= {"quota_exceeded"}
    states = {t.instances.get(i)["state"] for i in mine}
    assert {"running", "terminated"} <= states  # the walk did exercise the lifecycle
