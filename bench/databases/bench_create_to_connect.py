"""Managed databases benchmark: time from `POST /api/v1/databases` to a working TLS connection.

`neocloud up` (SQLite, no demo fleet, the worker in its process, cycling every 0.2 s) drives a
real test host (`scripts/testhost`) registered as a `service` node through the `ssh` driver.
Each round a tenant creates a database (preset small, 5 GiB, the machine's bridge address
allowed) and the clock stops when psycopg, given exactly the returned connection string and
the downloaded CA (`sslmode=verify-full`), has connected and run `SELECT 1`; then the database
is deleted and the next round waits until it is gone. Reported: p50, p99 and max over the
rounds, the split between reaching `running` and the connection, and the host script's own
time (user, a copy of the node's template cluster, TLS files, pg_ctl start, role and database:
the `created in` of the reason).

Anchors (public figures, not measured here): Amazon RDS for PostgreSQL and Nebius Managed
PostgreSQL take minutes to create an instance (RDS's documentation says "several minutes");
what a platform adds on top of initdb + start is what this figure shows. Target: p99 < 15 s.

Needs root (namespaces), openssh-server and PostgreSQL 15's server binaries:
`make bench-databases`, or .venv/bin/python bench/databases/bench_create_to_connect.py
[--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO = Path(__file__).resolve().parents[2]
TESTHOST = [sys.executable, str(REPO / "scripts" / "testhost")]
NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
BRIDGE = "10.231.0.1/32"  # the machine's address on the test hosts' bridge


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 300:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.headers.get("content-type", "").endswith("json") else r.text

    def wait(self, path: str, ok: Any, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.call("GET", path)
            if ok(got):
                return got
            time.sleep(0.05)
        raise SystemExit(f"{path}: timed out")


def tenant(admin: Api, url: str) -> Api:
    org = admin.call(
        "POST", "/orgs", json={"name": "Bench", "slug": "bench", "owner_email": "o@bench.example"}
    )
    user = admin.call("GET", f"/orgs/{org['id']}/users")["data"][0]
    key = admin.call(
        "POST", "/keys", json={"name": "b", "org_id": org["id"], "user_id": user["id"]}
    )
    return Api(url, key["secret"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-databases-"))
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "op")], check=True
    )
    (work / "op.authorized").write_text((work / "op.pub").read_text())
    name = f"bdb-{os.getpid()}"
    port = free_port()
    env = {
        **os.environ,
        "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": "0.2",
        "NEOCLOUD_API_REQUESTS_PER_MINUTE": "100000",  # the bench polls every 50 ms
    }
    env.pop("NEOCLOUD_DATABASE_URL", None)
    server = None
    try:
        up = subprocess.run(
            [*TESTHOST, "up", name, "--authorized-key", str(work / "op.authorized")],
            capture_output=True,
            text=True,
            check=True,
        )
        address = json.loads(up.stdout)["address"]
        with (work / "server.log").open("w") as log:
            server = subprocess.Popen(
                [
                    *NEOCLOUD,
                    "up",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(work / "data"),
                    "--no-demo-fleet",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        admin = Api(url, (work / "data" / "admin-key").read_text().strip())
        body = {
            "hostname": "bench-svc-0",
            "role": "service",
            "vcpus": 16,
            "ram_gib": 64,
            "nvme_gib": 500,
            "topology": {"region": "lab", "zone": "a", "fabric": "f", "block": "b", "rack": "r"},
            "driver": "ssh",
            "driver_config": {
                "address": address,
                "private_key": (work / "op").read_text(),
                "gpu_check": "none",
            },
        }
        node = admin.call("POST", "/nodes", json=body)["id"]
        admin.wait(f"/nodes/{node}", lambda n: n["state"] == "available")
        admin.wait("/database-options", lambda o: "15" in o["versions"])
        api = tenant(admin, url)
        ca = work / "ca.pem"
        to_running: list[float] = []
        to_connect: list[float] = []
        on_host: list[float] = []
        for i in range(args.rounds):
            t0 = time.monotonic()
            made = api.call(
                "POST",
                "/databases",
                json={
                    "name": f"b{i}",
                    "version": "15",
                    "storage_gib": 5,
                    "allowed_cidrs": [BRIDGE],
                },
            )
            got = api.wait(f"/databases/{made['id']}", lambda d: d["state"] != "provisioning")
            if got["state"] != "running":
                raise SystemExit(f"database failed: {got['reason']}")
            t1 = time.monotonic()
            ca.write_text(api.call("GET", f"/databases/{made['id']}/ca"))
            while True:
                try:
                    with psycopg.connect(
                        made["connection_string"], sslrootcert=str(ca), connect_timeout=5
                    ) as conn:
                        conn.execute("SELECT 1")
                    break
                except psycopg.OperationalError:
                    if time.monotonic() - t0 > 120:
                        raise
                    time.sleep(0.05)
            t2 = time.monotonic()
            to_running.append(t1 - t0)
            to_connect.append(t2 - t0)
            found = re.search(r"created in ([0-9.]+) s", got["reason"])
            on_host.append(float(found.group(1)) if found else float("nan"))
            api.call("DELETE", f"/databases/{made['id']}")
            api.wait(f"/databases/{made['id']}", lambda d: d["state"] == "deleted")
        print(
            f"create -> TLS connection (verify-full) on a service test host, {args.rounds} rounds"
        )
        for label, values in (
            ("to running", to_running),
            ("to connect", to_connect),
            ("host script", on_host),
        ):
            print(
                f"  {label:12s} p50 {pct(values, 0.5):6.2f} s   p99 {pct(values, 0.99):6.2f} s"
                f"   max {max(values):6.2f} s   mean {statistics.mean(values):6.2f} s"
            )
        print("  target: p99 < 15 s; anchor: minutes for RDS / Nebius Managed PostgreSQL")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        subprocess.run([*TESTHOST, "down", name], capture_output=True, check=False)


if __name__ == "__main__":
    main()
