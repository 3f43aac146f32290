"""The double-booking race across processes: two ``neocloud up`` servers on one PostgreSQL
database, 50 clients on each, all asking at once for a whole node while only 10 are free.
Exactly 10 win; the other 90 fail with ``no_capacity``; no GPU is ever claimed twice; no
request gets a 5xx.

Two variants. ``one-leader``: the deployment as shipped, where the scheduler lease lets one
process place at a time. ``lapsing-lease``: the lease lasts 10 ms, shorter than a scheduling
cycle, so both processes' schedulers place at once (a split brain across processes) and only
the database stands between them and a double booking: the placement transaction locks the
instance and node rows and re-reads the claims, and the exclusion constraint on ``gpu_claims``
refuses overlapping firm claims regardless.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from neocloud.api.platform import prepare
from neocloud.client import Client
from neocloud.compute.tables import AllocationRow, GpuClaimRow
from neocloud.db.engine import Database
from neocloud.db.tables import LeaseRow
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import load_settings

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
NODES, TAKEN = 12, 2
SERVERS, CLIENTS_PER_SERVER = 2, 50
NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
SETTLED = {"running", "failed", "terminated", "preempted"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def pg_url(db: Database) -> str:
    """The URL of the (emptied, migrated) throwaway PostgreSQL database of this session."""
    assert db.dialect == "postgresql"
    return db.engine.url.render_as_string(hide_password=False)


@pytest.fixture
def servers(pg_url: str, tmp_path: Path, lease_ttl_s: float) -> Iterator[tuple[list[Server], str]]:
    """Prepare the database once (operator, fleet), then start ``neocloud up`` twice on it;
    yields the servers and the operator's key."""
    started = time.monotonic()
    spec = tmp_path / "fleet.yaml"
    spec.write_text(FLEET_12)
    settings = load_settings(database_url=pg_url, data_dir=tmp_path / "setup")
    prepared = prepare(settings, SystemClock(), fleet_file=spec, demo_fleet=False)
    prepared.db.dispose()
    assert prepared.admin_key is not None
    assert prepared.imported_nodes == NODES
    env = {
        **os.environ,
        "NEOCLOUD_LEADER_LEASE_TTL_S": str(lease_ttl_s),
        "NEOCLOUD_LOG_LEVEL": "warning",
        "NEOCLOUD_SIM_PROVISION_S": "0",
        "NEOCLOUD_SIM_DEPROVISION_S": "0",
        "NEOCLOUD_SIM_WIPE_S": "0",
        "NEOCLOUD_SIM_POWER_S": "0",
        "NEOCLOUD_SIM_FAILURE_PROBABILITY": "0",
        "NEOCLOUD_CONFIG": str(tmp_path / "profiles.json"),
    }
    servers: list[Server] = []
    logs = []
    try:
        for n in range(SERVERS):
            port, data_dir = _free_port(), tmp_path / f"server{n}"
            log_path = tmp_path / f"server{n}.log"
            log = log_path.open("w")
            logs.append(log)
            proc = subprocess.Popen(
                [
                    *NEOCLOUD,
                    "up",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(data_dir),
                    "--database-url",
                    pg_url,
                    "--no-demo-fleet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            servers.append(Server(f"http://127.0.0.1:{port}", proc, log_path))
        deadline = time.monotonic() + 90
        for server in servers:
            while True:
                if server.proc.poll() is not None:
                    raise AssertionError(server.log.read_text())
                try:
                    if httpx.get(f"{server.url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the servers did not come up in 90 s"
                time.sleep(0.2)
        print(f"\nservers up in {time.monotonic() - started:.1f} s")
        yield servers, prepared.admin_key
    finally:
        for server in servers:
            server.proc.terminate()
        for server in servers:
            try:
                server.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=10)
        for log in logs:
            log.close()


def _tenant(admin: Any, slug: str, quota: int) -> str:  # Client: resources attach at run time
    """An org with an H100 quota; returns its owner's API key."""
    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    admin.quotas.set(org["id"], "H100-SXM-80GB", quota)
    return str(key["secret"])


def _settle(https: list[httpx.Client], ids: set[str], timeout_s: float) -> dict[str, Any]:
    """Poll the org's instances (alternating servers) until every one of ``ids`` has settled."""
    deadline = time.monotonic() + timeout_s
    rounds = 0
    while True:
        http = https[rounds % len(https)]
        rounds += 1
        response = http.get("/api/v1/instances", params={"limit": 1000})
        assert response.status_code == 200, response.text
        seen = {i["id"]: i for i in response.json()["data"] if i["id"] in ids}
        if len(seen) == len(ids) and all(i["state"] in SETTLED for i in seen.values()):
            return seen
        assert time.monotonic() < deadline, Counter(i["state"] for i in seen.values())
        time.sleep(0.2)


class _LeaseWatch:
    """Samples who holds the scheduler lease, to tell which processes placed work."""

    def __init__(self, db: Database) -> None:
        self.db, self.holders, self._stop = db, Counter[str](), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.db.transaction() as s:
                holder = s.execute(
                    sa.select(LeaseRow.holder).where(LeaseRow.name == "scheduler")
                ).scalar()
            if holder is not None:
                self.holders[holder.split(":")[1]] += 1  # hostname:pid:id
            time.sleep(0.005)

    def __enter__(self) -> _LeaseWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# PostgreSQL only: it is what a multi-process deployment runs on, and SQLite has one writer.
@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
@pytest.mark.parametrize("lease_ttl_s", [15.0, 0.01], ids=["one-leader", "lapsing-lease"])
def test_two_processes_hundred_clients_race_for_the_last_ten_nodes(
    db: Database, servers: tuple[list[Server], str], lease_ttl_s: float
) -> None:
    running, admin_key = servers
    pids = {str(s.proc.pid) for s in running}
    admin = Client(running[0].url, admin_key, retries=0)
    early_key = _tenant(admin, "early", quota=8 * TAKEN)
    racer_key = _tenant(admin, "racer", quota=8 * SERVERS * CLIENTS_PER_SERVER)
    admin.close()
    early = [
        httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {early_key}"})
        for s in running
    ]
    taken = set()
    for n in range(TAKEN):
        response = early[n % SERVERS].post("/api/v1/instances", json={"instance_type": "8xH100"})
        assert response.status_code == 201, response.text
        taken.add(response.json()["id"])
    early_done = _settle(early, taken, timeout_s=20)
    assert {i["state"] for i in early_done.values()} == {"running"}
    taken_nodes = {i["node_id"] for i in early_done.values()}
    assert len(taken_nodes) == TAKEN  # 10 nodes left free

    racers = [
        httpx.Client(
            base_url=s.url,
            headers={"Authorization": f"Bearer {racer_key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=CLIENTS_PER_SERVER),
        )
        for s in running
    ]
    total = SERVERS * CLIENTS_PER_SERVER
    gate = threading.Barrier(total)

    def create(i: int) -> tuple[int, int, dict[str, Any]]:
        server = i % SERVERS
        gate.wait()  # all 100 ask at once
        response = racers[server].post("/api/v1/instances", json={"instance_type": "8xH100"})
        try:
            return server, response.status_code, response.json()
        except ValueError:
            return server, response.status_code, {"text": response.text}

    race_started = time.monotonic()
    with _LeaseWatch(db) as watch:
        with ThreadPoolExecutor(max_workers=total) as pool:
            answers = list(pool.map(create, range(total)))
        create_s = time.monotonic() - race_started
        # Every answer is a 201 or a no_capacity refusal; never a 5xx or another error.
        assert not [(st, b) for _, st, b in answers if st >= 500], "5xx answers"
        refused = [b for _, st, b in answers if st != 201]
        assert all(b.get("error", {}).get("code") == "no_capacity" for b in refused), refused
        made = {body["id"] for _, status, body in answers if status == 201}
        final = _settle(racers, made, timeout_s=30)
    settle_s = time.monotonic() - race_started
    for http in [*early, *racers]:
        http.close()

    # Both processes served their 50 clients.
    per_server = Counter(server for server, _, _ in answers)
    assert per_server == dict.fromkeys(range(SERVERS), CLIENTS_PER_SERVER)

    won = [i for i in final.values() if i["state"] == "running"]
    lost = [i for i in final.values() if i["state"] != "running"]
    assert len(won) == NODES - TAKEN, Counter((i["state"], i["state_reason"]) for i in lost)
    assert len(lost) + len(refused) == total - (NODES - TAKEN)
    assert {(i["state"], i["state_reason"]) for i in lost} <= {("failed", "no_capacity")}
    won_nodes = {i["node_id"] for i in won}
    assert len(won_nodes) == NODES - TAKEN
    assert not won_nodes & taken_nodes
    assert all(sorted(i["gpu_indices"]) == list(range(8)) for i in won)

    with db.transaction() as s:
        per_gpu = s.execute(
            sa.select(GpuClaimRow.node_id, GpuClaimRow.gpu_index, sa.func.count())
            .where(GpuClaimRow.end_at.is_(None))
            .group_by(GpuClaimRow.node_id, GpuClaimRow.gpu_index)
        ).all()
        live = s.execute(
            sa.select(AllocationRow.node_id, AllocationRow.instance_id).where(
                AllocationRow.end_at.is_(None)
            )
        ).all()
    assert len(per_gpu) == NODES * 8
    assert {count for _, _, count in per_gpu} == {1}, "a GPU claimed twice"
    assert sorted(n for n, _ in live) == sorted(won_nodes | taken_nodes)
    assert {i for _, i in live} == {i["id"] for i in won} | taken

    # Who scheduled: the lease holders seen while the race ran.
    holders = set(watch.holders)
    assert holders <= pids, (holders, pids)
    if lease_ttl_s < 1:
        assert holders == pids, "both processes' schedulers should have placed work"
    else:
        assert len(holders) == 1
    print(
        f"100 creates answered in {create_s:.2f} s; "
        f"all settled {settle_s:.2f} s after the start; lease holders sampled "
        f"{dict(watch.holders)} (pids {sorted(pids)})"
    )
