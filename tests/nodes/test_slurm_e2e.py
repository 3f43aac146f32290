"""End to end: managed Slurm on a rented cluster of real test hosts (docs/slurm.md).

`neocloud up` drives two test hosts through the `ssh` driver (the pattern of
test_real_nodes_e2e.py). A tenant asks for a 2-node cluster with `"scheduler": {"type":
"slurm"}`; once it runs, the platform configures munge, slurmctld and slurmd on the members;
the tenant logs into the controller with the returned command, `srun -N2 hostname` answers
from both members, an `sbatch` job writes its output, `scontrol show topology` is the cluster's
topology export; terminating removes every daemon, key and file. The munge key appears in no
answer, log, audit event or database. Also the refusals: an unknown scheduler type, a scheduler
on an instance.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from . import test_real_nodes_e2e as e2e
from .conftest import Host

platform = e2e.platform  # the fixtures: a platform of its own per test, a tenant
tenant = e2e.tenant
Platform = e2e.Platform
wait_for = e2e.wait_for
SLURM_BINARIES = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/srun")
LEFTOVERS = (
    "/etc/munge/munge.key",
    "/etc/slurm/slurm.conf",
    "/etc/slurm/gres.conf",
    "/etc/slurm/topology.conf",
    "/var/spool/slurmd",
    "/var/spool/slurmctld",
    "/run/munge",
)


@pytest.fixture
def slurm_installed() -> None:
    """Slurm comes from the machine (test hosts are overlays of its `/`)."""
    missing = [b for b in SLURM_BINARIES if not Path(b).exists()]
    if missing:
        reason = f"Slurm is not installed here ({', '.join(missing)}): scripts/install-test-deps"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)


def gpu_device_stand_ins(host: Host, count: int) -> None:
    """Empty files named as NVIDIA's device files: test hosts have a stand-in nvidia-smi and no
    GPU, and Slurm counts a node's GPUs by device file (gres.conf File=)."""
    script = "; ".join(f"touch /dev/nvidia{i}" for i in range(count))
    assert host.exec(script).returncode == 0


def cluster(p: Platform, key: str, cluster_id: str) -> dict[str, Any]:
    got: dict[str, Any] = p.ok("GET", f"/clusters/{cluster_id}", key)
    return got


