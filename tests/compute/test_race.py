"""The double-booking race: 50 clients through the real app want the last 10 free nodes while
two schedulers that both believe they lead (a split brain) place them. Exactly 10 win; the
rest fail with ``no_capacity``; no GPU is ever claimed twice."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from neocloud.client import Client
from neocloud.compute.config import ComputeConfig
from neocloud.compute.reconciler import Reconciler
from neocloud.compute.scheduler import schedule
from neocloud.compute.tables import GpuClaimRow
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client

FLEET_12 = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x: {gpu_model: h100, gpu_count: 8, vcpus: 224, ram_gib: 2048, nvme_tib: 30}
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - {name: ib01, template: h100-8x, blocks: 3, racks_per_block: 2, nodes_per_rack: 2}
"""
CLIENTS = 50


# PostgreSQL only: SQLite has one writer at a time, so there is no race to lose there.
@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_fifty_clients_race_for_the_last_ten_nodes(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    assert db.dialect == "postgresql"
    assert admin.fleet.import_spec(FLEET_12)["nodes_created"] == 12
    config = ComputeConfig()
    _, early = tenant_client(admin, "early", quota=16)
    for _ in range(2):
        early.instances.create("8xH100")
    schedule(db=db, clock=clock, config=config)  # 2 nodes taken: 10 left
    _, racer = tenant_client(admin, "racer", quota=8 * CLIENTS)

    stop = threading.Event()
    errors: list[BaseException] = []
    retried: list[str] = []

    def scheduler_loop() -> None:  # no lease: both believe they lead
        try:
            while not stop.is_set():
                retried.extend(schedule(db=db, clock=clock, config=config).retried)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    loops = [threading.Thread(target=scheduler_loop) for _ in range(2)]
    for t in loops:
        t.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            made = list(pool.map(lambda _: racer.instances.create("8xH100"), range(CLIENTS)))
        for _ in range(3):  # let both schedulers drain whatever is still pending
            schedule(db=db, clock=clock, config=config)
    finally:
        stop.set()
        for t in loops:
            t.join()
    assert not errors, errors
    print(f"placements refused by the database and retried: {len(retried)}")
    Reconciler(db, clock, SimDriver()).run_once()
    states = [racer.instances.get(m["id"]) for m in made]
    won = [s for s in states if s["state"] == "running"]
    lost = [s for s in states if s["state"] != "running"]
    assert len(won) == 10
    assert {(s["state"], s["state_reason"]) for s in lost} == {("failed", "no_capacity")}
    assert len({s["node_id"] for s in won}) == 10
    with db.transaction() as s:
        per_gpu = s.execute(
            sa.select(GpuClaimRow.node_id, GpuClaimRow.gpu_index, sa.func.count())
            .where(GpuClaimRow.end_at.is_(None))
            .group_by(GpuClaimRow.node_id, GpuClaimRow.gpu_index)
        ).all()
    assert len(per_gpu) == 12 * 8
    assert {count for _, _, count in per_gpu} == {1}


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_terminating_a_cluster_while_the_scheduler_places_it_leaves_no_open_allocation(
    admin: Client, db: Database, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the chaos test: a terminate that read the cluster and its members as pending
    while the scheduler placed them wrote ``terminated`` over ``provisioning`` once the
    scheduler committed, and the members' allocations stayed open (billed for ever). The
    scheduler is held inside its placing transaction here so the terminate lands in it."""
    from neocloud.compute import gangs

    assert admin.fleet.import_spec(FLEET_12)["nodes_created"] == 12
    _, acme = tenant_client(admin, "acme", quota=16)
    cluster = acme.clusters.create("H100", 2)
    placing = threading.Event()
    real_move = gangs.move_cluster

    def slow_move(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_move(*args, **kwargs)
        placing.set()
        stop.wait(1.0)  # still inside the transaction that holds the placement

    stop = threading.Event()
    monkeypatch.setattr(gangs, "move_cluster", slow_move)
    placer = threading.Thread(
        target=schedule, kwargs={"db": db, "clock": clock, "config": ComputeConfig()}
    )
    placer.start()
    try:
        assert placing.wait(10)
        acme.clusters.terminate(cluster["id"])  # waits for the placement to commit
    finally:
        stop.set()
        placer.join()
    monkeypatch.undo()
    reconciler = Reconciler(db, clock, SimDriver())
    for _ in range(4):
        reconciler.run_once()
    from neocloud.compute.tables import AllocationRow, InstanceRow

    with db.transaction() as s:
        members = list(
            s.scalars(sa.select(InstanceRow).where(InstanceRow.cluster_id == cluster["id"]))
        )
        assert len(members) == 2
        for row in members:
            assert row.state == "terminated", (row.id, row.state)
            alloc = s.get(AllocationRow, row.allocation_id)
            assert alloc is not None, row.id
            assert alloc.end_at is not None, row.id
