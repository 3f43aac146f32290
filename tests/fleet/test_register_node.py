"""Registering real servers: POST /api/v1/nodes, `neocloud nodes add`, driver settings in fleet
specs. The private key is write-only: it appears in no response, log record, audit row or
database column but the sealed one (where it is not in clear)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.fleet import fleet_app, nodes_app
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client
from neocloud.db.base import Base
from neocloud.db.engine import Database
from neocloud.fleet import service
from neocloud.fleet.spec import load_spec_file, parse_spec
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import ValidationFailed
from neocloud.kernel.secrets import SecretBox

TOPOLOGY = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "fabric": "f1",
    "block": "f1-b01",
    "rack": "f1-b01-r01",
}


def openssh_key(passphrase: bytes | None = None) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption
    ).decode()


def pem_rsa_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def host_key_line() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    raw = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return raw.decode() + " root@gpu-1"


def secret_parts(key: str) -> list[str]:
    """Pieces of the key's text that must never show up anywhere but sealed."""
    body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    return [line for line in body if len(line) >= 16]


@pytest.fixture
def key() -> str:
    return openssh_key()


def body(key: str, **over: Any) -> dict[str, Any]:
    config = {
        "address": "10.231.0.5",
        "port": 22,
        "user": "root",
        "private_key": key,
        "gpu_check": "none",
        "sudo": True,
        "scratch_paths": ["/scratch", "/data/tmp/"],
        "host_key": host_key_line(),
        "reboot_command": "systemctl reboot",
    }
    config.update(over.pop("driver_config", {}))
    out: dict[str, Any] = {
        "hostname": "gpu-1.example",
        "gpu_model": "H100",
        "gpu_count": 8,
        "vcpus": 224,
        "ram_gib": 2048,
        "nvme_gib": 30000,
        "topology": dict(TOPOLOGY),
        "labels": {"pool": "metal"},
        "driver": "ssh",
        "driver_config": {k: v for k, v in config.items() if v is not None},
    }
    out.update(over)
    return out


def post(http: TestClient, admin_key: str, payload: dict[str, Any]) -> Any:
    return http.post(
        "/api/v1/nodes", json=payload, headers={"Authorization": f"Bearer {admin_key}"}
    )


def everything_stored(db: Database) -> dict[str, str]:
    """Every table's rows as text, by table name."""
    out: dict[str, str] = {}
    with db.transaction() as s:
        for table in Base.metadata.sorted_tables:
            rows = s.execute(sa.select(table)).all()
            out[table.name] = "\n".join(repr(tuple(r)) for r in rows)
    return out


