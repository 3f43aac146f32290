"""Redfish nodes in the platform, against the real ``sushy-tools`` emulator: an operator
registers a server by its BMC through the API, burn-in powers it on and reads its health
through the BMC, ``nodes power`` switches the emulated system (read back through an
independent sushy client), ``nodes inspect`` answers its inventory; a wrong BMC password fails
burn-in with the BMC's 401 and the password is nowhere in clear. Also ``nodes inspect`` of an
ssh node over real SSH (a test host), and ``nodes power`` of an ssh node refused.

Without sushy-tools the emulator tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.fleet import nodes_app
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client
from neocloud.compute.burn_in import run_burn_in
from neocloud.db.base import Base
from neocloud.db.engine import Database
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import VirtualClock

from .conftest import (
    BMC_PASSWORD,
    BMC_USER,
    IN_CI,
    Emulator,
    Host,
    start_redfish_emulator,
    stop_emulator,
)

WRONG = "Wr0ng-Staple-bmc-pw"
POWER_WAIT_S = 25.0  # the fake driver applies a power change within 11 s
TOPOLOGY = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "fabric": "f1",
    "block": "f1-b01",
    "rack": "f1-b01-r01",
}
# One emulated system per test that changes state, so tests never see each other's changes.
SYSTEMS = {"burn": "Off", "wrong": "Off", "busy": "On", "cli": "On"}


def uuid_of(name: str) -> str:
    return f"00000000-0000-4000-9000-{list(SYSTEMS).index(name) + 1:012d}"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    if importlib.util.find_spec("sushy_tools") is None:
        if IN_CI:
            pytest.fail("sushy-tools (the Redfish emulator) is a dev dependency: install it")
        pytest.skip("sushy-tools (the Redfish emulator) is not installed")
    systems = [
        {
            "uuid": uuid_of(name),
            "name": name,
            "power_state": state,
            "nics": [{"mac": f"52:54:00:00:01:{i:02x}", "ip": "127.0.0.1"}],
        }
        for i, (name, state) in enumerate(SYSTEMS.items())
    ]
    emu, proc = start_redfish_emulator(tmp_path_factory.mktemp("redfish-nodes"), systems)
    try:
        yield emu
    finally:
        stop_emulator(proc)


def register(
    admin: Client, emulator: Emulator, name: str, *, password: str = BMC_PASSWORD
) -> dict[str, Any]:
    node: dict[str, Any] = admin.nodes.add(
        f"bmc-{name}",
        gpu_model="H100",
        gpu_count=8,
        vcpus=224,
        ram_gib=2048,
        topology={**TOPOLOGY, "rack": f"f1-b01-{name}"},
        driver="redfish",
        driver_config={
            "bmc_url": emulator.url,
            "system_id": uuid_of(name),
            "bmc_username": BMC_USER,
            "bmc_password": password,
            "power_s": 0,
        },
    )
    return node


def power_of(emulator: Emulator, name: str) -> Callable[[], str]:
    def read() -> str:
        return str(emulator.system(uuid_of(name)).power_state.value)

    return read


def wait_for(read: Callable[[], Any], expected: Any, *, timeout: float = POWER_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        value = read()
    assert value == expected, f"still {value!r} after {timeout} s, wanted {expected!r}"


def burn_in(app: Any, db: Database, clock: VirtualClock) -> None:
    """Two burn-in passes with the API's drivers: the power step, then the health check."""
    run_burn_in(db=db, clock=clock, driver=app.state.drivers)
    clock.advance(1)
    run_burn_in(db=db, clock=clock, driver=app.state.drivers)


def everything_stored(db: Database) -> str:
    with db.transaction() as s:
        return "\n".join(
            repr(tuple(r))
            for table in Base.metadata.sorted_tables
            for r in s.execute(sa.select(table)).all()
        )


