"""Compute benchmark: time-to-GPU (request -> ``running``) at N concurrent creates.

The real platform runs in a child process as `neocloud up` runs it: the FastAPI app under
uvicorn on a loopback port, the compute worker in a background thread (leader lease, scheduler,
reconciler, the sim driver with zero delays), nudged by the API after each create. N clients
(threads, one HTTP connection each) POST /api/v1/instances at once; time-to-GPU is the
instance's ``running_at - created_at`` as the server recorded them. Also reported: the wall
time until every create was answered (create throughput) and until all were running.

Target (the compute issue): p99 <= 1 s. Anchor: dstack waits up to 10 minutes (20-55 for some
bare-metal clouds) for a provider to provision an instance.

Rerun:  .venv/bin/python bench/compute/bench_time_to_gpu.py [--n 100] [--backends sqlite,postgresql]
PostgreSQL comes from NEOCLOUD_BENCH_POSTGRES_URL (default postgres@127.0.0.1:5432/test); a
throwaway database is created there and dropped at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import secrets
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import uvicorn

from neocloud.api.app import create_app
from neocloud.compute.service import register_default_quotas
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.db.scratch import scratch_database
from neocloud.drivers.sim import SimDriver
from neocloud.fleet import service as fleet_service
from neocloud.fleet.spec import parse_spec
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings
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
      - {name: ib01, template: h100-8x, blocks: 4, racks_per_block: 8, nodes_per_rack: 4}
"""  # 128 nodes, 1,024 GPUs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _serve(url: str, port: int, poll_s: float | None = None) -> None:
    """The platform as `neocloud up` runs it, in its own process (clients do not share its
    interpreter lock). With ``poll_s`` the worker runs in a process of its own instead, which
    polls every ``poll_s`` seconds (there is no cross-process nudge): a trial of that design."""
    db = Database.from_url(url)
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(settings=Settings(data_dir=Path(tmp)), db=db, clock=clock)
        worker = None
        if poll_s is None:
            # The worker gets its own connection pool: it never queues behind request threads.
            worker = Worker(Database.from_url(url), clock, driver=SimDriver(), interval_s=1.0)
            app.state.compute_nudge = worker.nudge
            worker.start()
        try:
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
        finally:
            if worker is not None:
                worker.stop()


def _work(url: str, poll_s: float) -> None:
    """The compute worker alone in its process, polling (``--worker-process``)."""
    worker = Worker(Database.from_url(url), SystemClock(), driver=SimDriver(), interval_s=poll_s)
    worker.start()
    threading.Event().wait()


def run(
    db: Database, url: str, n: int, instance_type: str, poll_s: float | None = None
) -> dict[str, float]:
    clock = SystemClock()
    upgrade(db)
    key = bootstrap_operator(db=db, clock=clock)
    assert key is not None
    fleet_service.import_spec(db=db, clock=clock, spec=parse_spec(FLEET))
    register_default_quotas(db=db, clock=clock, limit_gpus=100_000)
    port = _free_port()
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=_serve, args=(url, port, poll_s))
    server.start()
    worker = None
    if poll_s is not None:
        worker = ctx.Process(target=_work, args=(url, poll_s), daemon=True)
        worker.start()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        while True:
            try:
                httpx.get(f"{base}/api/v1/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        one = _measure_one_by_one(base, headers, 20, instance_type)
        return {**_measure(base, headers, n, instance_type), **one}
    finally:
        server.terminate()
        server.join(20)
        if worker is not None:
            worker.terminate()
            worker.join(20)


def _measure(base: str, headers: dict[str, str], n: int, instance_type: str) -> dict[str, float]:
    clients = [httpx.Client(base_url=base, headers=headers, timeout=60) for _ in range(n)]
    barrier = threading.Barrier(n)

    def create(i: int) -> str:
        barrier.wait()
        r = clients[i].post(
            "/api/v1/instances",
            json={"instance_type": instance_type},
            headers={"Idempotency-Key": secrets.token_hex(8)},
        )
        r.raise_for_status()
        return str(r.json()["id"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        ids = list(pool.map(create, range(n)))
    created_s = time.perf_counter() - t0
    pending = set(ids)
    done: dict[str, dict[str, str]] = {}
    while pending:
        page = clients[0].get("/api/v1/instances", params={"limit": 1000}).json()["data"]
        for inst in page:
            if inst["id"] in pending and inst["state"] not in ("pending", "provisioning"):
                done[inst["id"]] = inst
                pending.discard(inst["id"])
        if pending:
            time.sleep(0.02)
    all_running_s = time.perf_counter() - t0
    for c in clients:
        c.close()
    running = [d for d in done.values() if d["state"] == "running"]
    assert len(running) == n, f"{n - len(running)} did not run: {list(done.values())[:2]}"
    ttg = [(_parse(d["running_at"]) - _parse(d["created_at"])).total_seconds() for d in running]
    return {
        "p50_s": statistics.median(ttg),
        "p99_s": _pct(ttg, 99),
        "max_s": max(ttg),
        "creates_per_s": n / created_s,
        "all_running_s": all_running_s,
    }


def _measure_one_by_one(
    base: str, headers: dict[str, str], n: int, instance_type: str
) -> dict[str, float]:
    """Time-to-GPU of creates made one at a time on an idle platform (each waits to run)."""
    ttg = []
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        for _ in range(n):
            r = c.post("/api/v1/instances", json={"instance_type": instance_type})
            r.raise_for_status()
            inst = r.json()
            while inst["state"] in ("pending", "provisioning"):
                time.sleep(0.005)
                inst = c.get(f"/api/v1/instances/{inst['id']}").json()
            assert inst["state"] == "running", inst
            ttg.append((_parse(inst["running_at"]) - _parse(inst["created_at"])).total_seconds())
            c.post(f"/api/v1/instances/{inst['id']}/terminate").raise_for_status()
    return {"one_p50_s": statistics.median(ttg), "one_max_s": max(ttg)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="concurrent creates")
    parser.add_argument("--type", default="8xH100", help="instance type")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument(
        "--worker-process",
        type=float,
        metavar="POLL_S",
        help="trial: run the worker in a process of its own, polling every POLL_S seconds "
        "(default: a thread of the API process, nudged after each create, as `neocloud up`)",
    )
    args = parser.parse_args()
    print(
        f"# time-to-GPU of {args.type}, zero driver delay: 20 creates one at a time, "
        f"then {args.n} concurrent"
    )
    print(f"# {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(
        "| backend | one at a time: p50 s | max s | concurrent: p50 s | p99 s | max s "
        "| creates/s | all running after s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/bench.db"
                db = Database.from_url(url)
                r = run(db, url, args.n, args.type, args.worker_process)
                db.dispose()
        else:
            with scratch_database(PG_URL, "neocloud_bench_compute") as url:
                db = Database.from_url(url)
                try:
                    r = run(db, url, args.n, args.type, args.worker_process)
                finally:
                    db.dispose()
        print(
            f"| {backend} | {r['one_p50_s']:.3f} | {r['one_max_s']:.3f} "
            f"| {r['p50_s']:.3f} | {r['p99_s']:.3f} | {r['max_s']:.3f} "
            f"| {r['creates_per_s']:.0f} | {r['all_running_s']:.2f} |"
        )
    print("target: p99 <= 1 s; anchor: dstack waits up to 600 s (1,200-3,300 s on some")
    print("bare-metal clouds) for a provider to provision")


if __name__ == "__main__":
    main()
