"""Agent benchmark: sustained heartbeats per second into one `neocloud up`, and what they cost.

The platform runs as an operator runs it (`neocloud up --no-demo-fleet`, API and worker in one
process, on SQLite or PostgreSQL). N simulated agents (threads, one keep-alive HTTP connection
each, each with its node's own agent token) send heartbeats back to back: 8 GPUs of telemetry
each, an inventory in the first. Measured over a fixed window after a warm-up:

* heartbeats answered per second (all 200s: a non-200 fails the run);
* the server's CPU seconds per heartbeat (user + system of the `neocloud up` process, from
  /proc/<pid>/stat: the API, the worker and the database driver; PostgreSQL's own CPU is not in
  it, SQLite's is);
* database rows written per minute: per heartbeat one node row and one upserted row per GPU,
  plus the series rows (one per GPU per closed 60 s bucket) and health rows (only on a change),
  both counted in the database.

Anchor: 31,250 nodes (250,000 GPUs) every 10 s is 3,125 heartbeats/s. The projection below
multiplies it by the CPU per heartbeat (cores, so API processes of one core each), and divides
it by the run's rate (which the agents bound when they, not the server, use up the CPUs).

Rerun:  .venv/bin/python bench/agent/bench_heartbeat.py [--agents 32] [--seconds 20]
            [--backends sqlite,postgresql]
PostgreSQL comes from NEOCLOUD_BENCH_POSTGRES_URL (default postgres@127.0.0.1:5432/test); a
throwaway database is created there and dropped at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.db.scratch import scratch_database
from neocloud.fleet import agent
from neocloud.fleet import service as fleet_service
from neocloud.fleet.spec import parse_spec
from neocloud.fleet.tables import GpuTelemetrySeriesRow, HealthCheckRow, NodeRow
from neocloud.kernel.clock import SystemClock
from neocloud.tenancy.service import bootstrap_operator

PG_URL = os.environ.get(
    "NEOCLOUD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FLEET = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x: {gpu_model: h100, gpu_count: 8, vcpus: 224, ram_gib: 2048, nvme_tib: 30}
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - {name: ib01, template: h100-8x, blocks: 4, racks_per_block: 8, nodes_per_rack: 8}
"""  # 256 nodes
GPUS = 8
ANCHOR_NODES = 31_250
ANCHOR_INTERVAL_S = 10
ANCHOR_RATE = ANCHOR_NODES / ANCHOR_INTERVAL_S  # 3,125 heartbeats/s
NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its reaped children's too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / TICKS


def heartbeat_body(node_id: str, i: int, first: bool) -> dict[str, Any]:
    telemetry = [
        {
            "index": g,
            "utilization_pct": float((i * 7 + g) % 100),
            "memory_used_mib": 40_000 + g,
            "temperature_c": 55.0 + g,
            "power_w": 450.0 + g,
            "sm_clock_mhz": 1980,
            "ecc_correctable": 0,
            "ecc_uncorrectable": 0,
            "retired_pages": 0,
            "remap_failed": False,
            "throttle": [],
            "xid": [],
        }
        for g in range(GPUS)
    ]
    inventory = {
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "gpus": [
            {
                "index": g,
                "uuid": f"GPU-{node_id[-8:]}-{g}",
                "serial": None,
                "name": "NVIDIA H100 80GB HBM3",
                "memory_total_mib": 81559,
                "pci_bus_id": None,
                "nvlink_active": 18,
            }
            for g in range(GPUS)
        ],
    }
    return {
        "node_id": node_id,
        "agent_version": "bench",
        "simulated": True,
        "sent_at": "2026-03-01T12:00:00Z",
        "inventory": inventory if first else None,
        "telemetry": telemetry,
        "checks": [],
    }


def _counts(db: Database) -> tuple[int, int]:
    with db.transaction() as s:
        series = s.scalar(sa.select(sa.func.count()).select_from(GpuTelemetrySeriesRow)) or 0
        health = s.scalar(sa.select(sa.func.count()).select_from(HealthCheckRow)) or 0
    return int(series), int(health)


