"""End to end: managed Slurm heals a lost member on real test hosts (docs/slurm.md, "Healing").

A tenant's 2-node cluster with Slurm runs a long `sbatch` job on the controller's node. The
other member's node fails, two ways: the operator's health API reports an uncorrectable ECC
error, or the node's agent (installed at burn-in, reading a recorded GPU source) restarts on a
recorded GPU with an uncorrectable ECC error, as NVML would report it. Either way the platform
drains the member in Slurm with the reason (`sinfo -R` shows it) and takes Slurm off it. A
third host is registered only then (so the drained state can be seen before the replacement
exists); the scheduler books it, it runs, and the platform joins it: `srun -N2 hostname`
answers from the controller and the new member, and the job started before the failure is
still RUNNING. Terminating leaves no Slurm daemon or key on any host. Hosts are removed by the
fixture, whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import test_agent_e2e as agent
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


def new_tenant(p: Platform, tmp_path: Path) -> dict[str, Any]:
    """A tenant org with a key, a quota and an SSH key pair (as ``e2e.tenant`` makes)."""
    slug = f"heal-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    p.cli(None, "orgs", "create", slug, "--owner-email", f"{slug}@lab.example")
    p.cli(None, "quotas", "set", "H100-SXM-80GB", "64", "--org", slug)
    key = json.loads(p.cli(None, "keys", "create", "t", "--org", slug, "--json").stdout)
    private = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(private)], check=True)
    return {"key": key["secret"], "private": private, "public": Path(f"{private}.pub")}


def test_a_member_failed_through_the_health_api_is_drained_replaced_and_jobs_survive(
    platform: Platform,
    tenant: dict[str, Any],
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    slurm_installed: None,
) -> None:
    _, op_public, op_key_path = operator_keypair
    hosts = [testhost("shl", gpus=8, authorized_key=op_public) for _ in range(2)]
    nodes = [e2e.register(platform, h, f"gpu-{i}", op_key_path) for i, h in enumerate(hosts)]

    def fail(node_id: str, host: Host) -> None:
        check = {"name": "gpu.ecc", "status": "fail", "message": ECC}
        platform.ok("POST", f"/nodes/{node_id}/health", json={"checks": [check]})

    def spare() -> tuple[Host, str]:
        host = testhost("shl", gpus=8, authorized_key=op_public)
        return host, e2e.register(platform, host, "gpu-2", op_key_path)

    heal_loop(platform, tenant, hosts, nodes, fail, spare, reason=ECC)


def test_a_member_failed_by_its_agent_is_drained_replaced_and_jobs_survive(
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Path],
    slurm_installed: None,
    tmp_path: Path,
) -> None:
    op_private, op_public, _ = operator_keypair
    hosts = [testhost("sha", gpus=8, authorized_key=op_public) for _ in range(2)]
    # The member fails by its agent's recorded ECC error, not by silence: a loaded CI machine
    # once kept the controller's agent quiet past the agent tests' 5 s, and lost it.
    with (
        agent.agent_bundle() as bundle,
        agent.agent_platform(tmp_path, bundle, silence_s=120) as p,
    ):
        nodes = [agent.register(p, h, f"gpu-{i}", op_private, "h100") for i, h in enumerate(hosts)]

        def fail(node_id: str, host: Host) -> None:
            # the agent restarts reading a recorded node whose GPU has an uncorrectable ECC
            # error (what NVML would report); the platform fails the node from its report
            switched = host.exec(
                "sed -i 's/^AGENT_RECORDED=.*/AGENT_RECORDED=h100-ecc/' /etc/neocloud/agent.env"
                " && neocloud-agent-ctl restart"
            )
            assert switched.returncode == 0, switched.stderr

        def spare() -> tuple[Host, str]:
            host = testhost("sha", gpus=8, authorized_key=op_public)
            return host, agent.register(p, host, "gpu-2", op_private, "h100")

        heal_loop(p, new_tenant(p, tmp_path), hosts, nodes, fail, spare, reason="gpu.ecc")


def heal_loop(
    platform: Platform,
    t: dict[str, Any],
    hosts: list[Host],
    nodes: list[str],
    fail: Callable[[str, Host], None],
    spare: Callable[[], tuple[Host, str]],
    *,
    reason: str,
) -> None:
    """A 2-node cluster with Slurm on ``nodes``; ``fail`` fails the second member's node; it
    must be drained with ``reason``; ``spare`` brings the replacement's host."""
    for h in hosts:
        slurm_e2e.gpu_device_stand_ins(h, 8)
    for node_id in nodes:
        wait_for(f"{node_id} burn-in", lambda n=node_id: e2e.node_state(platform, n) == "available")
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
    fail(failed_node, hosts[nodes.index(failed_node)])
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
    assert reason in reasons, reasons
    assert "gpu.ecc" in reasons, reasons
    # Slurm came off the failed member: no daemon, no key
    lost = hosts[nodes.index(failed_node)]
    assert lost.exec("pgrep -a -x 'slurmd|munged'").returncode == 1
    assert lost.exec("test -e /etc/munge/munge.key").returncode == 1
    sched = slurm_e2e.cluster(platform, t["key"], cid)["scheduler"]
    assert sched["state"] == "ready"
    assert "1 of 2 nodes in service" in sched["reason"]

    # capacity for the replacement: a third host
    spare_host, spare_node = spare()
    slurm_e2e.gpu_device_stand_ins(spare_host, 8)

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
    healthy = hosts[nodes.index(by_name["heal-0"]["node_id"])]
    key = healthy.exec("base64 -w0 /etc/munge/munge.key").stdout.strip()
    assert spare_host.exec("base64 -w0 /etc/munge/munge.key").stdout.strip() == key
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
    for h in (*hosts, spare_host):
        running = h.exec("pgrep -a -x 'slurmctld|slurmd|slurmstepd|munged'")
        assert running.returncode == 1, (h.name, running.stdout)
        assert h.exec("test -e /etc/munge/munge.key").returncode == 1
    answers = json.dumps([got, ended, messages])
    audit = platform.api("GET", "/audit-events", params={"limit": 1000}).text
    for text in (answers, audit, platform.log.read_text()):
        assert key not in text
