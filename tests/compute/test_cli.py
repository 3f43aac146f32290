"""CLI tests: instance types and instances over the SDK over the app (TestClient)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.compute import APPS
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.compute.worker import Worker

runner = CliRunner()
app = typer.Typer()
for _name, _sub in APPS.items():
    app.add_typer(_sub, name=_name)


@pytest.fixture
def cli(acme: Client, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setattr(STATE, "_client", acme)
    monkeypatch.setattr(output.out, "width", 200)
    # The API's nudge runs a worker cycle at once: --wait sees the instance run.
    acme._http.app.state.compute_nudge = worker.run_once  # type: ignore[attr-defined]
    yield runner
    del acme._http.app.state.compute_nudge  # type: ignore[attr-defined]


def test_instance_types_table_and_json(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instance-types", "list", "--gpu-model", "H100"])
    assert result.exit_code == 0, result.output
    assert "8xH100" in result.output
    assert "23.92 USD" in result.output
    result = cli.invoke(app, ["instance-types", "list", "--json"])
    assert {t["id"] for t in json.loads(result.output)} >= {"1xH100", "8xH200"}


def test_create_wait_list_terminate(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instances", "create", "8xH100", "--name", "a", "--wait", "--json"])
    assert result.exit_code == 0, result.output
    inst = json.loads(result.stdout)
    assert inst["state"] == "running"
    result = cli.invoke(app, ["instances", "list"])
    assert inst["id"] in result.output
    assert "running" in result.output
    result = cli.invoke(app, ["instances", "terminate", inst["id"], "--wait", "--json"])
    assert json.loads(result.stdout)["state"] == "terminated"
    result = cli.invoke(app, ["instances", "events", inst["id"]])
    assert "terminated" in result.output


def test_unknown_type_exits_2(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instances", "create", "3xH100"])
    assert result.exit_code == 2
    assert "unknown_instance_type" in result.output


def test_cluster_create_shows_topology(cli: CliRunner) -> None:
    result = cli.invoke(app, ["clusters", "create", "H100", "--nodes", "4", "--wait"])
    assert result.exit_code == 0, result.output
    assert "BLOCK" in result.stdout
    assert "us-east-1a-ib01" in result.stdout
    result = cli.invoke(app, ["clusters", "list", "--json"])
    (c,) = json.loads(result.stdout)
    assert c["state"] == "running"
    result = cli.invoke(app, ["clusters", "terminate", c["id"], "--wait", "--json"])
    assert json.loads(result.stdout)["state"] == "terminated"


def test_reservations_and_capacity(cli: CliRunner) -> None:
    result = cli.invoke(
        app, ["reservations", "offerings", "H100", "--nodes", "2", "--hours", "48", "--json"]
    )
    assert result.exit_code == 0, result.output
    offer = json.loads(result.stdout)[0]
    result = cli.invoke(app, ["reservations", "buy", offer["id"], "--json"])
    assert json.loads(result.stdout)["state"] == "scheduled"
    result = cli.invoke(app, ["reservations", "list"])
    assert "active" in result.stdout  # it starts now, and the nudge ran the worker
    result = cli.invoke(app, ["capacity", "--gpu-model", "H100"])
    assert result.exit_code == 0, result.output
    assert "us-east-1" in result.stdout
    assert "FREE GPUS" not in result.stdout  # tenants see advice only


def test_create_queued_from_the_cli(cli: CliRunner, acme: Client) -> None:
    result = cli.invoke(app, ["instances", "create", "1xH100", "--max-wait", "600", "--json"])
    assert result.exit_code == 0, result.output
    inst = json.loads(result.stdout)
    assert inst["queue_until"] is not None
    result = cli.invoke(app, ["clusters", "create", "H100", "--nodes", "2", "--queue", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queue_until"] is not None
    result = cli.invoke(app, ["instances", "create", "1xH100", "--max-wait", "0"])
    assert result.exit_code == 2
    assert len(acme.instances.list()["data"]) == 3  # 1 + the cluster's 2 members


# -- issue 21: ids people can copy, names for ids, errors in the user's words, one renderer --


def test_ids_are_never_cut_and_a_unique_name_works_for_an_id(
    cli: CliRunner, acme: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output.out, "width", 100)
    result = cli.invoke(app, ["instances", "create", "1xH100", "--name", "train-1", "--json"])
    assert result.exit_code == 0, result.output
    first = json.loads(result.stdout)
    cli.invoke(app, ["instances", "create", "1xH100", "--name", "other"])
    # The list route filters by name, so a name resolves with one small page.
    assert [i["id"] for i in acme.instances.list(name="train-1")["data"]] == [first["id"]]
    result = cli.invoke(app, ["instances", "list"])
    assert result.exit_code == 0, result.output
    assert first["id"] in result.stdout  # whole, at 100 columns
    assert "…" not in result.stdout
    result = cli.invoke(app, ["instances", "get", "train-1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == first["id"]
    result = cli.invoke(app, ["instances", "events", "train-1"])
    assert result.exit_code == 0, result.output
    assert "pending" in result.stdout

    result = cli.invoke(app, ["instances", "get", "nosuch"])
    assert result.exit_code == 1
    assert "instance_not_found" in result.stderr

    result = cli.invoke(app, ["instances", "create", "1xH100", "--name", "train-1", "--json"])
    second = json.loads(result.stdout)
    result = cli.invoke(app, ["instances", "terminate", "train-1"])
    assert result.exit_code == 2
    assert "ambiguous_name" in result.stderr
    assert first["id"] in result.stderr
    assert second["id"] in result.stderr


def test_clusters_events_by_name(cli: CliRunner) -> None:
    result = cli.invoke(app, ["clusters", "create", "H100", "--nodes", "2", "--name", "c1"])
    assert result.exit_code == 0, result.output
    result = cli.invoke(app, ["clusters", "events", "c1", "--json"])
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert events
    assert events[0]["to_state"] == "pending"
    result = cli.invoke(app, ["clusters", "get", "c1"])
    assert result.exit_code == 0, result.output


def test_with_json_an_error_is_the_api_error_object_on_stderr(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instances", "create", "3xH100", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "unknown_instance_type"
    assert error["type"]
    assert error["message"]


def test_class_and_reservation_policy_take_only_their_values(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instances", "create", "1xH100", "--class", "spott"])
    assert result.exit_code == 2
    assert "on_demand" in result.output
    assert "spot" in result.output
    assert "reserved" not in result.output
    result = cli.invoke(app, ["instances", "create", "1xH100", "--reservation-policy", "x"])
    assert result.exit_code == 2
    assert "auto" in result.output
    assert "strict" in result.output


def test_an_instance_shows_labels_times_and_money_one_way(cli: CliRunner) -> None:
    result = cli.invoke(app, ["instances", "create", "1xH100", "--name", "a", "--json"])
    inst = json.loads(result.stdout)
    result = cli.invoke(app, ["instances", "get", inst["id"]])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(ln.split()[:2] == ["instance", "type"] for ln in lines if ln.strip())
    assert "instance_type" not in result.stdout
    created = next(ln for ln in lines if ln.strip().startswith("created at"))
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", created.strip()), created
    assert "+00:00" not in result.stdout
    price = next(ln for ln in lines if ln.strip().startswith("price per hour"))
    assert re.search(r"\d+\.\d\d USD$", price.strip()), price


def test_a_cut_list_says_so_and_all_shows_every_row(cli: CliRunner) -> None:
    for name in ("a", "b", "c"):
        cli.invoke(app, ["instances", "create", "1xH100", "--name", name])
    result = cli.invoke(app, ["instances", "list", "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "showing the first 2; more exist" in result.stderr
    assert "--all" in result.stderr
    result = cli.invoke(app, ["instances", "list", "--limit", "2", "--json"])
    assert len(json.loads(result.stdout)) == 2
    result = cli.invoke(app, ["instances", "list", "--all", "--json"])
    assert len(json.loads(result.stdout)) == 3
    result = cli.invoke(app, ["instances", "list", "--limit", "3"])
    assert "more exist" not in result.stderr


def test_wait_that_times_out_says_so_and_exits_124(
    acme: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker runs here: the instance stays pending, and --wait must not pass for done."""
    monkeypatch.setattr(STATE, "_client", acme)
    result = runner.invoke(
        app, ["instances", "create", "8xH100", "--wait", "--timeout", "1", "--json"]
    )
    assert result.exit_code == 124, result.output
    assert json.loads(result.stdout)["state"] == "pending"  # the object as it is now
    assert "timed out after 1 s" in result.stderr
    assert "is still pending" in result.stderr
