"""Shared filesystems on real GlusterFS, end to end: `neocloud up` drives throwaway test hosts
(docs/testhosts.md) through the `ssh` driver. Two hosts registered as `storage` nodes make a
replica-2 pool (glusterd runs inside them, joined by their test addresses); a tenant's
filesystem is one Gluster volume, FUSE-mounted on both members of a 2-node cluster: a file
written on one member over SSH is read on the other. Detaching and attaching to a new instance
keeps the data; deleting while attached is refused; a storage node down while mounting gives a
degraded attachment naming it; deleting removes the volume and its bricks.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Host
from .platform import Platform, running_platform, wait_for
from .test_real_nodes_e2e import login, node_state, register

pytestmark = pytest.mark.skipif(
    shutil.which("glusterd") is None or shutil.which("mount.glusterfs") is None,
    reason="GlusterFS is not installed (scripts/install-test-deps installs it)",
)
TOPOLOGY = ["region=lab", "zone=lab-a", "fabric=lab-ib1", "block=b1", "rack=r1"]


@pytest.fixture
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("storage")) as running:
        yield running


def resolvable(hosts: list[Host]) -> None:
    """Each host resolves every other's address from /etc/hosts. glusterd looks peers and
    clients up in reverse; where no DNS answers (test hosts reach no name server) each lookup
    waits for the resolver's timeout. docs/storage.md says the same of real nodes."""
    lines = "".join(f"{h.address} {h.name}\n" for h in hosts)
    for h in hosts:
        done = h.exec("cat >> /etc/hosts", input=lines)
        assert done.returncode == 0, done.stderr


def register_storage(platform: Platform, host: Host, name: str, key_path: Path) -> str:
    done = platform.cli(
        None,
        "nodes", "add", name, "--role", "storage",
        "--vcpus", "16", "--ram-gib", "64", "--nvme-gib", "4000",
        *[a for t in TOPOLOGY for a in ("--topology", t)],
        "--driver", "ssh", "--address", host.address, "--private-key-file", str(key_path),
        "--json",
    )  # fmt: skip
    node = json.loads(done.stdout)
    assert (node["role"], node["gpu_count"], node["gpu_model"]) == ("storage", 0, "none")
    return str(node["id"])


def settled(platform: Platform, key: str, fs_id: str, want: str) -> Callable[[], Any]:
    """A probe: the filesystem once its (only) attachment is in state ``want``."""

    def probe() -> Any:
        fs = platform.ok("GET", f"/filesystems/{fs_id}", key)
        atts = fs["attachments"]
        return fs if atts and atts[0]["state"] == want else None

    return probe