def test_a_redfish_node_burns_in_through_its_bmc_and_the_operator_powers_it(
    admin: Client,
    app: Any,
    db: Database,
    clock: VirtualClock,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    node = register(admin, emulator, "burn")
    assert node["state"] == "enrolled"
    assert node["driver"] == "redfish"
    assert node["credentials"] == ["bmc_password", "bmc_username"]
    assert node["driver_config"] == {
        "bmc_url": emulator.url,
        "system_id": uuid_of("burn"),
        "verify_tls": True,
        "boot_target": "pxe",
        "reboot": "force",
        "power_s": 0.0,
    }
    burn_in(app, db, clock)
    wait_for(power_of(emulator, "burn"), "On")  # burn-in powered it on through the BMC
    shown = admin.nodes.get(node["id"])
    assert shown["state"] == "available", shown["state_reason"]
    assert shown["health_checks"]["burn_in.bmc"]["status"] == "pass"
    assert shown["health_checks"]["burn_in.bmc_health"]["status"] == "pass"

    off = admin.nodes.power(node["id"], "off")
    assert off["action"] == "off"
    assert off["simulated"] is False
    assert off["forced"] is False
    wait_for(power_of(emulator, "burn"), "Off")
    again = admin.nodes.power(node["id"], "off")
    assert again["notes"] == ["power: already off"]
    admin.nodes.power(node["id"], "on")
    wait_for(power_of(emulator, "burn"), "On")
    reset = admin.nodes.power(node["id"], "reset")
    assert reset["action"] == "reset"

    seen = admin.nodes.inspect(node["id"])
    assert seen["source"] == "bmc"
    assert seen["simulated"] is False
    inventory = seen["inventory"]
    assert inventory["system_id"] == uuid_of("burn")
    assert inventory["name"] == "burn"
    assert inventory["uuid"] == uuid_of("burn")
    assert inventory["power_state"] in ("On", "Off")
    assert inventory["health"] == "OK"

    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    assert BMC_PASSWORD not in logs
    assert BMC_PASSWORD not in everything_stored(db)
    assert BMC_PASSWORD not in json.dumps([node, shown, off, seen])


def test_a_wrong_bmc_password_fails_burn_in_with_the_401_and_stays_secret(
    admin: Client,
    app: Any,
    db: Database,
    clock: VirtualClock,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    node = register(admin, emulator, "wrong", password=WRONG)
    burn_in(app, db, clock)
    shown = admin.nodes.get(node["id"])
    assert shown["state"] == "repair"
    assert "refused the credentials (401)" in shown["state_reason"], shown["state_reason"]
    assert emulator.url in shown["state_reason"]
    assert power_of(emulator, "wrong")() == "Off"  # nothing was switched
    with pytest.raises(ApiError) as exc:
        admin.nodes.power(node["id"], "on")
    assert exc.value.status == 409
    assert exc.value.code == "power_failed"
    assert "401" in exc.value.message
    with pytest.raises(ApiError) as inspected:
        admin.nodes.inspect(node["id"])
    assert inspected.value.code == "inspect_failed"
    events = admin.nodes.events(node["id"])["data"]
    said = json.dumps([node, shown, events, exc.value.message, inspected.value.message])
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    stored = everything_stored(db)
    for text in (said, logs, stored):
        assert WRONG not in text
    with db.transaction() as s:
        row = s.get(NodeRow, node["id"])
        assert row is not None
        assert row.driver_secret is not None
        assert app.state.secret_box.open(row.driver_secret) == {
            "bmc_username": BMC_USER,
            "bmc_password": WRONG,
        }


def test_power_off_while_a_tenant_is_on_the_node_needs_force(
    admin: Client, db: Database, emulator: Emulator
) -> None:
    wait_for(power_of(emulator, "busy"), "On")  # the other backend's run turned it back on
    node = register(admin, emulator, "busy")
    with db.transaction() as s:
        row = s.get(NodeRow, node["id"])
        assert row is not None
        row.state = "in_use"  # as compute leaves a node that runs a tenant's instance
    for action in ("off", "reset"):
        with pytest.raises(ApiError) as exc:
            admin.nodes.power(node["id"], action)
        assert exc.value.status == 409
        assert exc.value.code == "node_in_use"
        assert exc.value.details == {"state": "in_use", "action": action}
    assert power_of(emulator, "busy")() == "On"
    forced = admin.nodes.power(node["id"], "off", force=True)
    assert forced["forced"] is True
    wait_for(power_of(emulator, "busy"), "Off")
    assert admin.nodes.power(node["id"], "on")["forced"] is False  # on never hurts a tenant


runner = CliRunner()
cli_app = typer.Typer()
cli_app.add_typer(nodes_app, name="nodes")


def test_cli_nodes_power_and_inspect(
    admin: Client, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(STATE, "_client", admin)
    monkeypatch.setattr(output.out, "width", 200)
    password_file = tmp_path / "bmc-password"
    password_file.write_text(BMC_PASSWORD + "\n")
    args = ["nodes", "add", "bmc-cli", "--gpu-model", "H100", "--gpus", "8", "--vcpus", "224"]
    args += ["--ram-gib", "2048", "--driver", "redfish", "--bmc-url", emulator.url]
    args += ["--bmc-username", BMC_USER, "--bmc-password-file", str(password_file)]
    args += ["--system-id", uuid_of("cli")]
    topology = {**TOPOLOGY, "rack": "f1-b01-cli"}
    args += [a for k, v in topology.items() for a in ("--topology", f"{k}={v}")]
    added = runner.invoke(cli_app, [*args, "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["credentials"] == ["bmc_password", "bmc_username"]
    off = runner.invoke(cli_app, ["nodes", "power", "bmc-cli", "off"])
    assert off.exit_code == 0, off.output
    assert "power off accepted" in off.output
    wait_for(power_of(emulator, "cli"), "Off")
    shown = runner.invoke(cli_app, ["nodes", "inspect", "bmc-cli"])
    assert shown.exit_code == 0, shown.output
    assert uuid_of("cli") in shown.output
    assert "driver redfish (bmc)" in shown.output
    for result in (added, off, shown):
        assert BMC_PASSWORD not in result.output


# ------------------------------------------------------------------------ ssh and sim nodes


def test_an_ssh_node_cannot_be_powered_and_is_inspected_over_ssh(
    admin: Client,
    testhost: Callable[..., Host],
    operator_keypair: tuple[str, str, Any],
) -> None:
    private, public, _path = operator_keypair
    host = testhost(name="insp", gpus=2, authorized_key=public)
    node = admin.nodes.add(
        "ssh-inspect",
        gpu_model="H100",
        gpu_count=2,
        vcpus=4,
        ram_gib=8,
        topology=TOPOLOGY,
        driver_config={"address": host.address, "private_key": private},
    )
    with pytest.raises(ApiError) as exc:
        admin.nodes.power(node["id"], "off")
    assert exc.value.status == 409
    assert exc.value.code == "power_not_supported"
    seen = admin.nodes.inspect(node["id"])
    assert seen["source"] == "ssh"
    assert seen["simulated"] is False
    inventory = seen["inventory"]
    assert inventory["kernel"]
    assert inventory["cpus"]["count"] >= 1
    assert inventory["memory_gib"] > 0
    assert inventory["nvidia_smi"] == "ok"
    assert [g["index"] for g in inventory["gpus"]] == [0, 1]
    assert all(g["name"].startswith("NVIDIA H100") for g in inventory["gpus"])
    assert private.splitlines()[1] not in json.dumps(seen)
