"""Real nodes benchmark: time from `POST /api/v1/instances` to a working SSH login.

`neocloud up` (SQLite, no demo fleet, the worker in its process) drives real test hosts
(`scripts/testhost`: a real sshd in its own namespaces, with a stand-in `nvidia-smi`) through the
`ssh` driver. The operator registers the hosts; each round a tenant creates an 8-GPU instance with
their key and a `#!` user data script, and the clock stops when the real `ssh` client, run with
exactly the `command` the API returned, has logged in and run `true`; then the instance is
terminated and the node wiped before the next round. Reported: p50, p99 and max over the rounds,
and the split between reaching `running` and the login itself.

Anchors: Lambda and CoreWeave quote minutes for an on-demand bare-metal node to boot; dstack's SSH
fleets and SkyPilot's SSH node pools (the same "server already has an OS" model as this driver)
run their setup over SSH in seconds to tens of seconds. Target: p99 under 10 s on a test host.

Needs root (namespaces) and openssh-server: `make bench-nodes`, or
  .venv/bin/python bench/nodes/bench_ssh_login.py [--rounds 20] [--hosts 2]
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
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
TESTHOST = [sys.executable, str(REPO / "scripts" / "testhost")]
NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
SSH_OPTIONS += " -o ConnectTimeout=5 -o LogLevel=ERROR"
USER_DATA = "#!/bin/sh\necho ready > /var/tmp/ready\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keypair(path: Path) -> tuple[Path, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path, Path(f"{path}.pub").read_text().strip()


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
        return r.json()

    def wait(self, path: str, field: str, want: set[str], timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.call("GET", path)
            if got[field] in want:
                return got
            time.sleep(0.05)
        raise SystemExit(f"{path} never reached {want}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    op_key, op_pub = keypair(work / "operator")
    tenant_key, tenant_pub = keypair(work / "tenant")
    (work / "operator.authorized").write_text(op_pub + "\n")
    names = [f"bn-{os.getpid()}-{i}" for i in range(args.hosts)]
    port = free_port()
    env = {
        **os.environ,
        "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": "0.2",
        # the bench polls every 50 ms, over the default 600 requests a minute per key
        "NEOCLOUD_API_REQUESTS_PER_MINUTE": "100000",
    }
    env.pop("NEOCLOUD_DATABASE_URL", None)
    server = None
    try:
        hosts = []
        for name in names:
            up = subprocess.run(
                [
                    *TESTHOST,
                    "up",
                    name,
                    "--gpus",
                    "8",
                    "--authorized-key",
                    str(work / "operator.authorized"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            hosts.append(json.loads(up.stdout))
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
        for _ in range(600):
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        api = Api(url, (work / "data" / "admin-key").read_text().strip())
        nodes = []
        for i, h in enumerate(hosts):
            body = {
                "hostname": f"bench-gpu-{i}",
                "gpu_model": "H100",
                "gpu_count": 8,
                "vcpus": 224,
                "ram_gib": 2048,
                "nvme_gib": 30000,
                "topology": {
                    "region": "lab",
                    "zone": "lab-a",
                    "fabric": "ib1",
                    "block": "b1",
                    "rack": "r1",
                },
                "driver": "ssh",
                "driver_config": {"address": h["address"], "private_key": op_key.read_text()},
            }
            nodes.append(api.call("POST", "/nodes", json=body)["id"])
        for node_id in nodes:
            api.wait(f"/nodes/{node_id}", "state", {"available"})
        to_running: list[float] = []
        to_login: list[float] = []
        for _ in range(args.rounds):
            t0 = time.monotonic()
            inst = api.call(
                "POST",
                "/instances",
                json={"instance_type": "8xH100", "ssh_keys": [tenant_pub], "user_data": USER_DATA},
            )
            inst = api.wait(f"/instances/{inst['id']}", "state", {"running", "failed"})
            if inst["state"] != "running":
                raise SystemExit(f"instance failed: {inst['state_message']}")
            t1 = time.monotonic()
            argv = shlex.split(inst["ssh"]["command"])
            argv[1:1] = ["-i", str(tenant_key), *shlex.split(SSH_OPTIONS)]
            while subprocess.run([*argv, "true"], capture_output=True, check=False).returncode:
                if time.monotonic() - t0 > 120:
                    raise SystemExit("no login within 120 s")
                time.sleep(0.05)
            t2 = time.monotonic()
            to_running.append(t1 - t0)
            to_login.append(t2 - t0)
            api.call("POST", f"/instances/{inst['id']}/terminate")
            api.wait(f"/instances/{inst['id']}", "state", {"terminated", "failed"})
            api.wait(f"/nodes/{inst['node_id']}", "state", {"available"})
        print(f"create -> SSH login on a test host, {args.rounds} rounds, {args.hosts} hosts")
        print(
            f"  to running:   p50 {pct(to_running, 0.5):.2f} s   p99 {pct(to_running, 0.99):.2f} s"
        )
        print(
            f"  to login:     p50 {pct(to_login, 0.5):.2f} s   p99 {pct(to_login, 0.99):.2f} s"
            f"   max {max(to_login):.2f} s   mean {statistics.mean(to_login):.2f} s"
        )
        print("  target: p99 < 10 s; anchor: minutes for a cloud bare-metal boot")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        for name in names:
            subprocess.run([*TESTHOST, "down", name], capture_output=True, check=False)


if __name__ == "__main__":
    main()
