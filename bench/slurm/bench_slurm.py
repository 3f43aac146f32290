"""Managed Slurm benchmark: time to a ready Slurm, and the healing loop, on real test hosts.

`neocloud up` (SQLite, no demo fleet, the worker in its process, cycling every 0.2 s) drives
test hosts (`scripts/testhost`: real sshd, Debian's Slurm 22.05 and munge from the machine,
stand-in GPU device files) through the `ssh` driver.

1. **Ready**: a cluster of 2 and of 4 nodes with `"scheduler": {"type": "slurm"}`, several
   rounds each: `running` → `scheduler.state = ready` (the API's `running_at` and
   `scheduler.ready_at`: probe, key and files written, daemons started, every node idle in
   `sinfo`); the cluster is terminated (Slurm removed) and its nodes wiped between rounds.
2. **Healing**: a 2-node cluster with a spare host available; the operator's health API fails
   one member (an ECC error); timed from that call: the drain in Slurm (the cluster's event),
   the replacement running, the replacement joined (event), and the new node `idle` in
   `sinfo` on the controller (over the tenant's login).

Anchors: SUNK and Soperator replace a failed node by scheduling a new pod on a healthy machine
(tens of seconds to minutes, image pulls included); a cloud bare-metal node boots in minutes.
On test hosts nothing boots and nothing is pulled, so these figures are the platform's own
share: its reconcile cycles and Slurm's restart and registration.

Needs root (namespaces), openssh-server, slurm-wlm and munge: `make bench-slurm`, or
  .venv/bin/python bench/slurm/bench_slurm.py [--rounds 3] [--heal-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
TESTHOST = [sys.executable, str(REPO / "scripts" / "testhost")]
NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
SSH_OPTIONS = shlex.split(
    "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
    " -o ConnectTimeout=5 -o LogLevel=ERROR"
)
TOPOLOGY = {"region": "lab", "zone": "lab-a", "fabric": "ib1", "block": "b1", "rack": "r1"}
ECC = {"name": "gpu.ecc", "status": "fail", "message": "uncorrectable ECC error (bench)"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keypair(path: Path) -> tuple[Path, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path, Path(f"{path}.pub").read_text().strip()


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def until(what: str, probe: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def summary(label: str, values: list[float]) -> str:
    return (
        f"  {label:<38} min {min(values):5.1f} s   median {statistics.median(values):5.1f} s"
        f"   max {max(values):5.1f} s   ({len(values)} runs)"
    )


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 300:
            raise SystemExit(f"{method} {path}: {r.status_code} {r.text}")
        return r.json()

    def heal_events(self, cluster_id: str) -> list[str]:
        got = self.call("GET", f"/clusters/{cluster_id}/events", params={"limit": 200})
        return [e["message"] or "" for e in got["data"] if e["kind"] == "scheduler"]


class Bench:
    def __init__(self, work: Path, api: Api, tenant_key: Path, tenant_pub: str) -> None:
        self.work, self.api, self.tenant_key, self.tenant_pub = work, api, tenant_key, tenant_pub

    def cluster(self, cluster_id: str) -> Any:
        return self.api.call("GET", f"/clusters/{cluster_id}")

    def create(self, nodes: int, name: str) -> dict[str, Any]:
        body = {
            "gpu_model": "H100",
            "node_count": nodes,
            "name": name,
            "ssh_keys": [self.tenant_pub],
            "scheduler": {"type": "slurm"},
        }
        created = self.api.call("POST", "/clusters", json=body)

        def settled() -> Any:
            c = self.cluster(created["id"])
            return c if c["scheduler"]["state"] in ("ready", "failed") else None

        got: dict[str, Any] = until(f"{name} ready", settled)
        if got["scheduler"]["state"] != "ready":
            raise SystemExit(f"slurm failed: {got['scheduler']['reason']}")
        return got

    def terminate(self, cluster_id: str) -> None:
        self.api.call("POST", f"/clusters/{cluster_id}/terminate")
        until("terminated", lambda: self.cluster(cluster_id)["state"] == "terminated")

    def on_controller(self, c: dict[str, Any], remote: str) -> str:
        argv = shlex.split(c["scheduler"]["login_command"])
        argv[1:1] = ["-i", str(self.tenant_key), *SSH_OPTIONS]
        done = subprocess.run([*argv, remote], capture_output=True, text=True, check=False)
        return done.stdout

    def available(self, count: int) -> None:
        def enough() -> bool:
            nodes = self.api.call("GET", "/nodes", params={"limit": 100})["data"]
            return sum(n["state"] == "available" for n in nodes) >= count

        until(f"{count} nodes available", enough)

    def ready_round(self, nodes: int, name: str) -> float:
        self.available(nodes)
        got = self.create(nodes, name)
        took = stamp(got["scheduler"]["ready_at"]) - stamp(got["running_at"])
        self.terminate(got["id"])
        return took

    def heal_round(self, name: str) -> dict[str, float]:
        self.available(3)  # two members and a spare
        c = self.create(2, name)
        member = next(m for m in c["nodes"] if m["hostname"] == f"{name}-1")
        marks: dict[str, float] = {}
        t0 = time.monotonic()
        self.api.call("POST", f"/nodes/{member['node_id']}/health", json={"checks": [ECC]})
        new = f"{name}-1-r"
        checks: list[tuple[str, Callable[[], bool]]] = [
            (
                "drained",
                lambda: any(
                    m.startswith(f"slurm heal: drained {name}-1")
                    for m in (self.api.heal_events(c["id"]))
                ),
            ),
            (
                "replacement running",
                lambda: any(
                    m["hostname"] == new and m["state"] == "running"
                    for m in self.cluster(c["id"])["nodes"]
                ),
            ),
            ("joined", lambda: f"{new} joined" in (self.cluster(c["id"])["scheduler"]["reason"])),
            (
                "idle in sinfo",
                lambda: f"{new} idle" in self.on_controller(c, "sinfo -h -N -o '%N %T'"),
            ),
        ]
        for label, probe in checks:
            until(label, probe)
            marks[label] = time.monotonic() - t0
        self.terminate(c["id"])
        return marks


def start_hosts(names: list[str], authorized: Path) -> list[dict[str, Any]]:
    hosts = []
    for name in names:
        up = subprocess.run(
            [*TESTHOST, "up", name, "--gpus", "8", "--authorized-key", str(authorized)],
            capture_output=True,
            text=True,
            check=True,
        )
        host = json.loads(up.stdout)
        subprocess.run(
            [*TESTHOST, "exec", name, "--", "sh", "-c", "for i in 0 1 2 3 4 5 6 7; do touch "
             "/dev/nvidia$i; done"],
            check=True,
        )  # fmt: skip
        hosts.append(host)
    return hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="ready rounds per cluster size")
    parser.add_argument("--heal-rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    op_key, op_pub = keypair(work / "operator")
    tenant_key, tenant_pub = keypair(work / "tenant")
    (work / "operator.authorized").write_text(op_pub + "\n")
    # four for the 4-node clusters; each heal round leaves one failed node behind
    names = [f"bs-{os.getpid()}-{i}" for i in range(max(4, 2 + args.heal_rounds))]
    port = free_port()
    env = {
        **os.environ,
        "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": "0.2",
        "NEOCLOUD_API_REQUESTS_PER_MINUTE": "100000",  # the bench polls every 100 ms
    }
    env.pop("NEOCLOUD_DATABASE_URL", None)
    server = None
    try:
        hosts = start_hosts(names, work / "operator.authorized")
        log = (work / "server.log").open("w")
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

        def up() -> bool:
            try:
                return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        until("the platform", up, timeout=120)
        api = Api(url, (work / "data" / "admin-key").read_text().strip())
        for i, h in enumerate(hosts):
            body = {
                "hostname": f"bench-gpu-{i}",
                "gpu_model": "H100",
                "gpu_count": 8,
                "vcpus": 224,
                "ram_gib": 2048,
                "nvme_gib": 30000,
                "topology": TOPOLOGY,
                "driver": "ssh",
                "driver_config": {"address": h["address"], "private_key": op_key.read_text()},
            }
            api.call("POST", "/nodes", json=body)
        bench = Bench(work, api, tenant_key, tenant_pub)
        ready = {n: [bench.ready_round(n, f"r{n}x{i}") for i in range(args.rounds)] for n in (2, 4)}
        heals = [bench.heal_round(f"h{i}") for i in range(args.heal_rounds)]
        print("managed Slurm on test hosts (Debian slurm-wlm 22.05, ssh driver)")
        for n, values in ready.items():
            print(summary(f"{n}-node: running -> slurm ready", values))
        for label in heals[0]:
            print(summary(f"heal: failure -> {label}", [h[label] for h in heals]))
        print(
            "  anchors: SUNK/Soperator swap a node by scheduling a pod (tens of s to minutes);"
            " a bare-metal boot takes minutes"
        )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        for name in names:
            subprocess.run([*TESTHOST, "down", name], capture_output=True, check=False)


if __name__ == "__main__":
    main()