def parse_rfc3339(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def switches(text: str) -> set[tuple[str, str]]:
    """(switch, what is below it) from topology.conf or `scontrol show topology`: its
    Switches= where it has any (scontrol also lists the nodes under an upper switch), else its
    Nodes=."""
    out = set()
    for line in text.splitlines():
        name = re.search(r"SwitchName=(\S+)", line)
        below = re.search(r"Switches=(\S+)", line) or re.search(r"Nodes=(\S+)", line)
        if name and below and not line.lstrip().startswith("#"):
            out.add((name.group(1), below.group(1)))
    return out


def test_a_tenant_gets_a_working_slurm_and_terminate_leaves_nothing(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    slurm_installed: None,
) -> None:
    _, op_public, op_key_path = operator_keypair
    hosts = [testhost("slm", gpus=8, authorized_key=op_public) for _ in range(2)]
    for h in hosts:
        gpu_device_stand_ins(h, 8)
    nodes = [e2e.register(platform, h, f"gpu-{i}", op_key_path) for i, h in enumerate(hosts)]
    for node_id in nodes:
        wait_for(f"{node_id} burn-in", lambda n=node_id: e2e.node_state(platform, n) == "available")
    t = tenant
    public = t["public"].read_text().strip()
    created = json.loads(
        platform.cli(
            t["key"],
            "clusters", "create", "H100", "--nodes", "2", "--name", "slurmtest",
            "--ssh-key", public, "--slurm", "--json",
        ).stdout
    )  # fmt: skip
    cid = created["id"]
    assert created["scheduler"]["type"] == "slurm"
    assert created["scheduler"]["state"] == "configuring"
    assert created["scheduler"]["login_command"] is None

    wait_for(
        "cluster running",
        lambda: cluster(platform, t["key"], cid)["state"] in ("running", "failed"),
        timeout=120,
    )

    def settled() -> dict[str, Any] | None:
        c = cluster(platform, t["key"], cid)
        sched = c["scheduler"]
        return c if c["state"] != "running" or sched["state"] in ("ready", "failed") else None

    got = wait_for("slurm ready", settled, timeout=240)
    assert got["state"] == "running", got
    sched = got["scheduler"]
    assert sched["state"] == "ready", sched["reason"]
    assert sched["simulated"] is False
    ready_s = parse_rfc3339(sched["ready_at"]) - parse_rfc3339(got["running_at"])
    print(f"\nslurm ready {ready_s:.1f} s after the 2-node cluster ran ({sched['reason']})")
    names = sorted(m["hostname"] for m in got["nodes"])
    assert names == ["slurmtest-0", "slurmtest-1"]
    controller = sched["controller"]
    assert controller["hostname"] == "slurmtest-0"
    assert controller["address"] in {h.address for h in hosts}
    command = sched["login_command"]
    assert command == next(m["ssh"]["command"] for m in got["nodes"] if m["hostname"] == names[0])

    def on_controller(remote: str) -> str:
        done = e2e.login(command, t["private"], remote)
        assert done.returncode == 0, (remote, done.stdout, done.stderr)
        return done.stdout

    idle = on_controller("sinfo -h -N -o '%N %T'").split()
    assert sorted(zip(idle[::2], idle[1::2], strict=True)) == [(n, "idle") for n in names]
    assert sorted(on_controller("srun -N2 hostname").split()) == names
    node_info = on_controller(f"scontrol show node {names[1]}")
    assert "Gres=gpu:8" in node_info, node_info
    assert "State=IDLE" in node_info
    job = on_controller(f"sbatch --parsable -w {names[0]} -o job.out --wrap 'hostname; id -un'")
    assert job.strip().isdigit(), job
    out = wait_for(
        "the batch job's output",
        lambda: e2e.login(command, t["private"], "cat job.out 2>/dev/null").stdout.split(),
        timeout=30,
    )
    assert out == [names[0], "ubuntu"]
    # scontrol sees the topology the platform exports for the cluster
    export = platform.api(
        "GET", f"/clusters/{cid}/topology", t["key"], params={"format": "slurm-tree"}
    )
    assert export.status_code == 200, export.text
    shown = on_controller("scontrol show topology")
    assert switches(shown) == switches(export.text), (shown, export.text)
    assert {"r1", "b1", "lab-ib1"} == {name for name, _ in switches(shown)}
    # the munge key: read on the host (root), then looked for everywhere the platform writes
    key = hosts[0].exec("base64 -w0 /etc/munge/munge.key").stdout.strip()
    assert key
    assert hosts[1].exec("base64 -w0 /etc/munge/munge.key").stdout.strip() == key
    raw = base64.b64decode(key)
    assert len(raw) == 128
    mode = hosts[0].exec("stat -c '%a %U %G' /etc/munge/munge.key").stdout.split()
    assert mode == ["400", "munge", "munge"]

    started = time.monotonic()
    platform.cli(t["key"], "clusters", "terminate", cid)
    ended = wait_for(
        "terminated",
        lambda: (c := cluster(platform, t["key"], cid))["state"] in ("terminated", "failed") and c,
        timeout=120,
    )
    assert ended["state"] == "terminated", ended
    assert ended["scheduler"]["state"] == "removed", ended["scheduler"]
    print(f"terminate with slurm removal took {time.monotonic() - started:.1f} s")
    for h in hosts:
        running = h.exec("pgrep -a -x 'slurmctld|slurmd|slurmstepd|munged'")
        assert running.returncode == 1, running.stdout
        for path in LEFTOVERS:
            assert h.exec(f"test -e {path}").returncode == 1, f"{path} left on {h.name}"
        assert h.exec("id ubuntu").returncode != 0
    for node_id in nodes:
        wait_for("wiped", lambda n=node_id: e2e.node_state(platform, n) == "available")
    events = platform.ok("GET", f"/clusters/{cid}/events", t["key"], params={"limit": 100})
    kinds = [e["message"] for e in events["data"] if e["kind"] == "scheduler"]
    assert any(m.startswith("slurm ready") for m in kinds), kinds
    assert any(m.startswith("slurm removed") for m in kinds), kinds
    # never in an answer, the log, the audit log or the database
    answers = json.dumps([got, ended, events])
    audit = platform.api("GET", "/audit-events", params={"limit": 1000}).text
    db = (platform.data_dir / "neocloud.db").read_bytes()
    for text in (answers, audit, platform.log.read_text()):
        assert key not in text
        assert raw.hex() not in text
    assert raw not in db
    assert key.encode() not in db


def test_bad_scheduler_requests_are_refused_precisely(
    platform: Platform, tenant: dict[str, Any]
) -> None:
    t = tenant
    body = {"gpu_model": "H100", "node_count": 2, "scheduler": {"type": "kubernetes"}}
    r = platform.api("POST", "/clusters", t["key"], json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "scheduler.type"
    assert "slurm" in r.json()["error"]["message"]
    body["scheduler"] = {"type": "slurm", "partitions": 3}
    r = platform.api("POST", "/clusters", t["key"], json=body)
    assert r.status_code == 422, r.text
    # an instance (possibly a part of a node) never gets a managed scheduler
    r = platform.api(
        "POST",
        "/instances",
        t["key"],
        json={"instance_type": "1xH100", "scheduler": {"type": "slurm"}},
    )
    assert r.status_code == 422, r.text
    assert "scheduler" in r.text
