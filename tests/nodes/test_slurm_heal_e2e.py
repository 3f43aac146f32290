"""End to end: managed Slurm heals a lost member on real test hosts (docs/slurm.md, "Healing").

A tenant's 2-node cluster with Slurm runs a long `sbatch` job on the controller's node. The
operator's health API reports an uncorrectable ECC error on the other member (the agent's
recorded NVML failure lands in the same place: the node goes `failed`); the platform drains it
in Slurm with the check's message (`sinfo -R` shows it) and takes Slurm off it. A third host
is registered only then (so the drained state can be seen before the replacement exists);
the scheduler books it, it runs, and the platform joins it: `srun -N2 hostname` answers from
the controller and the new member, and the job started before the failure is still RUNNING.
Terminating leaves no Slurm daemon or key on any host. Hosts are removed by the fixture,
whatever happens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import test_real_nodes_e2e as e2e
from . import test_slurm_e2e as slurm_e2e
from .conftest import Host

platform = e2e.platform  # the fixtures: a platform of its own per test, a tenant
tenant = e2e.tenant
slurm_installed = slurm_e2e.slurm_installed
Platform = e2e.Platform
wait_for = e2e.wait_for
ECC = "uncorrectable ECC error on GPU 3 (recorded by the test)"


def scheduler_events(p: Platform, key: str, cluster_id: str) -> list[str]:
    events = p.ok("GET", f"/clusters/{cluster_id}/events", key, params={"limit": 200})
    return [e["message"] or "" for e in events["data"] if e["kind"] == "scheduler"]


def test_a_failed_member_is_drained_replaced_and_jobs_on_the_healthy_member_survive(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    slurm_installed: None,
) -> None:
    _, op_public, op_key_path = operator_keypair
    hosts = [testhost("shl", gpus=8, authorized_key=op_public) for _ in range(2)]
    for h in hosts:
        slurm_e2e.gpu_device_stand_ins(h, 8)
    nodes = [e2e.register(platform, h, f"gpu-{i}", op_key_path) for i, h in enumerate(hosts)]
    for node_id in nodes:
        wait_for(f"{node_id} burn-in", lambda n=node_id: e2e.node_state(platform, n) == "available")
    t = tenant
    public = t["public"].read_text().strip()
    created = json.loads(
        platform.cli(
            t["key"],
            "clusters", "create", "H100", "--nodes", "2", "--name", "heal",
            "--ssh-key", public, "--slurm", "--json",
        ).stdout
    )  # fmt: skip
    cid = created["id"]

    def ready() -> dict[str, Any] | None:
        c = slurm_e2e.cluster(platform, t["key"], cid)
        return c if c["scheduler"]["state"] in ("ready", "failed") else None

    got = wait_for("slurm ready", ready, timeout=240)
    assert got["scheduler"]["state"] == "ready", got["scheduler"]
    command = got["scheduler"]["login_command"]
    by_name = {m["hostname"]: m for m in got["nodes"]}
    assert sorted(by_name) == ["heal-0", "heal-1"]

    def on_controller(remote: str) -> str:
        done = e2e.login(command, t["private"], remote)
        assert done.returncode == 0, (remote, done.stdout, done.stderr)
        return done.stdout

    # the tenant's long job on the healthy member (memory asked for: a job without --mem
    # holds all of its node's memory under CR_Core_Memory)
    job = on_controller("sbatch --parsable -w heal-0 --mem=64M -o long.out --wrap 'sleep 900'")
    job = job.strip()
    assert job.isdigit(), job
    wait_for(
        "the long job running",
        lambda: on_controller(f"squeue -h -j {job} -o %T").strip() == "RUNNING",
        timeout=30,
    )

    # the member's node fails (the operator's health API, as the agent's report would)
    failed_at = time.monotonic()
    failed_node = by_name["heal-1"]["node_id"]
    platform.ok(
        "POST",
        f"/nodes/{failed_node}/health",
        json={"checks": [{"name": "gpu.ecc", "status": "fail", "message": ECC}]},
    )
    wait_for(
        "the drain",
        lambda: any(
            m.startswith("slurm heal: drained heal-1")
            for m in scheduler_events(platform, t["key"], cid)
        ),
        timeout=60,
    )
    drained_s = time.monotonic() - failed_at
    reasons = on_controller("sinfo -h -R -o '%n|%E'")
    assert "heal-1|" in reasons, reasons
    assert "uncorrectable ECC error on GPU 3" in reasons, reasons
    assert "gpu.ecc" in reasons, reasons
    # Slurm came off the failed member: no daemon, no key
    assert hosts[1].exec("pgrep -a -x 'slurmd|munged'").returncode == 1
    assert hosts[1].exec("test -e /etc/munge/munge.key").returncode == 1
    sched = slurm_e2e.cluster(platform, t["key"], cid)["scheduler"]
    assert sched["state"] == "ready"
    assert "1 of 2 nodes in service" in sched["reason"]

    # capacity for the replacement: a third host
    spare = testhost("shl", gpus=8, authorized_key=op_public)
    slurm_e2e.gpu_device_stand_ins(spare, 8)
    spare_node = e2e.register(platform, spare, "gpu-2", op_key_path)

    def joined() -> dict[str, Any] | None:
        c = slurm_e2e.cluster(platform, t["key"], cid)
        return c if "heal-1-r joined" in (c["scheduler"]["reason"] or "") else None

    got = wait_for("the replacement joined", joined, timeout=240)
    healed_s = time.monotonic() - failed_at
    assert got["state"] == "running"
    new = next(m for m in got["nodes"] if m["hostname"] == "heal-1-r")
    assert new["node_id"] == spare_node
    states = dict(
        line.split() for line in on_controller("sinfo -h -N -o '%N %T'").splitlines() if line
    )
    assert states == {"heal-0": "mixed", "heal-1-r": "idle"}, states
    assert sorted(on_controller("srun -N2 --mem=64M hostname").split()) == ["heal-0", "heal-1-r"]
    assert on_controller(f"squeue -h -j {job} -o '%T %N'").split() == ["RUNNING", "heal-0"]
    assert "Gres=gpu:8" in on_controller("scontrol show node heal-1-r")
    key = hosts[0].exec("base64 -w0 /etc/munge/munge.key").stdout.strip()
    assert spare.exec("base64 -w0 /etc/munge/munge.key").stdout.strip() == key
    print(
        f"\nslurm heal on test hosts: failure -> drained {drained_s:.1f} s;"
        f" failure -> replacement joined {healed_s:.1f} s (including the spare's registration"
        " and burn-in)"
    )
    messages = scheduler_events(platform, t["key"], cid)
    heal = [m for m in messages if m.startswith("slurm heal")]
    assert [m.split(":")[1].split()[0] for m in heal] == ["drained", "Slurm", "heal-1-r"], heal

    platform.cli(t["key"], "clusters", "terminate", cid)
    ended = wait_for(
        "terminated",
        lambda: (
            (c := slurm_e2e.cluster(platform, t["key"], cid))["state"] in ("terminated", "failed")
            and c
        ),
        timeout=120,
    )
    assert ended["state"] == "terminated", ended
    assert ended["scheduler"]["state"] == "removed"
    for h in (hosts[0], spare, hosts[1]):
        running = h.exec("pgrep -a -x 'slurmctld|slurmd|slurmstepd|munged'")
        assert running.returncode == 1, (h.name, running.stdout)
        assert h.exec("test -e /etc/munge/munge.key").returncode == 1
    answers = json.dumps([got, ended, messages])
    audit = platform.api("GET", "/audit-events", params={"limit": 1000}).text
    for text in (answers, audit, platform.log.read_text()):
        assert key not in text
