"""Burn-in with the node agent: a driver that installs it gets a fresh token, and the node
becomes available only once the agent sent an inventory; an install that fails or an agent
that stays silent past the timeout sends the node to repair with the reason; a retired node's
token is revoked. (On real hosts, end to end: tests/nodes/test_agent_e2e.py.)"""

from __future__ import annotations

from datetime import timedelta

from neocloud.client import Client
from neocloud.compute.burn_in import AgentBurnIn, run_burn_in
from neocloud.db.engine import Database
from neocloud.drivers.base import NodeRef, StepResult
from neocloud.drivers.sim import SimDriver
from neocloud.fleet.agent import AgentPolicy, heartbeat, run_agent_steps
from neocloud.fleet.agent_schemas import HeartbeatIn
from neocloud.kernel.clock import VirtualClock

from .helpers import SMALL_FLEET

AGENT = AgentBurnIn("http://cp.example:8420", report_timeout_s=60)


class InstallingDriver(SimDriver):
    """The simulator, plus an agent install that records what it was given."""

    def __init__(self, *, install_ok: bool = True) -> None:
        super().__init__()
        self.install_ok = install_ok
        self.installed: dict[str, tuple[str, str, str | None]] = {}

    @property
    def installs_agent(self) -> bool:
        return True

    def install_agent(
        self, node: NodeRef, *, control_plane_url: str, token: str, recorded: str | None
    ) -> StepResult:
        self.installed[node.id] = (control_plane_url, token, recorded)
        if not self.install_ok:
            return StepResult(False, message=f"node {node.hostname}: install agent: no python3")
        return StepResult(True, message="agent started")


def _one_node(admin: Client) -> str:
    admin.fleet.import_spec(SMALL_FLEET, initial_state="burn_in")
    nodes = admin.nodes.list(limit=100)["data"]
    for other in nodes[1:]:
        admin.nodes.transition(other["id"], "maintenance", reason="not in this test")
    return str(nodes[0]["id"])


def _beat(node_id: str, *, inventory: bool, clock: VirtualClock) -> HeartbeatIn:
    gpus = [
        {
            "index": i,
            "uuid": f"GPU-00000000-0000-0000-0000-00000000000{i}",
            "name": "NVIDIA H100 80GB HBM3",
            "memory_total_mib": 81559,
        }
        for i in range(8)
    ]
    return HeartbeatIn.model_validate(
        {
            "node_id": node_id,
            "agent_version": "0.1.0",
            "simulated": True,
            "sent_at": clock.now().isoformat(),
            "inventory": {"gpus": gpus} if inventory else None,
        }
    )


def test_the_node_waits_for_its_agents_inventory(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    node_id = _one_node(admin)
    driver = InstallingDriver()
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)  # power
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)  # health, install
    url, token, recorded = driver.installed[node_id]
    assert (url, recorded) == (AGENT.control_plane_url, None)
    assert token.startswith("nca_")
    assert admin.nodes.get(node_id)["state"] == "burn_in"
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    assert admin.nodes.get(node_id)["state"] == "burn_in"  # no heartbeat yet
    heartbeat(
        db=db,
        clock=clock,
        token=token,
        beat=_beat(node_id, inventory=False, clock=clock),
        policy=AgentPolicy(),
    )
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    assert admin.nodes.get(node_id)["state"] == "burn_in"  # a beat, but no inventory yet
    heartbeat(
        db=db,
        clock=clock,
        token=token,
        beat=_beat(node_id, inventory=True, clock=clock),
        policy=AgentPolicy(),
    )
    report = run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    assert report.passed == [node_id]
    assert admin.nodes.get(node_id)["state"] == "available"

    # Retired: its token is revoked and refused.
    admin.nodes.transition(node_id, "retired", reason="end of life")
    run_agent_steps(db=db, clock=clock, silence_s=60, retention_s=3600)
    assert admin.nodes.health(node_id)["agent"]["token_issued_at"] is None


def test_an_agent_that_never_reports_fails_burn_in(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    node_id = _one_node(admin)
    driver = InstallingDriver()
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    clock.advance(59)
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    assert admin.nodes.get(node_id)["state"] == "burn_in"
    clock.advance(timedelta(seconds=2).total_seconds())
    report = run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    assert report.failed == [node_id]
    node = admin.nodes.get(node_id)
    assert node["state"] == "repair"
    assert "did not report within 60 s" in node["state_reason"]
    assert "never sent a heartbeat" in node["state_reason"]
    # Sent back to burn-in, the node gets a new token (the old one stops working).
    old = driver.installed[node_id][1]
    admin.nodes.transition(node_id, "burn_in", reason="agent fixed")
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    assert driver.installed[node_id][1] != old


def test_a_failed_install_sends_the_node_to_repair(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    node_id = _one_node(admin)
    driver = InstallingDriver(install_ok=False)
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    run_burn_in(db=db, clock=clock, driver=driver, agent=AGENT)
    node = admin.nodes.get(node_id)
    assert node["state"] == "repair"
    assert "install agent: no python3" in node["state_reason"]


def test_without_the_agent_setting_burn_in_installs_nothing(
    admin: Client, db: Database, clock: VirtualClock
) -> None:
    node_id = _one_node(admin)
    driver = InstallingDriver()
    run_burn_in(db=db, clock=clock, driver=driver)
    run_burn_in(db=db, clock=clock, driver=driver)
    assert driver.installed == {}
    assert admin.nodes.get(node_id)["state"] == "available"
