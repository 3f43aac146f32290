"""Reboot: a running instance is rebooted through its node's driver (the simulator here),
stays running and stays billed; any other state is 409 (on both backends)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.compute import APPS
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client
from neocloud.compute.tables import AllocationRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database

from .helpers import tenant_client


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def _kinds(client: Client, instance_id: str) -> list[str]:
    return [e["kind"] for e in client.iter(f"instances/{instance_id}/events")]


def _allocations(db: Database, instance_id: str) -> list[tuple[str, object, object, list[int]]]:
    with db.transaction() as s:
        rows = s.scalars(
            sa.select(AllocationRow)
            .where(AllocationRow.instance_id == instance_id)
            .order_by(AllocationRow.id)
        )
        return [(a.id, a.start_at, a.end_at, list(a.gpu_indices)) for a in rows]


def _running(client: Client, worker: Worker) -> dict[str, object]:
    inst = client.instances.create("8xH100")
    worker.run_once()
    got = client.instances.get(inst["id"])
    assert got["state"] == "running"
    return got


def test_reboot_goes_through_the_driver_and_stays_billed(
    acme: Client, worker: Worker, db: Database
) -> None:
    inst = _running(acme, worker)
    before = _allocations(db, str(inst["id"]))
    assert len(before) == 1
    assert before[0][2] is None  # open: billed while it runs
    asked = acme.instances.reboot(str(inst["id"]))
    assert (asked["id"], asked["state"]) == (inst["id"], "running")
    assert _kinds(acme, str(inst["id"]))[-1] == "reboot_requested"
    worker.run_once()
    after = acme.instances.get(str(inst["id"]))
    assert (after["state"], after["node_id"]) == ("running", inst["node_id"])
    kinds = _kinds(acme, str(inst["id"]))
    assert kinds[-3:] == ["reboot_requested", "reboot", "rebooted"]
    assert _allocations(db, str(inst["id"])) == before  # same interval, still open: billed


def test_reboot_answers_202_and_honours_the_idempotency_key(acme: Client, worker: Worker) -> None:
    inst = _running(acme, worker)
    http = acme._http
    path = f"/api/v1/instances/{inst['id']}/reboot"
    first = http.post(path, headers={"Idempotency-Key": "reboot-1"})
    assert first.status_code == 202, first.text
    again = http.post(path, headers={"Idempotency-Key": "reboot-1"})
    assert again.status_code == 202
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert _kinds(acme, str(inst["id"])).count("reboot_requested") == 1


def test_asking_twice_before_the_reboot_records_one_request(acme: Client, worker: Worker) -> None:
    inst = _running(acme, worker)
    acme.instances.reboot(str(inst["id"]))
    acme.instances.reboot(str(inst["id"]))
    assert _kinds(acme, str(inst["id"])).count("reboot_requested") == 1
    worker.run_once()
    assert _kinds(acme, str(inst["id"])).count("rebooted") == 1


def test_only_a_running_instance_reboots(acme: Client, worker: Worker) -> None:
    pending = acme.instances.create("8xH100")
    refused = _error(acme.instances.reboot, pending["id"])
    assert (refused.status, refused.code, refused.param) == (
        409,
        "instance_not_running",
        "instance_id",
    )
    assert refused.details == {"state": "pending"}
    worker.run_once()
    acme.instances.terminate(pending["id"])
    stopping = _error(acme.instances.reboot, pending["id"])
    assert stopping.details == {"state": "stopping"}
    worker.run_once()
    assert acme.instances.get(pending["id"])["state"] == "terminated"
    ended = _error(acme.instances.reboot, pending["id"])
    assert (ended.status, ended.code, ended.details) == (
        409,
        "instance_not_running",
        {"state": "terminated"},
    )
    assert "reboot_requested" not in _kinds(acme, pending["id"])


def test_viewers_and_other_orgs_cannot_reboot(acme: Client, fleet: Client, worker: Worker) -> None:
    inst = _running(acme, worker)
    _, other = tenant_client(fleet, "other")
    hidden = _error(other.instances.reboot, inst["id"])
    assert (hidden.status, hidden.code) == (404, "instance_not_found")
    org = acme.get("me")["org_id"]
    viewer = fleet.users.add(org, "viewer@acme.example", role="viewer")
    key = fleet.keys.create("viewer", org_id=org, user_id=viewer["id"])
    http = TestClient(acme._http.app, raise_server_exceptions=False)  # type: ignore[attr-defined]
    as_viewer = Client(api_key=key["secret"], http=http, retries=0)
    below = _error(as_viewer.instances.reboot, inst["id"])
    assert (below.status, below.code) == (403, "insufficient_role")


# ------------------------------------------------------------------------------------------ CLI

runner = CliRunner()
cli_app = typer.Typer()
for _name, _sub in APPS.items():
    cli_app.add_typer(_sub, name=_name)


@pytest.fixture
def cli(acme: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(STATE, "_client", acme)
    monkeypatch.setattr(output.out, "width", 200)
    # The API's nudge runs a worker cycle at once: --wait sees the reboot finish.
    monkeypatch.setattr(acme._http.app.state, "compute_nudge", worker.run_once, raising=False)  # type: ignore[attr-defined]
    return runner


def test_cli_reboot_waits_until_it_is_back(cli: CliRunner, acme: Client) -> None:
    made = cli.invoke(cli_app, ["instances", "create", "8xH100", "--name", "box", "--wait"])
    assert made.exit_code == 0, made.output
    result = cli.invoke(cli_app, ["instances", "reboot", "box", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    inst = json.loads(result.stdout)
    assert inst["state"] == "running"
    assert _kinds(acme, inst["id"])[-3:] == ["reboot_requested", "reboot", "rebooted"]
    again = cli.invoke(cli_app, ["instances", "reboot", "box", "--wait"])
    assert again.exit_code == 0, again.output
    assert "back up after the reboot" in again.stderr


def test_cli_reboot_of_an_ended_instance_fails_with_the_reason(
    cli: CliRunner, acme: Client
) -> None:
    inst = acme.instances.create("8xH100")
    acme.instances.terminate(inst["id"])
    result = cli.invoke(cli_app, ["instances", "reboot", inst["id"]])
    assert result.exit_code != 0
    assert "instance_not_running" in result.output
