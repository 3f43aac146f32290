"""A node whose agent falls silent is failed by the worker, on a virtual clock; compute then
fails its instance as for any node failure."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.fleet.agent import prune_telemetry
from neocloud.fleet.tables import GpuTelemetrySeriesRow
from neocloud.kernel.clock import VirtualClock


def _beat(http: TestClient, token: str, node: str) -> None:
    body: dict[str, Any] = {
        "node_id": node,
        "agent_version": "0.1.0",
        "simulated": True,
        "sent_at": "2026-03-01T12:00:00Z",
        "telemetry": [
            {
                "index": 0,
                "utilization_pct": 1.0,
                "memory_used_mib": 1,
                "temperature_c": 40.0,
                "power_w": 80.0,
            }
        ],
    }
    got = http.post(
        "/api/v1/agent/heartbeat", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert got.status_code == 200, got.text


def test_silent_agent_fails_the_node_and_its_instance(
    fleet: Client, acme: Client, worker: Worker, clock: VirtualClock
) -> None:
    http = TestClient(fleet._http.app, raise_server_exceptions=False)
    inst = acme.instances.create("8xH100")
    worker.run_once()
    node = acme.instances.get(inst["id"])["node_id"]
    never = next(n["id"] for n in fleet.nodes.list()["data"] if n["id"] != node)
    fleet.nodes.issue_agent_token(never)  # a token alone, no heartbeat: not watched
    token = fleet.nodes.issue_agent_token(node)["token"]
    _beat(http, token, node)
    clock.advance(59)
    worker.run_once()
    assert fleet.nodes.get(node)["state"] == "in_use"  # within NEOCLOUD_AGENT_SILENCE_S (60)
    _beat(http, token, node)  # a beat resets the silence
    clock.advance(61)
    worker.run_once()
    got = fleet.nodes.get(node)
    assert (got["state"], got["state_reason"]) == ("failed", "agent silent for 61 s")
    assert fleet.nodes.health(node)["checks"]["agent.heartbeat"]["status"] == "fail"
    inst = acme.instances.get(inst["id"])
    assert (inst["state"], inst["state_reason"]) == ("failed", "node_failed")
    assert fleet.nodes.get(never)["state"] == "available"
    clock.advance(600)
    worker.run_once()  # already failed: nothing more happens
    assert fleet.nodes.events(node)["data"][-1]["reason"] == "agent silent for 61 s"


def test_a_revoked_token_stops_the_watch(
    fleet: Client, worker: Worker, clock: VirtualClock
) -> None:
    http = TestClient(fleet._http.app, raise_server_exceptions=False)
    node = fleet.nodes.list()["data"][0]["id"]
    token = fleet.nodes.issue_agent_token(node)["token"]
    _beat(http, token, node)
    fleet.nodes.revoke_agent_token(node)  # the operator took the agent away
    clock.advance(3600)
    worker.run_once()
    assert fleet.nodes.get(node)["state"] == "available"


def test_old_series_rows_are_pruned(fleet: Client, clock: VirtualClock, db: Database) -> None:
    http = TestClient(fleet._http.app, raise_server_exceptions=False)
    node = fleet.nodes.list()["data"][0]["id"]
    token = fleet.nodes.issue_agent_token(node)["token"]
    for _ in range(3):  # three buckets: two closed
        _beat(http, token, node)
        clock.advance(60)
    assert prune_telemetry(db=db, clock=clock, retention_s=150) == 1
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(GpuTelemetrySeriesRow)) == 1


def test_cli_instances_metrics(
    fleet: Client, acme: Client, worker: Worker, monkeypatch: Any
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
    http = TestClient(fleet._http.app, raise_server_exceptions=False)
    inst = acme.instances.create("1xH100", name="m1")
    worker.run_once()
    got = acme.instances.get(inst["id"])
    token = fleet.nodes.issue_agent_token(got["node_id"])["token"]
    _beat(http, token, got["node_id"])
    result = CliRunner().invoke(app, ["instances", "metrics", "m1"])
    assert result.exit_code == 0, result.output
    assert "UTIL %" in result.output
    assert "series (60 s buckets" in result.output
