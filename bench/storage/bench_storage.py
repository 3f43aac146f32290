"""Shared filesystem benchmark: mount time on a 2-node cluster and FUSE throughput, on test hosts.

`neocloud up` (SQLite, no demo fleet) drives real test hosts (`scripts/testhost`) through the
`ssh` driver: two `storage` hosts make a replica-2 GlusterFS pool, two GPU hosts run a 2-node
cluster. Each round attaches a filesystem to the cluster and stops the clock when the API says
`attached` (both members FUSE-mounted, through their drivers), then detaches it. Then, on one
member, `dd` writes a file through the mount (`conv=fsync`, so the two replicas hold it) and,
after a fresh mount (no page cache), reads it back; the same `dd` on the member's own disk is
the anchor.

Anchors: Nebius's and CoreWeave's shared filesystems attach at VM or node creation (minutes
with the node); a running cluster gets one here in seconds. Throughput on test hosts is a
single machine's loopback and CPU (2 cores shared by everything), not a network: compare it
with the local `dd` figure, not with a cloud's quoted GB/s.

Needs root (namespaces), openssh-server and GlusterFS: `make bench-storage`, or
  .venv/bin/python bench/storage/bench_storage.py [--rounds 5] [--mib 256]
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
TOPOLOGY = {"region": "lab", "zone": "lab-a", "fabric": "ib1", "block": "b1", "rack": "r1"}


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

    def until(self, path: str, ok: Any, timeout: float = 180) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.call("GET", path)
            if ok(got):
                return got
            time.sleep(0.05)
        raise SystemExit(f"{path}: timed out; last {got}")


def ssh(command: str, key: Path, remote: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    argv[1:1] = ["-i", str(key), *shlex.split(SSH_OPTIONS)]
    return subprocess.run([*argv, remote], capture_output=True, text=True, check=False, timeout=600)


def dd_rate(stderr: str) -> float:
    """MB/s from dd's last line (``… copied, 3.3 s, 31.1 MB/s``), in MB/s."""
    m = re.search(r"copied, ([\d.]+) s, ([\d.]+) ([kMG]?B)/s", stderr)
    if m is None:
        raise SystemExit(f"dd said: {stderr}")
    scale = {"kB": 1e-3, "B": 1e-6, "MB": 1.0, "GB": 1e3}[m.group(3)]
    return float(m.group(2)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=256, help="size of the dd file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    op_key, op_pub = keypair(work / "operator")
    tenant_key, tenant_pub = keypair(work / "tenant")
    (work / "operator.authorized").write_text(op_pub + "\n")
    names = [f"bs-{os.getpid()}-{i}" for i in range(4)]  # 2 storage, 2 GPU
    port = free_port()
    env = {
        **os.environ,
        "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": "0.2",
        "NEOCLOUD_API_REQUESTS_PER_MINUTE": "100000",
    }
    env.pop("NEOCLOUD_DATABASE_URL", None)
    server = None
    try:
        hosts = []
        for i, name in enumerate(names):
            gpus = ["--gpus", "8"] if i >= 2 else []
            up = subprocess.run(
                [
                    *TESTHOST,
                    "up",
                    name,
                    *gpus,
                    "--authorized-key",
                    str(work / "operator.authorized"),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            hosts.append(json.loads(up.stdout))
        # glusterd looks peers up in reverse: test hosts reach no name server (docs/storage.md)
        lines = "".join(f"{h['address']} {h['name']}\n" for h in hosts)
        for h in hosts:
            subprocess.run(
                [*TESTHOST, "exec", h["name"], "--", "sh", "-c", "cat >> /etc/hosts"],
                input=lines,
                text=True,
                check=True,
            )
        log = (work / "server.log").open("w")
        server = subprocess.Popen(
            [*NEOCLOUD, "up", "--port", str(port), "--data-dir", str(work / "data"),
             "--no-demo-fleet"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        admin = Api(url, (work / "data" / "admin-key").read_text().strip())
        nodes = []
        for i, h in enumerate(hosts):
            body: dict[str, Any] = {
                "hostname": f"bench-{i}",
                "vcpus": 16,
                "ram_gib": 64,
                "topology": TOPOLOGY,
                "driver": "ssh",
                "driver_config": {"address": h["address"], "private_key": op_key.read_text()},
            }
            if i >= 2:
                body |= {"gpu_model": "H100", "gpu_count": 8}
            else:
                body |= {"role": "storage"}
            nodes.append(admin.call("POST", "/nodes", json=body)["id"])
        for node_id in nodes:
            admin.until(f"/nodes/{node_id}", lambda n: n["state"] == "available")
        t = time.monotonic()
        pool = admin.call(
            "POST", "/storage-pools", json={"name": "bench", "node_ids": nodes[:2], "replica": 2}
        )
        pool = admin.until(f"/storage-pools/{pool['id']}", lambda p: p["state"] != "creating")
        pool_s = time.monotonic() - t
        if pool["state"] != "ready":
            raise SystemExit(f"pool: {pool}")
        admin.call(
            "POST", "/orgs", json={"name": "Bench", "slug": "bench", "owner_email": "o@b.example"}
        )
        org = next(o for o in admin.call("GET", "/orgs")["data"] if o["slug"] == "bench")
        admin.call("PUT", f"/orgs/{org['id']}/quotas/H100-SXM-80GB", json={"limit_gpus": 64})
        user = admin.call("GET", f"/orgs/{org['id']}/users")["data"][0]["id"]
        key = admin.call("POST", "/keys", json={"name": "t", "org_id": org["id"], "user_id": user})
        api = Api(url, key["secret"])
        t = time.monotonic()
        fs = api.call("POST", "/filesystems", json={"name": "b", "size_gib": 4, "pool": "bench"})
        fs = api.until(f"/filesystems/{fs['id']}", lambda f: f["state"] != "creating")
        create_s = time.monotonic() - t
        cluster = api.call(
            "POST",
            "/clusters",
            json={"gpu_model": "H100", "node_count": 2, "ssh_keys": [tenant_pub]},
        )
        cluster = api.until(f"/clusters/{cluster['id']}", lambda c: c["state"] == "running")
        mount: list[float] = []
        for _ in range(args.rounds):
            t = time.monotonic()
            got = api.call(
                "POST",
                f"/filesystems/{fs['id']}/attach",
                json={"cluster_id": cluster["id"], "mount_path": "/mnt/bench"},
            )
            got = api.until(
                f"/filesystems/{fs['id']}",
                lambda f: f["attachments"] and f["attachments"][0]["state"] != "attaching",
            )
            mount.append(time.monotonic() - t)
            att = got["attachments"][0]
            if att["state"] != "attached":
                raise SystemExit(f"attach: {att}")
            api.call("POST", f"/filesystems/{fs['id']}/attachments/{att['id']}/detach")
            api.until(f"/filesystems/{fs['id']}", lambda f: not f["attachments"])
        # Throughput on the first member, through the mount and on its own disk.
        got = api.call(
            "POST",
            f"/filesystems/{fs['id']}/attach",
            json={"cluster_id": cluster["id"], "mount_path": "/mnt/bench"},
        )
        got = api.until(
            f"/filesystems/{fs['id']}",
            lambda f: f["attachments"] and f["attachments"][0]["state"] == "attached",
        )
        member = cluster["nodes"][0]["ssh"]["command"]
        write = f"dd if=/dev/zero of=/mnt/bench/dd bs=1M count={args.mib} conv=fsync 2>&1 | tail -1"
        w = dd_rate(ssh(member, tenant_key, write).stdout)
        local_w = dd_rate(
            ssh(member, tenant_key, write.replace("/mnt/bench/dd", "/var/tmp/dd")).stdout
        )
        att = got["attachments"][0]
        api.call("POST", f"/filesystems/{fs['id']}/attachments/{att['id']}/detach")
        api.until(f"/filesystems/{fs['id']}", lambda f: not f["attachments"])
        api.call(
            "POST",
            f"/filesystems/{fs['id']}/attach",
            json={"cluster_id": cluster["id"], "mount_path": "/mnt/bench"},
        )
        api.until(
            f"/filesystems/{fs['id']}",
            lambda f: f["attachments"] and f["attachments"][0]["state"] == "attached",
        )
        r = dd_rate(
            ssh(member, tenant_key, "dd if=/mnt/bench/dd of=/dev/null bs=1M 2>&1 | tail -1").stdout
        )
        local_r = dd_rate(
            ssh(member, tenant_key, "dd if=/var/tmp/dd of=/dev/null bs=1M 2>&1 | tail -1").stdout
        )
        print("shared filesystem on GlusterFS test hosts (replica 2, FUSE)")
        print(f"  pool ready (glusterd on 2 nodes, peer probe): {pool_s:.1f} s")
        print(f"  filesystem available (volume, quota, start):  {create_s:.1f} s")
        print(
            f"  attach -> mounted on a 2-node cluster, {args.rounds} rounds: "
            f"p50 {pct(mount, 0.5):.2f} s  max {max(mount):.2f} s"
            f"  mean {statistics.mean(mount):.2f} s"
        )
        print(
            f"  dd {args.mib} MiB write (fsync): FUSE {w:.1f} MB/s"
            f"   member's own disk {local_w:.1f} MB/s"
        )
        print(
            f"  dd {args.mib} MiB read (fresh mount): FUSE {r:.1f} MB/s"
            f"   own disk {local_r:.1f} MB/s"
        )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        for name in names:
            subprocess.run([*TESTHOST, "down", name], capture_output=True, check=False)


if __name__ == "__main__":
    main()