def test_register_an_ssh_node_and_the_key_stays_sealed(
    http: TestClient,
    admin_key: str,
    app: Any,
    db: Database,
    key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    payload = body(key)
    headers = {"Authorization": f"Bearer {admin_key}", "Idempotency-Key": "reg-1"}
    r = http.post("/api/v1/nodes", json=payload, headers=headers)
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["state"] == "enrolled"
    assert node["driver"] == "ssh"
    assert node["credentials"] == ["private_key"]
    assert node["driver_config"] == {
        "address": "10.231.0.5",
        "port": 22,
        "user": "root",
        "gpu_check": "none",
        "sudo": True,
        "scratch_paths": ["/scratch", "/data/tmp"],
        "host_key": payload["driver_config"]["host_key"],
        "reboot_command": "systemctl reboot",
    }
    assert node["gpu_model"] == "H100-SXM-80GB"
    assert node["topology"] == TOPOLOGY
    assert node["labels"] == {"pool": "metal"}
    # a replay answers the same, from the store (which never held the key)
    again = http.post("/api/v1/nodes", json=payload, headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == node["id"]
    auth = {"Authorization": f"Bearer {admin_key}"}
    responses = [
        r.text,
        again.text,
        http.get(f"/api/v1/nodes/{node['id']}", headers=auth).text,
        http.get("/api/v1/nodes", headers=auth).text,
        http.get(f"/api/v1/nodes/{node['id']}/events", headers=auth).text,
    ]
    events = json.loads(responses[-1])["data"]
    assert events[0]["to_state"] == "enrolled"
    assert events[0]["reason"] == "registered: driver ssh; credentials set: private_key"
    parts = secret_parts(key)
    assert parts
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    stored = everything_stored(db)
    with db.transaction() as s:
        row = s.scalars(sa.select(NodeRow).where(NodeRow.id == node["id"])).one()
        sealed = row.driver_secret
    assert sealed is not None
    box: SecretBox = app.state.secret_box
    assert box.open(sealed) == {"private_key": key.strip() + "\n"}
    for part in parts:
        for text in responses:
            assert part not in text
        assert part not in logs
        assert part not in sealed
        for table, text in stored.items():
            assert part not in text, f"the private key is in clear in table {table}"
    audit = stored["audit_events"]
    assert node["id"] in audit


def test_sdk_registers_and_a_hostname_is_unique(admin: Client, db: Database, key: str) -> None:
    b = body(key)
    node = admin.nodes.add(
        b["hostname"],
        gpu_model="h100",
        gpu_count=8,
        vcpus=224,
        ram_gib=2048,
        topology=TOPOLOGY,
        driver_config={"address": "gpu-1.example", "private_key": key},
    )
    assert node["driver_config"]["user"] == "root"
    assert node["driver_config"]["gpu_check"] == "nvidia-smi"
    assert node["driver_config"]["port"] == 22
    assert node["driver_config"]["sudo"] is True
    assert "private_key" not in json.dumps(node["driver_config"])
    with pytest.raises(ApiError) as exc:
        admin.nodes.add(
            b["hostname"],
            gpu_model="h100",
            gpu_count=8,
            vcpus=224,
            ram_gib=2048,
            topology=TOPOLOGY,
            driver_config={"address": "10.0.0.9", "private_key": key},
        )
    assert exc.value.status == 409
    assert exc.value.code == "duplicate_hostname"
    assert service.count_nodes(db=db) == 1
    sim = admin.nodes.add(
        "sim-1", gpu_model="H200", gpu_count=8, vcpus=96, ram_gib=1024,
        topology={**TOPOLOGY, "rack": "f1-b01-r02"}, driver="sim",
    )  # fmt: skip
    assert sim["driver"] == "sim"
    assert sim["credentials"] == []
    assert sim["driver_config"] == {}


def test_a_pem_rsa_key_works(admin: Client) -> None:
    node = admin.nodes.add(
        "gpu-2", gpu_model="H100", gpu_count=8, vcpus=224, ram_gib=2048, topology=TOPOLOGY,
        driver_config={"address": "2001:db8::5", "private_key": pem_rsa_key()},
    )  # fmt: skip
    assert node["credentials"] == ["private_key"]


def _bad_cases(key: str) -> list[tuple[dict[str, Any], str, int]]:
    """(request body, the param the answer names, status)."""
    long_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 17000 + "\n-----END"
    return [
        (body(key, driver_config={"address": None}), "driver_config.address", 422),
        (body(key, driver_config={"address": "bad address!"}), "driver_config.address", 422),
        (body(key, driver_config={"address": "-x.example"}), "driver_config.address", 422),
        (body(key, driver_config={"port": 0}), "driver_config.port", 422),
        (body(key, driver_config={"port": 70000}), "driver_config.port", 422),
        (body(key, driver_config={"port": "22"}), "driver_config.port", 422),
        (body(key, driver_config={"user": "Root User"}), "driver_config.user", 422),
        (body(key, driver_config={"private_key": None}), "driver_config.private_key", 422),
        (body(key, driver_config={"private_key": "not a key"}), "driver_config.private_key", 422),
        (body(key, driver_config={"private_key": long_key}), "driver_config.private_key", 422),
        (
            body(key, driver_config={"private_key": openssh_key(b"passphrase")}),
            "driver_config.private_key",
            422,
        ),
        (body(key, driver_config={"gpu_check": "dcgm"}), "driver_config.gpu_check", 422),
        (body(key, driver_config={"sudo": "yes"}), "driver_config.sudo", 422),
        (body(key, driver_config={"scratch_paths": ["/"]}), "driver_config.scratch_paths[0]", 422),
        (
            body(key, driver_config={"scratch_paths": ["/scratch", "/etc/x"]}),
            "driver_config.scratch_paths[1]",
            422,
        ),
        (
            body(key, driver_config={"scratch_paths": ["/lib64"]}),
            "driver_config.scratch_paths[0]",
            422,
        ),
        (
            body(key, driver_config={"scratch_paths": ["/home/u"]}),
            "driver_config.scratch_paths[0]",
            422,
        ),
        (
            body(key, driver_config={"scratch_paths": ["tmp"]}),
            "driver_config.scratch_paths[0]",
            422,
        ),
        (
            body(key, driver_config={"scratch_paths": ["/scratch/../etc"]}),
            "driver_config.scratch_paths[0]",
            422,
        ),
        (
            body(key, driver_config={"scratch_paths": [f"/s{i}" for i in range(9)]}),
            "driver_config.scratch_paths",
            422,
        ),
        (body(key, driver_config={"host_key": "ssh-ed25519 nope"}), "driver_config.host_key", 422),
        (
            body(key, driver_config={"reboot_command": "r" * 257}),
            "driver_config.reboot_command",
            422,
        ),
        (body(key, driver_config={"password": "x"}), "driver_config.password", 422),
        # ssh settings on a redfish node make it redfish + ssh, which needs the BMC login too
        (body(key, driver="redfish"), "driver_config.bmc_username", 422),
        (body(key, driver="ipmi"), "driver", 422),
        (body(key, driver="sim"), "driver_config.address", 422),
        (body(key, gpu_model="V100"), "gpu_model", 422),
        (body(key, gpu_count=0), "gpu_count", 422),
        (body(key, gpu_count=17), "gpu_count", 422),
        (body(key, vcpus=0), "vcpus", 422),
        (body(key, hostname="Not A Host"), "hostname", 422),
        (body(key, topology={**TOPOLOGY, "row": "x"}), "topology.row", 422),
        (body(key, topology={k: v for k, v in TOPOLOGY.items() if k != "rack"}), "topology", 422),
        (body(key, topology={**TOPOLOGY, "rack": "Bad_Name"}), "topology.rack", 422),
    ]


def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    http: TestClient, admin_key: str, db: Database, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = everything_stored(db)
    for payload, param, status in _bad_cases(key):
        r = post(http, admin_key, payload)
        assert r.status_code == status, (param, r.text)
        error = r.json()["error"]
        assert error["param"] == param, (param, r.text)
        for part in secret_parts(key):
            assert part not in r.text
    after = everything_stored(db)
    assert service.count_nodes(db=db) == 0
    for table, text in after.items():
        if table not in ("audit_events", "api_keys", "idempotency_keys", "rate_limits"):
            assert text == before[table], f"{table} changed on a refused registration"
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    for part in secret_parts(key):
        assert part not in logs
        assert part not in after["audit_events"]


def test_an_encrypted_key_says_so(http: TestClient, admin_key: str) -> None:
    r = post(http, admin_key, body("", driver_config={"private_key": openssh_key(b"secret")}))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "encrypted_private_key"
    assert "passphrase" in r.json()["error"]["message"]


def test_a_domain_under_another_parent_is_a_conflict(admin: Client, db: Database, key: str) -> None:
    admin.nodes.add(
        "a-1", gpu_model="H100", gpu_count=8, vcpus=1, ram_gib=1, topology=TOPOLOGY,
        driver_config={"address": "10.0.0.1", "private_key": key},
    )  # fmt: skip
    with pytest.raises(ApiError) as exc:
        admin.nodes.add(
            "a-2", gpu_model="H100", gpu_count=8, vcpus=1, ram_gib=1,
            topology={**TOPOLOGY, "fabric": "f2"},  # block f1-b01 under another fabric
            driver_config={"address": "10.0.0.2", "private_key": key},
        )  # fmt: skip
    assert exc.value.status == 409
    assert exc.value.code == "duplicate_domain"
    assert service.count_nodes(db=db) == 1


def test_tenants_cannot_register(http: TestClient, key: str) -> None:
    r = http.post("/api/v1/nodes", json=body(key))
    assert r.status_code == 401


# ------------------------------------------------------------------------------------ the CLI

runner = CliRunner()
cli_app = typer.Typer()
cli_app.add_typer(fleet_app, name="fleet")
cli_app.add_typer(nodes_app, name="nodes")


@pytest.fixture
def cli(admin: Client, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setattr(STATE, "_client", admin)
    monkeypatch.setattr(output.out, "width", 200)
    return runner


def _topology_args() -> list[str]:
    return [arg for k, v in TOPOLOGY.items() for arg in ("--topology", f"{k}={v}")]


def test_cli_nodes_add(cli: CliRunner, tmp_path: Path, key: str) -> None:
    key_file = tmp_path / "op_key"
    key_file.write_text(key)
    args = ["nodes", "add", "gpu-9", "--gpu-model", "H100", "--gpus", "8", "--vcpus", "224"]
    args += ["--ram-gib", "2048", "--nvme-gib", "30000", *_topology_args()]
    args += ["--address", "10.231.0.9", "--port", "2222", "--user", "ops"]
    args += ["--private-key-file", str(key_file), "--gpu-check", "none", "--no-sudo"]
    args += ["--scratch-path", "/scratch", "--label", "pool=metal"]
    result = cli.invoke(cli_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    node = json.loads(result.output)
    assert node["state"] == "enrolled"
    assert node["driver_config"]["port"] == 2222
    assert node["driver_config"]["user"] == "ops"
    assert node["driver_config"]["sudo"] is False
    assert node["driver_config"]["scratch_paths"] == ["/scratch"]
    shown = cli.invoke(cli_app, ["nodes", "get", "gpu-9"])
    assert shown.exit_code == 0, shown.output
    assert "private_key" in shown.output  # the credential's name, not its value
    for part in secret_parts(key):
        assert part not in result.output
        assert part not in shown.output
    bad = cli.invoke(cli_app, [*args[:2], "gpu-10", *args[3:], "--address", "no such!"])
    assert bad.exit_code != 0
    assert "driver_config.address" in bad.output


def test_cli_nodes_add_a_redfish_ssh_node(cli: CliRunner, tmp_path: Path, key: str) -> None:
    key_file = tmp_path / "op_key"
    key_file.write_text(key)
    password = tmp_path / "bmc.pw"
    password.write_text(BMC_PASSWORD + "\n")
    args = ["nodes", "add", "gpu-11", "--gpu-model", "H100", "--gpus", "8", "--vcpus", "224"]
    args += ["--ram-gib", "2048", *_topology_args(), "--driver", "redfish"]
    args += ["--bmc-url", "https://10.9.0.11", "--bmc-username", "admin"]
    args += ["--bmc-password-file", str(password), "--image-url", "https://img.example/os.iso"]
    args += ["--address", "10.231.0.11", "--private-key-file", str(key_file)]
    args += ["--gpu-check", "none"]
    result = cli.invoke(cli_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    node = json.loads(result.output)
    assert node["driver"] == "redfish"
    assert node["credentials"] == ["bmc_password", "bmc_username", "private_key"]
    assert node["driver_config"]["address"] == "10.231.0.11"
    assert node["driver_config"]["bmc_url"] == "https://10.9.0.11"
    assert BMC_PASSWORD not in result.output
    for part in secret_parts(key):
        assert part not in result.output


# --------------------------------------------------------------------------- fleet spec files

SPEC = """\
version: 1
templates:
  metal:
    gpu_model: H100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
    driver: ssh
    driver_config: {user: root, private_key_file: keys/op_key, gpu_check: none}
  sim:
    gpu_model: H100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - {name: f9, template: sim, blocks: 1, racks_per_block: 1, nodes_per_rack: 2}
    nodes:
      - hostname: metal-01
        template: metal
        topology: {fabric: f1, block: f1-b01, rack: f1-b01-r01}
        driver_config: {address: 10.231.0.11, scratch_paths: [/scratch]}
      - hostname: metal-02
        template: metal
        topology: {fabric: f1, block: f1-b01, rack: f1-b01-r01}
        driver_config: {address: 10.231.0.12, port: 2222}
"""


NODE0 = "sites[0].nodes[0].driver_config"


def _spec_dir(tmp_path: Path, key: str, text: str = SPEC) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "op_key").write_text(key)
    spec = tmp_path / "fleet.yaml"
    spec.write_text(text)
    return spec


def test_spec_file_with_ssh_nodes_imports_sealed(
    tmp_path: Path, db: Database, clock: VirtualClock, key: str
) -> None:
    spec = load_spec_file(_spec_dir(tmp_path, key))
    box = SecretBox(SecretBox.new_key())
    result = service.import_spec(db=db, clock=clock, spec=spec, box=box)
    assert result.nodes_created == 4
    with db.transaction() as s:
        rows = {r.hostname: r for r in s.scalars(sa.select(NodeRow))}
        one, two = rows["metal-01"], rows["metal-02"]
        assert one.driver == "ssh"
        assert rows["f9-b01-r01-n01"].driver == "sim"
        assert one.driver_config == {
            "address": "10.231.0.11", "port": 22, "user": "root", "gpu_check": "none",
            "sudo": True, "scratch_paths": ["/scratch"], "credentials": ["private_key"],
        }  # fmt: skip
        assert two.driver_config is not None
        assert two.driver_config["port"] == 2222
        assert one.driver_secret is not None
        assert box.open(one.driver_secret)["private_key"].strip() == key.strip()
        assert rows["f9-b01-r01-n01"].driver_secret is None
    for part in secret_parts(key):
        for text in everything_stored(db).values():
            assert part not in text


def test_spec_without_a_box_refuses_credentials(
    tmp_path: Path, db: Database, clock: VirtualClock, key: str
) -> None:
    spec = load_spec_file(_spec_dir(tmp_path, key))
    with pytest.raises(ValidationFailed):
        service.import_spec(db=db, clock=clock, spec=spec)
    assert service.count_nodes(db=db) == 0


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (("address: 10.231.0.11", "address: 'not valid!'"), f"{NODE0}.address"),
        (("keys/op_key", "keys/missing"), f"{NODE0}.private_key_file"),
        (("scratch_paths: [/scratch]", "scratch_paths: [/var]"), f"{NODE0}.scratch_paths[0]"),
        (("template: sim, blocks", "template: metal, blocks"), "sites[0].fabrics[0].template"),
        (("driver: ssh", "driver: ipmi"), "templates.metal.driver"),
    ],
)  # fmt: skip
def test_spec_driver_errors_name_the_field(
    tmp_path: Path, key: str, change: tuple[str, str], param: str
) -> None:
    path = _spec_dir(tmp_path, key, SPEC.replace(*change))
    with pytest.raises(ValidationFailed) as exc:
        load_spec_file(path)
    assert exc.value.param == param
    for part in secret_parts(key):
        assert part not in exc.value.message


def test_a_key_file_is_refused_in_a_spec_sent_as_text(
    admin: Client, tmp_path: Path, key: str
) -> None:
    with pytest.raises(ValidationFailed) as exc:
        parse_spec(SPEC)
    assert exc.value.param == "sites[0].nodes[0].driver_config.private_key_file"
    with pytest.raises(ApiError) as api_exc:
        admin.fleet.import_spec(SPEC)
    assert api_exc.value.status == 422
    assert api_exc.value.param == "sites[0].nodes[0].driver_config.private_key_file"


def test_cli_fleet_import_inlines_the_key_file(
    cli: CliRunner, tmp_path: Path, key: str, admin: Client
) -> None:
    path = _spec_dir(tmp_path, key)
    result = cli.invoke(cli_app, ["fleet", "import", str(path), "--initial-state", "enrolled"])
    assert result.exit_code == 0, result.output
    node = admin.nodes.list(hostname="metal-01")["data"][0]
    assert node["driver"] == "ssh"
    assert node["credentials"] == ["private_key"]
    assert node["state"] == "enrolled"
    for part in secret_parts(key):
        assert part not in result.output


def test_a_bmc_password_in_a_spec_is_refused(admin: Client) -> None:
    spec = SPEC.replace("private_key_file: keys/op_key, ", "").replace(
        "        driver_config: {address: 10.231.0.12, port: 2222}\n",
        "        bmc: {endpoint: 'https://bmc-2', password: hunter22}\n",
    )
    with pytest.raises(ApiError) as exc:
        admin.fleet.import_spec(spec)
    assert exc.value.status == 422
    assert exc.value.param == "sites[0].nodes[1].bmc.password"
    assert "hunter22" not in exc.value.message


def test_node_out_never_shows_more_of_a_bmc_than_where_it_answers(
    admin: Client, db: Database, key: str
) -> None:
    node = admin.nodes.add(
        "b-1", gpu_model="H100", gpu_count=8, vcpus=1, ram_gib=1, topology=TOPOLOGY,
        driver_config={"address": "10.0.0.1", "private_key": key},
    )  # fmt: skip
    with db.transaction() as s:
        row = s.get(NodeRow, node["id"])
        assert row is not None
        row.bmc = {"endpoint": "https://bmc-1", "vendor": "x", "password": "hunter22"}
        row.driver_config = {**(row.driver_config or {}), "private_key": "leaked"}
    shown = admin.nodes.get(node["id"])
    assert shown["bmc"] == {"endpoint": "https://bmc-1", "vendor": "x"}
    assert "leaked" not in json.dumps(shown)
    assert "hunter22" not in json.dumps(shown)


# ------------------------------------------------------------------------------ redfish nodes

BMC_PASSWORD = "s3cret Bmc-Pass phrase!"  # a space in it: taken as typed


def redfish_body(**over: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bmc_url": "https://bmc-7.example:8443/",
        "system_id": "System.Embedded.1",
        "verify_tls": False,
        "image_url": "https://images.example/ubuntu-24.04.iso",
        "reboot": "graceful",
        "bmc_username": "root",
        "bmc_password": BMC_PASSWORD,
    }
    config.update(over.pop("driver_config", {}))
    out = body("", hostname="gpu-7.example", driver="redfish", **over)
    out["driver_config"] = {k: v for k, v in config.items() if v is not None}
    return out


def test_register_a_redfish_node_and_the_bmc_password_stays_sealed(
    http: TestClient,
    admin_key: str,
    app: Any,
    db: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {admin_key}", "Idempotency-Key": "reg-bmc-1"}
    r = http.post("/api/v1/nodes", json=redfish_body(), headers=headers)
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["driver"] == "redfish"
    assert node["credentials"] == ["bmc_password", "bmc_username"]
    assert node["driver_config"] == {
        "bmc_url": "https://bmc-7.example:8443",
        "system_id": "System.Embedded.1",
        "verify_tls": False,
        "image_url": "https://images.example/ubuntu-24.04.iso",
        "boot_target": "cd",
        "reboot": "graceful",
    }
    again = http.post("/api/v1/nodes", json=redfish_body(), headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == node["id"]
    auth = {"Authorization": f"Bearer {admin_key}"}
    events = http.get(f"/api/v1/nodes/{node['id']}/events", headers=auth)
    assert events.json()["data"][0]["reason"] == (
        "registered: driver redfish; credentials set: bmc_password, bmc_username"
    )
    responses = [
        r.text,
        again.text,
        events.text,
        http.get(f"/api/v1/nodes/{node['id']}", headers=auth).text,
        http.get("/api/v1/nodes", headers=auth).text,
    ]
    logs = "\n".join(rec.getMessage() for rec in caplog.records)
    stored = everything_stored(db)
    with db.transaction() as s:
        sealed = s.get(NodeRow, node["id"]).driver_secret  # type: ignore[union-attr]
    assert sealed is not None
    assert app.state.secret_box.open(sealed) == {
        "bmc_username": "root",
        "bmc_password": BMC_PASSWORD,
    }
    for text in [*responses, logs, sealed, *stored.values()]:
        assert BMC_PASSWORD not in text
        assert "Bmc-Pass" not in text
    assert node["id"] in stored["audit_events"]


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"bmc_password": None}, "driver_config.bmc_password"),
        ({"bmc_username": None}, "driver_config.bmc_username"),
        ({"bmc_url": None}, "driver_config.bmc_url"),
        ({"bmc_url": "ftp://bmc"}, "driver_config.bmc_url"),
        ({"bmc_url": f"https://root:{BMC_PASSWORD}@bmc"}, "driver_config.bmc_url"),
        ({"image_url": None, "boot_target": "cd"}, "driver_config.image_url"),
        ({"boot_target": "floppy"}, "driver_config.boot_target"),
        ({"reboot": "gentle"}, "driver_config.reboot"),
        ({"system_id": "a b"}, "driver_config.system_id"),
        ({"verify_tls": "no"}, "driver_config.verify_tls"),
        ({"power_s": 7201}, "driver_config.power_s"),
        ({"bmc_password": "x" * 257}, "driver_config.bmc_password"),
        ({"bmc_password": "two\nlines"}, "driver_config.bmc_password"),
        ({"private_key": "k"}, "driver_config.address"),  # ssh settings need an address
        ({"address": "10.0.0.1"}, "driver_config.private_key"),  # and an operator key
        ({"address": "10.0.0.1", "private_key": "k"}, "driver_config.private_key"),
        ({"address": "-x", "private_key": "k"}, "driver_config.address"),
        ({"agent_recorded": "h100"}, "driver_config.agent_recorded"),
    ],
)  # fmt: skip
def test_bad_redfish_settings_name_the_field_and_never_the_password(
    http: TestClient, admin_key: str, db: Database, over: dict[str, Any], param: str
) -> None:
    r = post(http, admin_key, redfish_body(driver_config=over))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert BMC_PASSWORD not in r.text
    assert service.count_nodes(db=db) == 0


