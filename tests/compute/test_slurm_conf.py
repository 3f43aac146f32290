"""Managed Slurm without real hosts: the pure renderers (slurm.conf, gres.conf, the probe's
parsing), the scheduler's states on simulated nodes, and the steps through a fake executor
(which scripts run where, the munge key only ever on standard input, a failure cleaned up)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from neocloud.client import ApiError, Client
from neocloud.compute import slurm_conf as conf
from neocloud.compute.slurm_heal import open_key
from neocloud.compute.slurm_members import slurm_cluster_name
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import Access, NodeRef, ProvisionRequest, StepResult
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

PROBE_OUT = (
    "host={host}\n"
    "hw=NodeName={host} CPUs=224 Boards=1 SocketsPerBoard=2 CoresPerSocket=56"
    " ThreadsPerCore=2 RealMemory=2063000\n"
    "gpus=8\n"
    "uid=1001\n"
)


def hw(host: str = "n0", gpus: int = 8) -> conf.NodeHardware:
    return conf.NodeHardware(host, 224, 1, 2, 56, 2, 2063000, gpus, 1001)


# ------------------------------------------------------------------------------------ renderers


def test_the_probe_reads_slurmd_c_gpus_and_the_login_uid() -> None:
    got = conf.parse_probe(PROBE_OUT.format(host="train-0"))
    assert got == conf.NodeHardware("train-0", 224, 1, 2, 56, 2, 2063000, 8, 1001)
    no_user = conf.parse_probe(PROBE_OUT.format(host="x").replace("uid=1001", "uid="))
    assert no_user.login_uid is None
    with pytest.raises(conf.SlurmProbeError, match="RealMemory"):
        conf.parse_probe(PROBE_OUT.format(host="x").replace(" RealMemory=2063000", ""))
    with pytest.raises(conf.SlurmProbeError, match="hostname"):
        conf.parse_probe("hw=\n")


def test_slurm_conf_names_members_by_hostname_at_their_address() -> None:
    nodes = [
        conf.SlurmNode("train-0", "10.0.0.1", hw("train-0")),
        conf.SlurmNode("train-1", "10.0.0.2", hw("train-1", gpus=0)),
    ]
    text = conf.slurm_conf("llm", nodes[0], nodes, topology=True)
    lines = text.splitlines()
    assert "SlurmctldHost=train-0(10.0.0.1)" in lines
    assert "JobCompType=jobcomp/filetxt" in lines
    assert "TopologyPlugin=topology/tree" in lines
    assert "GresTypes=gpu" in lines
    assert (
        "NodeName=train-0 NodeAddr=10.0.0.1 CPUs=224 Boards=1 SocketsPerBoard=2"
        " CoresPerSocket=56 ThreadsPerCore=2 RealMemory=2063000 Gres=gpu:8 State=UNKNOWN"
    ) in lines
    assert any(ln.startswith("NodeName=train-1 ") and "Gres" not in ln for ln in lines)
    assert "PartitionName=main Nodes=train-0,train-1 Default=YES" in text
    without = conf.slurm_conf("llm", nodes[0], nodes[1:], topology=False)
    assert "TopologyPlugin" not in without
    assert "GresTypes" not in without
    gres = conf.gres_conf(nodes).splitlines()
    assert gres[1:] == ["NodeName=train-0 Name=gpu File=/dev/nvidia[0-7]"]
    one = conf.gres_conf([conf.SlurmNode("a", "h", hw("a", gpus=1))]).splitlines()
    assert one[1:] == ["NodeName=a Name=gpu File=/dev/nvidia0"]


def test_scripts_quote_their_values_and_never_carry_the_key() -> None:
    node = conf.SlurmNode("a-0", "10.0.0.1", hw("a-0"))
    files = {
        "slurm.conf": "ClusterName=x'; rm -rf /\n",
        "gres.conf": "",
        "topology.conf": "",
        "cgroup.conf": conf.CGROUP_CONF,
    }
    script = conf.install_script(node=node, controller=True, files=files)
    assert "SLURM_CONF='ClusterName=x'\"'\"'; rm -rf /\n'" in script
    assert "ROLE=controller" in script
    assert "cat > /etc/munge/munge.key.new" in script  # the key: from standard input only
    assert conf.probe_script("ubuntu").startswith("LOGIN=ubuntu\n")
    assert conf.wait_script(count=2, deadline_s=30).startswith("COUNT=2\nDEADLINE=30\n")


def test_cluster_names_become_slurm_names() -> None:
    assert slurm_cluster_name("LLM Train_7") == "llm-train-7"
    assert slurm_cluster_name("clu_01ABC") == "clu-01abc"
    assert slurm_cluster_name("---") == "cluster"
    assert len(slurm_cluster_name("x" * 90)) == 40


# ------------------------------------------------------------------------- through the worker


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def test_an_unknown_scheduler_is_a_422_naming_scheduler_type(acme: Client) -> None:
    exc = _error(acme.clusters.create, "H100", 2, scheduler={"type": "pbs"})
    assert (exc.status, exc.param) == (422, "scheduler.type")
    assert "slurm" in str(exc)
    exc = _error(acme.clusters.create, "H100", 2, scheduler={"type": "slurm", "qos": "x"})
    assert exc.status == 422


def test_on_simulated_nodes_slurm_is_ready_and_says_simulated(acme: Client, worker: Worker) -> None:
    c = acme.clusters.create("H100", 2, name="sim", scheduler={"type": "slurm"})
    assert c["scheduler"]["state"] == "configuring"
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["state"] == "running"
    sched = c["scheduler"]
    assert (sched["state"], sched["simulated"]) == ("ready", True)
    assert "simulated" in sched["reason"]
    assert sched["controller"]["hostname"] == "sim-0"
    assert sched["login_command"].startswith("ssh -p 22 ubuntu@2001:db8:")
    assert acme.clusters.terminate(c["id"])["scheduler"]["state"] == "removing"
    worker.run_once()
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert (c["state"], c["scheduler"]["state"]) == ("terminated", "removed")
    assert c["scheduler"]["login_command"] is None


def test_a_cluster_without_a_scheduler_has_none(acme: Client, worker: Worker) -> None:
    c = acme.clusters.create("H100", 1)
    assert c["scheduler"] is None
    worker.run_once()
    assert acme.clusters.get(c["id"])["scheduler"] is None


@dataclass
class FakeServers(SimDriver):
    """Provisions as real (not simulated) and answers ``run_root`` like a server with Slurm,
    recording (node, script, stdin) per call; ``probe_status`` makes every probe fail."""

    runs: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    probe_status: int = 0

    @property
    def shares_nodes(self) -> bool:
        return False

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        address = f"10.0.0.{abs(hash(node.id)) % 250 + 1}"
        return StepResult(True, 0.0, access=Access(address, 22, request.login.user, (address,)))

    def run_root(
        self, node: NodeRef, script: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]:
        self.runs.append((node.id, script, stdin))
        if "slurmd -C" in script:
            if self.probe_status:
                return self.probe_status, "missing slurmd"
            return 0, PROBE_OUT.format(host=node.hostname)
        return 0, "ok"


@pytest.fixture
def servers() -> FakeServers:
    return FakeServers(seed=1)


@pytest.fixture
def real_worker(db: Database, clock: VirtualClock, servers: FakeServers) -> Worker:
    """A worker whose nodes answer like servers with Slurm installed (``FakeServers``)."""
    return Worker(db, clock, driver=servers, holder="test-worker")


def test_slurm_is_configured_through_the_executor_and_removed_before_the_members_stop(
    acme: Client, real_worker: Worker, servers: FakeServers
) -> None:
    worker, driver = real_worker, servers
    c = acme.clusters.create("H100", 2, name="llm", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    c = acme.clusters.get(c["id"])
    sched = c["scheduler"]
    assert sched["state"] == "ready", sched
    assert sched["simulated"] is False
    controller = next(n for n in c["nodes"] if n["hostname"] == "llm-0")
    assert sched["login_command"] == controller["ssh"]["command"]
    probes = [r for r in driver.runs if "slurmd -C" in r[1]]
    installs = [r for r in driver.runs if "SLURM_CONF=" in r[1]]
    waits = [r for r in driver.runs if "sinfo -h -N" in r[1]]
    assert (len(probes), len(installs), len(waits)) == (2, 2, 1)
    keys = {r[2] for r in installs}
    (key,) = keys
    assert key is not None
    assert len(key) == 128
    assert all(r[2] is None for r in driver.runs if r not in installs)
    for _, script, _ in driver.runs:
        assert key.hex() not in script
        assert key.decode("latin-1") not in script
    assert sum("ROLE=controller" in r[1] for r in installs) == 1
    assert "NodeName=llm-1 NodeAddr=" in installs[0][1]
    assert "SwitchName=" in installs[0][1]  # topology.conf, from the topology export
    # another cluster gets another key
    other = acme.clusters.create("H100", 2, name="two", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    assert acme.clusters.get(other["id"])["scheduler"]["state"] == "ready"
    second = {r[2] for r in driver.runs if "SLURM_CONF=" in r[1]} - keys
    assert len(second) == 1
    assert second != keys
    # terminate: Slurm comes off both members first, then they stop
    before = len(driver.runs)
    got = acme.clusters.terminate(c["id"])
    assert (got["state"], got["scheduler"]["state"]) == ("stopping", "removing")
    assert all(n["state"] == "running" for n in got["nodes"])
    worker.run_once()
    worker.slurm.wait()
    teardowns = [r for r in driver.runs[before:] if "rm -rf /var/spool/slurmctld" in r[1]]
    assert len(teardowns) == 2
    for _ in range(3):
        worker.run_once()
    got = acme.clusters.get(c["id"])
    assert (got["state"], got["scheduler"]["state"]) == ("terminated", "removed")
    events = acme.clusters.events(c["id"], limit=100)["data"]
    messages = [e["message"] for e in events if e["kind"] == "scheduler"]
    assert [m.split(":")[0] for m in messages] == ["slurm ready", "slurm removed"]
    assert all(key.hex() not in m for m in messages)


def test_slurm_missing_on_a_member_fails_with_the_reason_and_leaves_nothing(
    acme: Client, real_worker: Worker, servers: FakeServers
) -> None:
    worker, driver = real_worker, servers
    driver.probe_status = conf.PROBE_NOT_INSTALLED
    c = acme.clusters.create("H100", 2, name="bare", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    c = acme.clusters.get(c["id"])
    sched = c["scheduler"]
    assert sched["state"] == "failed"
    assert "Slurm is not installed" in sched["reason"]
    assert "bare-" in sched["reason"]
    assert sched["login_command"] is None
    assert c["state"] == "running"  # the machines are still the tenant's
    assert not any("SLURM_CONF=" in r[1] for r in driver.runs)
    assert sum("rm -rf /var/spool/slurmctld" in r[1] for r in driver.runs) == 2


def scripts(driver: FakeServers, since: int, marker: str) -> list[tuple[str, str, bytes | None]]:
    return [r for r in driver.runs[since:] if marker in r[1]]


DRAINS, TEARDOWNS, JOINS = "State=DRAIN", "rm -rf /var/spool/slurmctld", "echo restarted"


def sealed_key(db: Database, cluster_id: str) -> str | None:
    from neocloud.compute.tables import ClusterRow

    with db.transaction() as s:
        row = s.get(ClusterRow, cluster_id)
        assert row is not None
        return row.scheduler_key


def test_a_member_drained_away_is_drained_in_slurm_released_and_its_replacement_joins(
    acme: Client,
    fleet: Client,
    real_worker: Worker,
    servers: FakeServers,
    clock: VirtualClock,
    db: Database,
) -> None:
    worker, driver = real_worker, servers
    c = acme.clusters.create("H100", 2, name="drn", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    c = acme.clusters.get(c["id"])
    assert c["scheduler"]["state"] == "ready"
    (key,) = {r[2] for r in scripts(driver, 0, "SLURM_CONF=") if "NODENAME=" in r[1]}
    controller = next(n for n in c["nodes"] if n["hostname"] == "drn-0")
    member = next(n for n in c["nodes"] if n["hostname"] == "drn-1")
    sealed = sealed_key(db, c["id"])  # kept sealed for the join, never in the clear
    assert sealed is not None
    assert key is not None
    assert key.hex() not in sealed
    assert base64.b64encode(key).decode() not in sealed
    assert open_key(worker.slurm.box, sealed) == key
    fleet.nodes.drain(member["node_id"], reason="fan replacement")
    before = len(driver.runs)
    worker.run_once()  # the notice: the member stops later; Slurm drains it at once
    worker.slurm.wait()
    assert acme.instances.get(member["instance_id"])["state"] == "running"
    (drain,) = scripts(driver, before, DRAINS)
    assert drain[0] == controller["node_id"]  # scontrol runs on the controller
    assert "NODE=drn-1" in drain[1]
    assert "member stops (maintenance)" in drain[1]
    (teardown,) = scripts(driver, before, TEARDOWNS)
    assert teardown[0] == member["node_id"]  # Slurm comes off the leaving member only
    sched = acme.clusters.get(c["id"])["scheduler"]
    assert sched["state"] == "ready"  # the other member keeps running the tenant's jobs
    assert "1 of 2 nodes in service; drained drn-1" in sched["reason"]
    clock.advance(60)  # past the notice: it stops, a replacement is booked and runs
    before = len(driver.runs)
    for _ in range(4):
        worker.run_once()
        worker.slurm.wait()
    assert acme.instances.get(member["instance_id"])["state"] == "terminated"
    got = acme.clusters.get(c["id"])
    assert got["state"] == "running"
    names = sorted(n["hostname"] for n in got["nodes"] if n["state"] == "running")
    assert names == ["drn-0", "drn-1-r"]
    new = next(n for n in got["nodes"] if n["hostname"] == "drn-1-r")
    joins = scripts(driver, before, JOINS)
    assert [(r[0], "restart slurmctld slurmctld" in r[1]) for r in joins] == [
        (controller["node_id"], True),
        (controller["node_id"], False),
    ]
    assert all("NodeName=drn-1-r NodeAddr=" in r[1] for r in joins)
    assert all("NodeName=drn-1 " not in r[1] for r in joins)
    installs = [r for r in scripts(driver, before, "SLURM_CONF=") if r not in joins]
    assert [(r[0], r[2]) for r in installs] == [(new["node_id"], key)]  # the cluster's key
    assert "ROLE=node" in installs[0][1]
    (wait,) = scripts(driver, before, "sinfo -h -N")
    assert "idle|mixed|allocated" in wait[1]
    sched = got["scheduler"]
    assert sched["state"] == "ready"
    assert "drn-1-r joined" in sched["reason"]
    events = acme.clusters.events(c["id"], limit=100)["data"]
    heal = [e["message"] for e in events if (e["message"] or "").startswith("slurm heal")]
    assert [m.split(":")[1].split()[0] for m in heal] == ["drained", "Slurm", "drn-1-r"]
    for m in heal:
        assert key is not None
        assert key.hex() not in m
    # terminate: Slurm comes off the two members it runs on (the drained one had it removed)
    before = len(driver.runs)
    acme.clusters.terminate(c["id"])
    for _ in range(3):
        worker.run_once()
        worker.slurm.wait()
    got = acme.clusters.get(c["id"])
    assert (got["state"], got["scheduler"]["state"]) == ("terminated", "removed")
    assert sealed_key(db, c["id"]) is None  # dropped with Slurm
    torn = sorted(r[0] for r in scripts(driver, before, TEARDOWNS))
    assert torn == sorted([controller["node_id"], new["node_id"]])


def test_a_failed_node_is_drained_with_its_check_and_a_lost_controller_fails_slurm(
    acme: Client, fleet: Client, real_worker: Worker, servers: FakeServers
) -> None:
    worker, driver = real_worker, servers
    c = acme.clusters.create("H100", 3, name="ecc", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    c = acme.clusters.get(c["id"])
    assert c["scheduler"]["state"] == "ready"
    member = next(n for n in c["nodes"] if n["hostname"] == "ecc-2")
    check = {"name": "gpu.ecc", "status": "fail", "message": "uncorrectable ECC error on GPU 3"}
    fleet.nodes.report_health(member["node_id"], [check])
    before = len(driver.runs)
    for _ in range(3):
        worker.run_once()
        worker.slurm.wait()
    (drain,) = scripts(driver, before, DRAINS)
    assert "uncorrectable ECC error on GPU 3" in drain[1]
    got = acme.clusters.get(c["id"])
    assert got["scheduler"]["state"] == "ready"
    assert "ecc-2-r joined" in got["scheduler"]["reason"]
    assert len(scripts(driver, before, JOINS)) == 3  # slurmctld, then slurmd on both that stay
    # the controller's node fails: its state and queue are lost with it; Slurm comes off
    ctl = next(n for n in got["nodes"] if n["hostname"] == "ecc-0")
    fleet.nodes.report_health(ctl["node_id"], [check])
    before = len(driver.runs)
    for _ in range(3):
        worker.run_once()
        worker.slurm.wait()
    sched = acme.clusters.get(c["id"])["scheduler"]
    assert sched["state"] == "failed"
    assert "the controller ecc-0 is lost (node failed:" in sched["reason"]
    assert {r[0] for r in scripts(driver, before, TEARDOWNS)} >= {ctl["node_id"]}


def test_on_simulated_nodes_a_lost_member_is_drained_and_replaced_at_once(
    acme: Client, fleet: Client, worker: Worker
) -> None:
    c = acme.clusters.create("H100", 2, name="sim", scheduler={"type": "slurm"})
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["scheduler"]["state"] == "ready"
    member = next(n for n in c["nodes"] if n["hostname"] == "sim-1")
    fleet.nodes.report_health(member["node_id"], [{"name": "gpu.xid", "status": "fail"}])
    for _ in range(4):
        worker.run_once()
    got = acme.clusters.get(c["id"])
    assert got["scheduler"]["state"] == "ready", got["scheduler"]
    assert "sim-1-r joined" in got["scheduler"]["reason"]
    events = acme.clusters.events(c["id"], limit=100)["data"]
    assert any(
        (e["message"] or "").startswith("slurm heal: drained sim-1: node failed") for e in events
    )


@pytest.mark.parametrize(
    ("nodes", "facts", "expected"),
    [
        # all in service, nothing changed
        ({"a": {}, "b": {}}, [("a", 1, 0, 1), ("b", 1, 0, 1)], ("none", ())),
        # b failed (not running any more): drain it
        ({"a": {}, "b": {}}, [("a", 1, 0, 1), ("b", 0, 0, 1)], ("drain", ("b",))),
        # b asked to stop (still running): drain it before it goes
        ({"a": {}, "b": {}}, [("a", 1, 0, 1), ("b", 1, 1, 1)], ("drain", ("b",))),
        # b drained, its replacement c still provisioning: wait
        ({"a": {}, "b": {"drained": True}}, [("a", 1, 0, 1), ("c", 0, 0, 0)], ("none", ())),
        # c runs but has no address yet: wait
        ({"a": {}, "b": {"drained": True}}, [("a", 1, 0, 1), ("c", 1, 0, 0)], ("none", ())),
        # c runs: it joins
        ({"a": {}, "b": {"drained": True}}, [("a", 1, 0, 1), ("c", 1, 0, 1)], ("join", ("c",))),
        # drained b still in its notice: c waits until b is gone
        (
            {"a": {}, "b": {"drained": True}},
            [("a", 1, 0, 1), ("b", 1, 1, 1), ("c", 1, 0, 1)],
            ("none", ()),
        ),
        # the controller a is lost: Slurm fails
        ({"a": {}, "b": {}}, [("a", 0, 0, 1), ("b", 1, 0, 1)], ("fail", ("a",))),
    ],
)
def test_decide_heal(
    nodes: dict[str, dict[str, object]],
    facts: list[tuple[str, int, int, int]],
    expected: tuple[str, tuple[str, ...]],
) -> None:
    from neocloud.compute.slurm_heal import MemberFacts, decide_heal

    members = [MemberFacts(i, bool(r), bool(st), bool(ad)) for i, r, st, ad in facts]
    plan = decide_heal(nodes, "a", members, 2)
    assert (plan.action.value, plan.members) == expected


def test_the_reconciler_holds_a_member_until_slurm_has_drained_and_released_it(
    acme: Client, real_worker: Worker, db: Database, clock: VirtualClock
) -> None:
    import sqlalchemy as sa

    from neocloud.compute.tables import InstanceRow

    worker = real_worker
    c = acme.clusters.create("H100", 2, name="hold", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    got = acme.clusters.get(c["id"])
    assert got["scheduler"]["state"] == "ready"
    leaving = next(n["instance_id"] for n in got["nodes"] if n["hostname"] == "hold-1")
    with db.transaction() as s:  # a stop already due, before the Slurm step has seen it
        s.execute(
            sa.update(InstanceRow)
            .where(InstanceRow.id == leaving)
            .values(stop_at=clock.now(), stop_reason="preempted")
        )
    worker.reconciler.run_once()
    assert acme.instances.get(leaving)["state"] == "running"  # held: Slurm still uses it
    worker.slurm.run_once()
    worker.slurm.wait()
    sched = acme.clusters.get(c["id"])["scheduler"]
    assert (sched["state"], "drained hold-1" in sched["reason"]) == ("ready", True)
    worker.reconciler.run_once()
    assert acme.instances.get(leaving)["state"] != "running"  # released: it stops
    # a stop of every member (the controller too): Slurm comes off all, then they stop
    with db.transaction() as s:
        s.execute(
            sa.update(InstanceRow)
            .where(InstanceRow.cluster_id == c["id"], InstanceRow.state == "running")
            .values(stop_at=clock.now(), stop_reason="preempted")
        )
    worker.reconciler.run_once()
    assert {
        n["state"] for n in acme.clusters.get(c["id"])["nodes"] if n["hostname"] == "hold-0"
    } == {"running"}
    worker.slurm.run_once()
    worker.slurm.wait()
    assert acme.clusters.get(c["id"])["scheduler"]["state"] == "failed"
    worker.reconciler.run_once()
    assert {n["state"] for n in acme.clusters.get(c["id"])["nodes"]} != {"running"}


def test_a_member_is_held_no_longer_than_the_longest_hold(
    acme: Client, real_worker: Worker, db: Database, clock: VirtualClock
) -> None:
    import sqlalchemy as sa

    from neocloud.compute.clusters import MEMBER_HOLD_MAX_S
    from neocloud.compute.tables import InstanceRow

    worker = real_worker
    c = acme.clusters.create("H100", 2, name="late", scheduler={"type": "slurm"})
    worker.run_once()
    worker.slurm.wait()
    got = acme.clusters.get(c["id"])
    leaving = next(n["instance_id"] for n in got["nodes"] if n["hostname"] == "late-1")
    with db.transaction() as s:  # asked to stop long ago; no Slurm step ran since (its worker died)
        s.execute(
            sa.update(InstanceRow)
            .where(InstanceRow.id == leaving)
            .values(stop_at=clock.now(), stop_reason="preempted")
        )
    clock.advance(MEMBER_HOLD_MAX_S - 1)
    worker.reconciler.run_once()
    assert acme.instances.get(leaving)["state"] == "running"
    clock.advance(2)
    worker.reconciler.run_once()
    assert acme.instances.get(leaving)["state"] != "running"


def test_the_cli_asks_for_slurm_and_shows_its_state(
    acme: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from neocloud.cli import output
    from neocloud.cli.compute import APPS
    from neocloud.cli.state import STATE

    app = typer.Typer()
    for name, sub in APPS.items():
        app.add_typer(sub, name=name)
    monkeypatch.setattr(STATE, "_client", acme)
    monkeypatch.setattr(output.out, "width", 200)
    done = CliRunner().invoke(
        app, ["clusters", "create", "H100", "--nodes", "2", "--name", "cli", "--slurm"]
    )
    assert done.exit_code == 0, done.output
    assert "slurm configuring: waiting for every member to run" in done.stdout
    worker.run_once()
    (c,) = acme.clusters.list()["data"]
    done = CliRunner().invoke(app, ["clusters", "get", c["id"]])
    assert done.exit_code == 0, done.output
    assert "slurm ready: simulated nodes" in done.stdout
    assert "ssh -p 22 ubuntu@2001:db8:" in done.stdout