def test_a_shared_filesystem_on_glusterfs_across_a_cluster(
    platform: Platform,
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    _, op_public, op_key = operator_keypair
    st_hosts = [testhost("gst", authorized_key=op_public) for _ in range(2)]
    gpu_hosts = [testhost("gfs", gpus=8, authorized_key=op_public) for _ in range(3)]
    resolvable(st_hosts + gpu_hosts)
    st_nodes = [register_storage(platform, h, f"st-{i}", op_key) for i, h in enumerate(st_hosts)]
    gpu_nodes = [register(platform, h, f"gpu-{i}", op_key) for i, h in enumerate(gpu_hosts)]
    for node_id in st_nodes + gpu_nodes:
        wait_for(f"{node_id} burn-in", lambda n=node_id: node_state(platform, n) == "available")
    checks = platform.ok("GET", f"/nodes/{st_nodes[0]}")["health_checks"]
    assert "skipped" in checks["burn_in.gpu"]["message"]

    pool = platform.ok(
        "POST", "/storage-pools", json={"name": "lab", "node_ids": st_nodes, "replica": 2}
    )
    pool = wait_for(
        "pool ready",
        lambda: (
            (p := platform.ok("GET", f"/storage-pools/{pool['id']}"))["state"] != "creating" and p
        ),
    )
    assert pool["state"] == "ready", pool

    # A tenant with a key and quota.
    slug = f"st-{time.monotonic_ns() % 10**9}"
    platform.cli(None, "orgs", "create", slug, "--owner-email", f"{slug}@lab.example")
    platform.cli(None, "quotas", "set", "H100-SXM-80GB", "64", "--org", slug)
    key = json.loads(platform.cli(None, "keys", "create", "t", "--org", slug, "--json").stdout)[
        "secret"
    ]
    private = tmp_path / "id_ed25519"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    public = Path(f"{private}.pub").read_text().strip()

    fs = platform.ok(
        "POST", "/filesystems", key, json={"name": "data", "size_gib": 2, "pool": "lab"}
    )
    cluster = platform.ok(
        "POST",
        "/clusters",
        key,
        json={"gpu_model": "H100", "node_count": 2, "ssh_keys": [public]},
    )
    fs = wait_for(
        "filesystem available",
        lambda: (
            (f := platform.ok("GET", f"/filesystems/{fs['id']}", key))["state"] != "creating" and f
        ),
    )
    assert fs["state"] == "available", fs
    assert fs["applied_gib"] == 2
    volume = f"nc-{fs['id'].lower().replace('_', '-')}"
    info = st_hosts[0].exec(f"gluster volume info {volume}").stdout
    assert "Type: Replicate" in info
    assert "Number of Bricks: 1 x 2 = 2" in info
    quota = st_hosts[1].exec(f"gluster volume quota {volume} list /").stdout
    assert "2.0GB" in quota

    got = wait_for(
        "cluster running",
        lambda: (
            (c := platform.ok("GET", f"/clusters/{cluster['id']}", key))["state"] == "running" and c
        ),
    )
    members = got["nodes"]
    mount_started = time.monotonic()
    platform.ok(
        "POST",
        f"/filesystems/{fs['id']}/attach",
        key,
        json={"cluster_id": cluster["id"], "mount_path": "/mnt/shared"},
    )
    fs = wait_for("attached", settled(platform, key, fs["id"], "attached"), timeout=90)
    mount_s = time.monotonic() - mount_started
    att = fs["attachments"][0]
    assert {m["instance_id"] for m in att["mounts"]} == {m["instance_id"] for m in members}
    assert all(m["state"] == "mounted" and not m["simulated"] for m in att["mounts"])

    # Written on one member over SSH, read on the other.
    a, b = members
    done = login(
        a["ssh"]["command"], private, "echo shared-hello > /mnt/shared/hello && df -h /mnt/shared"
    )
    assert done.returncode == 0, done.stderr
    done = login(b["ssh"]["command"], private, "cat /mnt/shared/hello")
    assert done.stdout.strip() == "shared-hello", done.stderr
    # The quota is the size a member sees.
    done = login(b["ssh"]["command"], private, "df -B1 --output=size /mnt/shared | tail -1")
    assert int(done.stdout.strip()) == 2 << 30

    # Deleting while attached is refused, naming the attachment; nothing changes.
    r = platform.api("DELETE", f"/filesystems/{fs['id']}", key)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "filesystem_attached"
    assert att["id"] in r.json()["error"]["message"]

    # Detach: unmounted on both members.
    platform.ok("POST", f"/filesystems/{fs['id']}/attachments/{att['id']}/detach", key)
    wait_for(
        "detached",
        lambda: platform.ok("GET", f"/filesystems/{fs['id']}", key)["attachments"] == [],
    )
    for m in members:
        done = login(m["ssh"]["command"], private, "grep -c ' /mnt/shared ' /proc/mounts || true")
        assert done.stdout.strip() == "0"

    # Attached to a new instance (the third host), the data is there.
    inst = platform.ok(
        "POST", "/instances", key, json={"instance_type": "8xH100", "ssh_keys": [public]}
    )
    inst = wait_for(
        "instance running",
        lambda: (
            (i := platform.ok("GET", f"/instances/{inst['id']}", key))["state"] == "running" and i
        ),
    )
    platform.ok(
        "POST",
        f"/filesystems/{fs['id']}/attach",
        key,
        json={"instance_id": inst["id"], "mount_path": "/data/ckpt", "read_only": True},
    )
    wait_for("attached to the instance", settled(platform, key, fs["id"], "attached"), timeout=90)
    done = login(inst["ssh"]["command"], private, "cat /data/ckpt/hello; touch /data/ckpt/x")
    assert done.stdout.strip() == "shared-hello"
    assert "Read-only file system" in done.stderr

    # Fault: a storage node goes down; a new mount is served by the other and says so.
    fs = platform.ok("GET", f"/filesystems/{fs['id']}", key)
    att = fs["attachments"][0]
    platform.ok("POST", f"/filesystems/{fs['id']}/attachments/{att['id']}/detach", key)
    wait_for(
        "detached", lambda: platform.ok("GET", f"/filesystems/{fs['id']}", key)["attachments"] == []
    )
    st_hosts[1].exec("pkill -x glusterfsd; pkill -x glusterd; pkill -x glusterfs; true")
    platform.ok(
        "POST",
        f"/filesystems/{fs['id']}/attach",
        key,
        json={"instance_id": inst["id"], "mount_path": "/data/ckpt"},
    )
    fs = wait_for("degraded", settled(platform, key, fs["id"], "degraded"), timeout=90)
    reason = fs["attachments"][0]["reason"]
    assert f"storage node st-1 ({st_nodes[1]}) down" in reason, reason
    assert "glusterd does not answer" in reason, reason
    done = login(inst["ssh"]["command"], private, "cat /data/ckpt/hello")
    assert done.stdout.strip() == "shared-hello"

    # The instance ends while attached: its node's deprovision unmounts the filesystem (the
    # path storage recorded under /var/lib/neocloud/mounts), and the attachment ends with it.
    platform.ok("POST", f"/instances/{inst['id']}/terminate", key)
    wait_for(
        "attachment ended",
        lambda: platform.ok("GET", f"/filesystems/{fs['id']}", key)["attachments"] == [],
        timeout=90,
    )
    wait_for(
        "instance terminated",
        lambda: platform.ok("GET", f"/instances/{inst['id']}", key)["state"] == "terminated",
    )
    host = next(h for h in gpu_hosts if h.address == inst["ssh"]["host"])
    assert "/data/ckpt" not in host.exec("cat /proc/mounts").stdout
    assert host.exec("ls /var/lib/neocloud/mounts").stdout.strip() == ""

    # Deleting then removes the volume and its bricks.
    st_hosts[1].exec("glusterd")  # back up, so that the delete reaches both bricks
    wait_for(  # gluster refuses a volume delete while a peer is disconnected
        "the storage peers connected again",
        lambda: "Disconnected" not in st_hosts[0].exec("gluster peer status").stdout,
        timeout=60,
    )
    platform.ok("DELETE", f"/filesystems/{fs['id']}", key)
    seen: list[dict[str, Any]] = []

    def deleted() -> bool:
        seen.append(platform.ok("GET", f"/filesystems/{fs['id']}", key))
        return seen[-1]["state"] == "deleted"

    try:
        wait_for("deleted", deleted, timeout=120)  # a failed try is retried after 30 s
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the filesystem says: {seen[-1]}") from None
    assert st_hosts[0].exec(f"gluster volume info {volume}").returncode != 0
    for h in st_hosts:
        assert h.exec(f"test -e /srv/neocloud/bricks/{volume}").returncode != 0
    took = time.monotonic() - started
    print(f"storage e2e: mount on a 2-node cluster {mount_s:.1f} s; whole test {took:.1f} s")