def test_a_redfish_ssh_node_keeps_both_settings_and_seals_both_logins(
    http: TestClient, admin_key: str, app: Any, db: Database, key: str
) -> None:
    over = {"address": "10.231.7.7", "private_key": key, "gpu_check": "none", "port": 2222}
    r = post(http, admin_key, redfish_body(driver_config=over))
    assert r.status_code == 201, r.text
    node = r.json()
    assert node["credentials"] == ["bmc_password", "bmc_username", "private_key"]
    config = node["driver_config"]
    assert config["address"] == "10.231.7.7"
    assert config["port"] == 2222
    assert config["image_url"] == "https://images.example/ubuntu-24.04.iso"
    assert "private_key" not in json.dumps(config)
    assert BMC_PASSWORD not in r.text
    with db.transaction() as s:
        sealed = s.get(NodeRow, node["id"]).driver_secret  # type: ignore[union-attr]
    assert sealed is not None
    assert set(app.state.secret_box.open(sealed)) == {"bmc_username", "bmc_password", "private_key"}
    # A reimage boots the image: a redfish + ssh node without one is refused.
    over = {**over, "image_url": None, "boot_target": "pxe"}
    r = post(http, admin_key, {**redfish_body(driver_config=over), "hostname": "gpu-8.example"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == "driver_config.image_url"


def test_an_ssh_setting_is_refused_for_sim_and_a_bmc_one_for_ssh(
    http: TestClient, admin_key: str, key: str
) -> None:
    r = post(http, admin_key, body(key, driver_config={"bmc_url": "https://bmc"}))
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "driver_config.bmc_url"


REDFISH_SPEC = """\
version: 1
templates:
  bmc:
    gpu_model: H200
    gpu_count: 8
    vcpus: 192
    ram_gib: 2048
    driver: redfish
    driver_config: {bmc_username: admin, bmc_password_file: secrets/bmc, verify_tls: false}
sites:
  - region: us-east-1
    zone: us-east-1a
    nodes:
      - hostname: bmc-01
        template: bmc
        topology: {fabric: f1, block: f1-b01, rack: f1-b01-r01}
        bmc: {endpoint: 'https://bmc-01.oob.example'}
      - hostname: bmc-02
        template: bmc
        topology: {fabric: f1, block: f1-b01, rack: f1-b01-r01}
        driver_config: {bmc_url: 'https://10.9.0.2', system_id: '1'}
"""


def test_spec_file_with_redfish_nodes(
    tmp_path: Path, db: Database, clock: VirtualClock, cli: CliRunner, admin: Client
) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "bmc").write_text(BMC_PASSWORD + "\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(REDFISH_SPEC)
    spec = load_spec_file(path)
    box = SecretBox(SecretBox.new_key())
    assert service.import_spec(db=db, clock=clock, spec=spec, box=box).nodes_created == 2
    with db.transaction() as s:
        rows = {r.hostname: r for r in s.scalars(sa.select(NodeRow))}
        one, two = rows["bmc-01"], rows["bmc-02"]
        assert one.driver == "redfish"
        assert one.driver_config == {
            "bmc_url": "https://bmc-01.oob.example", "verify_tls": False, "boot_target": "pxe",
            "reboot": "force", "credentials": ["bmc_password", "bmc_username"],
        }  # fmt: skip
        assert two.driver_config is not None
        assert two.driver_config["system_id"] == "1"
        assert two.driver_secret is not None
        assert box.open(two.driver_secret) == {
            "bmc_username": "admin",
            "bmc_password": BMC_PASSWORD,
        }
    assert BMC_PASSWORD not in "\n".join(everything_stored(db).values())
    # the CLI reads the password file and sends it inline; the server seals it
    with db.transaction() as s:
        s.execute(sa.delete(NodeRow))
    result = cli.invoke(cli_app, ["fleet", "import", str(path), "--initial-state", "enrolled"])
    assert result.exit_code == 0, result.output
    assert BMC_PASSWORD not in result.output
    node = admin.nodes.list(hostname="bmc-02")["data"][0]
    assert node["credentials"] == ["bmc_password", "bmc_username"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(REDFISH_SPEC.replace("secrets/bmc", "secrets/none"))
    with pytest.raises(ValidationFailed) as exc:
        load_spec_file(bad)
    assert exc.value.param == "sites[0].nodes[0].driver_config.bmc_password_file"