def run(db: Database, url: str, agents: int, seconds: float, warmup: float) -> dict[str, float]:
    clock = SystemClock()
    upgrade(db)
    assert bootstrap_operator(db=db, clock=clock) is not None
    fleet_service.import_spec(db=db, clock=clock, spec=parse_spec(FLEET))
    with db.transaction() as s:
        nodes = list(s.scalars(sa.select(NodeRow.id).order_by(NodeRow.id).limit(agents)))
    tokens = [
        agent.issue_agent_token(db=db, clock=clock, node_id=n, actor="bench").token for n in nodes
    ]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "NEOCLOUD_LOG_LEVEL": "warning",
        "NEOCLOUD_API_REQUESTS_PER_MINUTE": "1000000",
        "NEOCLOUD_API_WRITES_PER_MINUTE": "1000000",
    }
    with tempfile.TemporaryDirectory() as tmp:
        args = [*NEOCLOUD, "up", "--data-dir", tmp, "--database-url", url]
        args += ["--port", str(port), "--no-demo-fleet"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                assert proc.poll() is None, "neocloud up exited"
                try:
                    httpx.get(f"{base}/api/v1/health", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            return _measure(db, proc.pid, base, nodes, tokens, seconds, warmup)
        finally:
            proc.terminate()
            proc.wait(30)


def _measure(
    db: Database,
    pid: int,
    base: str,
    nodes: list[str],
    tokens: list[str],
    seconds: float,
    warmup: float,
) -> dict[str, float]:
    counted = threading.Event()  # set: the window is open
    stop = threading.Event()
    done = [0] * len(nodes)
    errors: list[str] = []

    def beat(k: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[k]}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            i = 0
            while not stop.is_set():
                r = client.post("/api/v1/agent/heartbeat", json=heartbeat_body(nodes[k], i, i == 0))
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                    return
                if counted.is_set():
                    done[k] += 1
                i += 1

    threads = [threading.Thread(target=beat, args=(k,), daemon=True) for k in range(len(nodes))]
    for t in threads:
        t.start()
    time.sleep(warmup)
    series0, health0 = _counts(db)
    cpu0, t0 = _cpu_s(pid), time.perf_counter()
    counted.set()
    time.sleep(seconds)
    counted.clear()
    cpu1, t1 = _cpu_s(pid), time.perf_counter()
    series1, health1 = _counts(db)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    beats = sum(done)
    wall = t1 - t0
    rate = beats / wall
    cpu_per_beat = (cpu1 - cpu0) / max(beats, 1)
    rows = beats * (1 + GPUS) + (series1 - series0) + (health1 - health0)
    return {
        "beats": beats,
        "rate": rate,
        "cpu_ms": cpu_per_beat * 1000,
        "cpu_util": (cpu1 - cpu0) / wall,
        "rows_per_min": rows / wall * 60,
        "rows_per_beat": rows / max(beats, 1),
        "series_per_min": (series1 - series0) / wall * 60,
        "health_rows": health1 - health0,
    }


def _report(backend: str, agents: int, r: dict[str, float]) -> None:
    processes = math.ceil(ANCHOR_RATE / r["rate"])
    cores = ANCHOR_RATE * r["cpu_ms"] / 1000
    # At the anchor each node beats every 10 s: 9 rows per beat, plus 8 series rows a minute.
    anchor_rows = ANCHOR_RATE * 60 * (1 + GPUS) + ANCHOR_NODES * GPUS
    print(f"\n{backend}: {agents} agents, {int(r['beats'])} heartbeats in the window")
    print(f"  sustained             {r['rate']:8.0f} heartbeats/s   (anchor: {ANCHOR_RATE:,.0f}/s)")
    print(
        f"  server CPU            {r['cpu_ms']:8.2f} ms per heartbeat "
        f"({r['cpu_util']:.2f} cores busy)"
    )
    print(
        f"  rows written          {r['rows_per_min']:8.0f} per minute "
        f"({r['rows_per_beat']:.2f} per beat; "
        f"series {r['series_per_min']:.0f}/min; health {int(r['health_rows'])} in the window)"
    )
    print(
        f"  at 31,250 nodes/10 s: {cores:.1f} cores of server CPU: {math.ceil(cores)} API "
        f"processes of one core ({processes} at this run's rate); {anchor_rows:,.0f} rows/min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--agents", type=int, default=32, help="simulated agents (<= 256)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the window")
    parser.add_argument("--backends", default="sqlite,postgresql", help="sqlite and/or postgresql")
    args = parser.parse_args()
    print(
        f"heartbeat benchmark on {platform.node()} ({os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}), Python {platform.python_version()}"
    )
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/bench.db"
                db = Database.from_url(url)
                try:
                    _report(
                        backend, args.agents, run(db, url, args.agents, args.seconds, args.warmup)
                    )
                finally:
                    db.dispose()
        else:
            try:
                with scratch_database(PG_URL, "neocloud_bench_agent") as url:
                    db = Database.from_url(url)
                    try:
                        _report(
                            backend,
                            args.agents,
                            run(db, url, args.agents, args.seconds, args.warmup),
                        )
                    finally:
                        db.dispose()
            except sa.exc.OperationalError as exc:
                print(f"\n{backend}: skipped, no server at {PG_URL} ({exc.orig})")


if __name__ == "__main__":
    main()
