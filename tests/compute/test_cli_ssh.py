"""CLI access: ``neocloud ssh`` (exec's ssh with exactly the API's login), ``neocloud instances
ssh-config`` and ``neocloud clusters hosts``; and the SDK's ``ssh_config`` and ``hosts``."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from neocloud.cli import compute as compute_cli
from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.base import Access, NodeRef, ProvisionRequest, StepResult
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock

runner = CliRunner()
app = typer.Typer()
for _name, _sub in compute_cli.APPS.items():
    app.add_typer(_sub, name=_name)


@dataclass
class ReachableDriver(SimDriver):
    """The simulator, answering a real-looking (not simulated) address per node."""

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        octet = sum(node.id.encode()) % 200 + 10
        host = f"203.0.113.{octet}"
        login = request.login.user
        return StepResult(True, 0.0, access=Access(host, 2222, login, (host,), simulated=False))


@pytest.fixture(params=["sim", "reachable"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cli(
    acme: Client, db: Database, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch, kind: str
) -> tuple[CliRunner, Client, Worker]:
    driver = SimDriver(seed=1) if kind == "sim" else ReachableDriver(seed=1)
    worker = Worker(db, clock, driver=driver, holder="test-worker")
    monkeypatch.setattr(STATE, "_client", acme)
    monkeypatch.setattr(output.out, "width", 200)
    return runner, acme, worker


def _running(acme: Client, worker: Worker, name: str) -> dict:  # type: ignore[type-arg]
    inst = acme.instances.create("8xH100", name=name)
    worker.run_once()
    inst = acme.instances.get(inst["id"])
    assert inst["state"] == "running"
    return inst


def _no_exec(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []

    def fake_execvp(file: str, args: list[str]) -> None:
        calls.append((file, list(args)))

    monkeypatch.setattr(compute_cli.os, "execvp", fake_execvp)
    return calls


def test_ssh_execs_ssh_with_the_login(
    cli: tuple[CliRunner, Client, Worker], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, acme, worker = cli
    inst = _running(acme, worker, "box")
    calls = _no_exec(monkeypatch)
    result = run.invoke(app, ["ssh", "box", "--", "-L", "8888:localhost:8888", "nvidia-smi"])
    if kind == "sim":
        assert result.exit_code == 1
        assert "simulated: no server answers" in result.output
        assert calls == []
        return
    assert result.exit_code == 0, result.output
    ssh = inst["ssh"]
    assert calls == [
        (
            "ssh",
            [
                "ssh",
                "-p",
                "2222",
                f"ubuntu@{ssh['host']}",
                "-L",
                "8888:localhost:8888",
                "nvidia-smi",
            ],
        )
    ]


def test_ssh_refuses_an_instance_that_does_not_run(
    cli: tuple[CliRunner, Client, Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, acme, _ = cli
    inst = acme.instances.create("8xH100", name="waiting")
    calls = _no_exec(monkeypatch)
    result = run.invoke(app, ["ssh", inst["id"]])
    assert result.exit_code == 1
    assert "is pending: ssh works once it runs" in result.output
    assert calls == []


def test_ssh_config_prints_a_host_block(
    cli: tuple[CliRunner, Client, Worker], kind: str, tmp_path: Path
) -> None:
    run, acme, worker = cli
    inst = _running(acme, worker, "box")
    result = run.invoke(app, ["instances", "ssh-config", "box"])
    assert result.exit_code == 0, result.output
    assert result.stdout == acme.instances.ssh_config(inst["id"])
    assert "Host box\n" in result.stdout
    assert ("SIMULATED" in result.stdout) is (kind == "sim")
    if shutil.which("ssh"):
        path = tmp_path / "config"
        path.write_text(result.stdout)
        resolved = subprocess.run(
            ["ssh", "-G", "-F", str(path), "box"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert f"hostname {inst['ssh']['host']}" in resolved
        assert f"port {inst['ssh']['port']}" in resolved
        assert "user ubuntu" in resolved


def test_ssh_config_of_a_pending_instance_says_why(cli: tuple[CliRunner, Client, Worker]) -> None:
    run, acme, _ = cli
    inst = acme.instances.create("8xH100", name="waiting")
    result = run.invoke(app, ["instances", "ssh-config", "waiting"])
    assert result.exit_code == 1
    assert f"instance {inst['id']} is pending" in result.output
    with pytest.raises(ValueError, match="only while it runs"):
        acme.instances.ssh_config(inst["id"])


def test_clusters_hosts_to_stdout_and_to_a_file(
    cli: tuple[CliRunner, Client, Worker], kind: str, tmp_path: Path
) -> None:
    run, acme, worker = cli
    c = acme.clusters.create("H100", 2, name="train")
    worker.run_once()
    result = run.invoke(app, ["clusters", "hosts", "train", "--format", "hostfile"])
    assert result.exit_code == 0, result.output
    lines = [x for x in result.stdout.splitlines() if not x.startswith("#")]
    if kind == "sim":
        assert len(lines) == 2
        assert all(x.endswith(" slots=8") for x in lines)
    else:  # port 2222: hosts by their ssh-config aliases
        assert lines == ["train-0 slots=8", "train-1 slots=8"]
    target = tmp_path / "fleet.dstack.yml"
    result = run.invoke(app, ["clusters", "hosts", c["id"], "-f", "dstack", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(target.read_text())["type"] == "fleet"
    assert result.stdout == ""


def test_clusters_hosts_takes_only_known_formats(cli: tuple[CliRunner, Client, Worker]) -> None:
    run, _, _ = cli
    result = run.invoke(app, ["clusters", "hosts", "x", "--format", "csv"])
    assert result.exit_code == 2


def test_ssh_key_id_takes_a_key_name_or_id(
    cli: tuple[CliRunner, Client, Worker], db: Database
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from neocloud.compute.tables import InstanceRow

    run, acme, _ = cli
    public = Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    key = acme.ssh_keys.add("laptop", line.decode())
    made = run.invoke(
        app, ["instances", "create", "8xH100", "--name", "k1", "--ssh-key-id", "laptop", "--json"]
    )
    assert made.exit_code == 0, made.output
    inst = next(i for i in acme.instances.iter() if i["name"] == "k1")
    assert inst["ssh_keys"] == 1
    with db.transaction() as s:
        row = s.get(InstanceRow, inst["id"])
        assert row is not None
        assert row.ssh_key_ids == [key["id"]]
    unknown = run.invoke(app, ["instances", "create", "8xH100", "--ssh-key-id", "desktop"])
    assert unknown.exit_code != 0
    assert "desktop" in unknown.output
