"""End to end on real servers: `neocloud up` on this machine drives throwaway test hosts (real
sshd in their own namespaces, see docs/testhosts.md) through the `ssh` driver, and a tenant
logs in with the real `ssh` client using exactly the command the API returns.

The operator registers hosts with the CLI, they pass burn-in; a tenant adds a key, creates an
8-GPU instance with a `#!` user data script, logs in, finds the script's output and sudo
working; reboots it; terminates it, after which the key is refused and the user, its home and
its processes are gone. A 2-node cluster's members reach each other, and every `hosts` format
parses with the tool that reads it. Faults: a host that is down, one that refuses the operator
key, user data that exits non-zero, each with a precise state and reason and nothing billed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import TESTHOST_REBOOT, Host
from .platform import Platform, running_platform, wait_for

SSH_OPTIONS = [
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=5",
    "-o",
    "LogLevel=ERROR",
]
TOPOLOGY = ["region=lab", "zone=lab-a", "fabric=lab-ib1", "block=b1", "rack=r1"]
USER_DATA = "#!/bin/sh\necho user-data-ran > /var/tmp/user-data-ran\necho hello from user data\n"


@pytest.fixture
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own per test (no demo fleet): one test's hosts never take another's
    instances."""
    with running_platform(tmp_path_factory.mktemp("realnodes")) as running:
        yield running


@pytest.fixture
def tenant(platform: Platform, tmp_path: Path) -> dict[str, Any]:
    """A new tenant org with an owner key, a quota and an ed25519 key pair of its own."""
    slug = f"lab-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    platform.cli(None, "orgs", "create", slug, "--owner-email", f"{slug}@lab.example")
    platform.cli(None, "quotas", "set", "H100-SXM-80GB", "64", "--org", slug)
    key = json.loads(platform.cli(None, "keys", "create", "t", "--org", slug, "--json").stdout)
    private = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    return {
        "slug": slug,
        "key": key["secret"],
        "private": private,
        "public": Path(f"{private}.pub"),
    }


def register(platform: Platform, host: Host, name: str, key_path: Path, *extra: str) -> str:
    done = platform.cli(
        None,
        "nodes", "add", name,
        "--gpu-model", "H100", "--gpus", "8", "--vcpus", "224", "--ram-gib", "2048",
        "--nvme-gib", "30000",
        *[a for t in TOPOLOGY for a in ("--topology", t)],
        "--driver", "ssh", "--address", host.address, "--private-key-file", str(key_path),
        "--reboot-command", TESTHOST_REBOOT,
        *extra,
        "--json",
    )  # fmt: skip
    return str(json.loads(done.stdout)["id"])


def node_state(platform: Platform, node_id: str) -> str:
    return str(platform.ok("GET", f"/nodes/{node_id}")["state"])


def instance(platform: Platform, key: str, instance_id: str) -> dict[str, Any]:
    got: dict[str, Any] = platform.ok("GET", f"/instances/{instance_id}", key)
    return got


def login(ssh_command: str, private: Path, remote: str) -> subprocess.CompletedProcess[str]:
    """Run ``remote`` through exactly the ``command`` the API returned, plus the tenant's key."""
    argv = shlex.split(ssh_command)
    assert argv[0] == "ssh"
    return subprocess.run(
        [argv[0], "-i", str(private), *SSH_OPTIONS, *argv[1:], remote],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_a_tenant_logs_into_a_registered_server_and_leaves_nothing_behind(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
) -> None:
    _op_private, op_public, op_key_path = operator_keypair
    hosts = [testhost("e2e", gpus=8, authorized_key=op_public) for _ in range(2)]
    nodes = [register(platform, h, f"gpu-{i}", op_key_path) for i, h in enumerate(hosts)]
    for node_id in nodes:
        wait_for(f"{node_id} burn-in", lambda n=node_id: node_state(platform, n) == "available")
    t = tenant
    added = json.loads(
        platform.cli(
            t["key"], "ssh-keys", "add", "laptop", "--file", str(t["public"]), "--json"
        ).stdout
    )
    assert added["id"].startswith("sshkey_")
    assert added["fingerprint"].startswith("SHA256:")
    created = platform.ok(
        "POST",
        "/instances",
        t["key"],
        json={"instance_type": "8xH100", "ssh_key_ids": [added["id"]], "user_data": USER_DATA},
    )
    started = time.monotonic()
    inst = wait_for(
        "running",
        lambda: (
            (i := instance(platform, t["key"], created["id"]))["state"] in ("running", "failed")
            and i
        ),
    )
    assert inst["state"] == "running", (inst["state_reason"], inst["state_message"])
    ssh = inst["ssh"]
    assert ssh["user"] == "ubuntu"
    assert ssh["port"] == 22
    assert ssh["host"] in {h.address for h in hosts}
    assert inst["addresses"] == [ssh["host"]]
    assert inst["simulated"] is False
    host = next(h for h in hosts if h.address == ssh["host"])
    done = login(
        ssh["command"], t["private"], "cat /var/tmp/user-data-ran; sudo -n id -u; hostname"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["user-data-ran", "0", inst["id"].replace("_", "-").lower()]
    assert time.monotonic() - started < 30
    events = platform.ok("GET", f"/instances/{inst['id']}/events", t["key"])["data"]
    assert any("exited 0" in (e.get("message") or "") for e in events), events

    # reboot: through the driver; the instance stays the tenant's, and the login works after
    platform.cli(t["key"], "instances", "reboot", inst["id"])
    wait_for(
        "rebooted",
        lambda: any(
            e["kind"] == "rebooted"
            for e in platform.ok("GET", f"/instances/{inst['id']}/events", t["key"])["data"]
        ),
        timeout=90,
    )
    assert instance(platform, t["key"], inst["id"])["state"] == "running"
    assert login(ssh["command"], t["private"], "true").returncode == 0

    # a process the tenant leaves running, then terminate
    assert login(ssh["command"], t["private"], "nohup sleep 1000 >/dev/null 2>&1 &").returncode == 0
    assert host.exec("pgrep -u ubuntu sleep").returncode == 0
    platform.cli(t["key"], "instances", "terminate", inst["id"], "--wait")
    refused = login(ssh["command"], t["private"], "true")
    assert refused.returncode == 255, refused.stdout
    assert host.exec("id ubuntu").returncode != 0
    assert not (host.root / "home" / "ubuntu").exists()
    assert host.exec("pgrep -x sleep").returncode == 1  # the tenant's sleep is gone
    node_id = inst["node_id"]
    wait_for("wiped", lambda: node_state(platform, node_id) == "available")


def test_a_clusters_members_reach_each_other_and_its_hosts_parse(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    tmp_path: Path,
) -> None:
    _, op_public, op_key_path = operator_keypair
    hosts = [testhost("e2c", gpus=8, authorized_key=op_public) for _ in range(2)]
    nodes = [register(platform, h, f"gpu-{i}", op_key_path) for i, h in enumerate(hosts)]
    for node_id in nodes:
        wait_for(f"{node_id} burn-in", lambda n=node_id: node_state(platform, n) == "available")
    t = tenant
    public = t["public"].read_text().strip()
    cluster = platform.ok(
        "POST",
        "/clusters",
        t["key"],
        json={"gpu_model": "H100", "node_count": 2, "ssh_keys": [public]},
    )
    got = wait_for(
        "cluster running",
        lambda: (
            (c := platform.ok("GET", f"/clusters/{cluster['id']}", t["key"]))["state"] == "running"
            and c
        ),
    )
    members = got["nodes"]
    addresses = [m["ssh"]["host"] for m in members]
    assert sorted(addresses) == sorted(h.address for h in hosts)
    # each member reaches the other over the address given (TCP to its sshd)
    for m, other in ((members[0], addresses[1]), (members[1], addresses[0])):
        probe = f"timeout 5 bash -c 'echo > /dev/tcp/{other}/22' && echo reached"
        done = login(m["ssh"]["command"], t["private"], probe)
        assert done.stdout.strip() == "reached", done.stderr

    def hosts_as(fmt: str) -> str:
        r = platform.api(
            "GET", f"/clusters/{cluster['id']}/hosts", t["key"], params={"format": fmt}
        )
        assert r.status_code == 200, r.text
        return r.text

    config = tmp_path / "ssh_config"
    config.write_text(hosts_as("ssh-config"))
    seen = set()
    for line in config.read_text().splitlines():
        if line.startswith("Host "):
            alias = line.split()[1]
            resolved = subprocess.run(
                ["ssh", "-G", "-F", str(config), alias], capture_output=True, text=True, check=True
            ).stdout
            fields = dict(ln.split(" ", 1) for ln in resolved.splitlines() if " " in ln)
            assert fields["user"] == "ubuntu"
            assert fields["port"] == "22"
            seen.add(fields["hostname"])
    assert seen == set(addresses)
    hostfile = hosts_as("hostfile").splitlines()
    assert sorted(ln.split()[0] for ln in hostfile if ln and not ln.startswith("#")) == sorted(
        addresses
    )
    assert all(ln.endswith("slots=8") for ln in hostfile if ln and not ln.startswith("#"))
    inventory = yaml.safe_load(hosts_as("ansible"))
    ans_hosts = inventory["all"]["hosts"]
    assert sorted(h["ansible_host"] for h in ans_hosts.values()) == sorted(addresses)
    dstack = yaml.safe_load(hosts_as("dstack"))
    assert dstack["type"] == "fleet"
    dstack_hosts = dstack["ssh_config"]["hosts"]  # entries: an address, or {hostname, port}
    assert sorted(h["hostname"] if isinstance(h, dict) else h for h in dstack_hosts) == sorted(
        addresses
    )
    sky = yaml.safe_load(hosts_as("skypilot"))
    (pool,) = sky.values()
    assert sorted(pool["hosts"]) == sorted(addresses)
    assert pool["user"] == "ubuntu"
    platform.ok("POST", f"/clusters/{cluster['id']}/terminate", t["key"])
    for node_id in nodes:  # deprovisioned and wiped while the hosts are still up
        wait_for(f"{node_id} wiped", lambda n=node_id: node_state(platform, n) == "available")


def test_faults_give_a_precise_state_and_reason_and_bill_nothing(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    tmp_path: Path,
) -> None:
    op_private, op_public, op_key_path = operator_keypair
    t = tenant
    public = t["public"].read_text().strip()
    # a host that refuses the operator's key: burn-in fails, the node goes to repair
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    refusing = testhost("e2f", gpus=8, authorized_key=op_public)
    bad = register(platform, refusing, "gpu-refuses", stranger)
    wait_for("repair", lambda: node_state(platform, bad) == "repair")
    node = platform.ok("GET", f"/nodes/{bad}")
    assert "authentication" in (node["state_reason"] or ""), node
    # a good host, then user data that exits non-zero: failed, reason and output kept
    good_host = testhost("e2f", gpus=8, authorized_key=op_public)
    good = register(platform, good_host, "gpu-good", op_key_path)
    wait_for("available", lambda: node_state(platform, good) == "available")
    failing = "#!/bin/sh\necho about to fail\nexit 3\n"
    created = platform.ok(
        "POST",
        "/instances",
        t["key"],
        json={"instance_type": "8xH100", "ssh_keys": [public], "user_data": failing},
    )
    inst = wait_for(
        "failed",
        lambda: (i := instance(platform, t["key"], created["id"]))["state"] == "failed" and i,
    )
    assert inst["state_reason"] == "provision_failed"
    assert "exited 3" in inst["state_message"]
    assert "about to fail" in inst["state_message"]
    assert good_host.exec("id ubuntu").returncode != 0  # provision cleaned up after itself
    wait_for("available again", lambda: node_state(platform, good) == "available")
    # the host goes down: provisioning fails with the reason, the node to repair
    subprocess.run([sys.executable, "scripts/testhost", "down", good_host.name], check=True)
    created = platform.ok(
        "POST", "/instances", t["key"], json={"instance_type": "8xH100", "ssh_keys": [public]}
    )
    inst = wait_for(
        "failed",
        lambda: (i := instance(platform, t["key"], created["id"]))["state"] == "failed" and i,
    )
    assert inst["state_reason"] == "provision_failed"
    assert "unreachable" in inst["state_message"]
    wait_for("repair", lambda: node_state(platform, good) == "repair")
    # nothing billed for either failed instance: their allocations are empty intervals
    org_id = platform.ok("GET", "/me", t["key"])["org_id"]
    period = time.strftime("%Y-%m", time.gmtime())
    preview = platform.ok(
        "GET", "/invoices/preview", t["key"], params={"period": period, "org_id": org_id}
    )
    assert all(Decimal(line["gpu_seconds"]) == 0 for line in preview["lines"]), preview["lines"]
    assert Decimal(preview["total"]["amount"]) == 0
    # no secret anywhere: the server's log, the audit log, the database file
    secret_line = op_private.strip().splitlines()[1]
    audit = platform.api("GET", "/audit-events", params={"limit": 1000}).text
    assert secret_line not in platform.log.read_text()
    assert secret_line not in audit
    assert secret_line.encode() not in (platform.data_dir / "neocloud.db").read_bytes()
