"""Create-time checks of what a machine boots with (image, SSH keys, user data), for instances
and clusters: each bad value is a precise 422 naming the field, and nothing is stored; good
values are stored as the reconciler hands them to the driver (on both backends)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from neocloud.client import ApiError, Client
from neocloud.compute import images
from neocloud.compute.tables import ClusterRow, ComputeEventRow, InstanceRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.fleet import service as fleet_service
from neocloud.fleet.domain import CheckStatus
from neocloud.fleet.service import CheckResult
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import VirtualClock
from neocloud.tenancy.ssh_key_format import parse_public_key

from .helpers import tenant_client

SCRIPT = "#!/bin/sh\necho hello > /tmp/hello\n"
CLOUD_CONFIG = "#cloud-config\npackages:\n  - htop\nruncmd:\n  - [touch, /tmp/ok]\n"


def public_key(comment: str = "me@laptop") -> str:
    key = Ed25519PrivateKey.generate().public_key()
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{raw.decode()} {comment}"


@pytest.fixture(autouse=True)
def catalog(db: Database, clock: VirtualClock) -> list[str]:
    return images.seed_catalog(db=db, clock=clock)


def _counts(db: Database) -> tuple[int, ...]:
    with db.transaction() as s:
        return tuple(
            s.scalar(sa.select(sa.func.count()).select_from(t)) or 0
            for t in (InstanceRow, ClusterRow, ComputeEventRow)
        )


def _refused(db: Database, call: Callable[[], Any]) -> ApiError:
    """The error ``call`` answers; asserts that it stored nothing."""
    before = _counts(db)
    with pytest.raises(ApiError) as info:
        call()
    assert _counts(db) == before, "a refused create stored something"
    return info.value


def _row(db: Database, instance_id: str) -> InstanceRow:
    with db.transaction() as s:
        row = s.get(InstanceRow, instance_id)
        assert row is not None
        return row


# ------------------------------------------------------------------------------------ refusals

BIG_SCRIPT = "#!/bin/sh\n# " + "é" * 33_000  # 33,012 characters, 66,012 bytes in UTF-8

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"image": "no-such-image"}, "image", "image_not_found"),
    ({"image": "Bad Name!"}, "image", "invalid_image_name"),
    ({"user_data": BIG_SCRIPT}, "user_data", "user_data_too_large"),
    ({"user_data": "echo hi\n"}, "user_data", "invalid_user_data"),
    ({"user_data": "echo hi\n#!/bin/sh"}, "user_data", "invalid_user_data"),
    ({"user_data": "#cloud-config\nruncmd: [unclosed\n"}, "user_data", "invalid_user_data"),
    ({"user_data": "#cloud-config\n- a list\n"}, "user_data", "invalid_user_data"),
    ({"user_data": "#cloud-config\n"}, "user_data", "invalid_user_data"),
    ({"image": "host-os", "user_data": CLOUD_CONFIG}, "user_data", "cloud_init_unavailable"),
    ({"ssh_keys": ["ssh-ed25519 AAAAnotakey"]}, "ssh_keys", "invalid_ssh_key"),
    ({"ssh_keys": ["not a key at all"]}, "ssh_keys", "unsupported_key_type"),
    ({"ssh_key_ids": ["sshkey_01JZZZZZZZZZZZZZZZZZZZZZZZ"]}, "ssh_key_ids", "ssh_key_not_found"),
    ({"ssh_key_ids": ["inst_1"]}, "ssh_key_ids", "ssh_key_not_found"),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD)
def test_bad_instance_input_is_precise_and_stores_nothing(
    acme: Client, db: Database, fields: dict[str, Any], param: str, code: str
) -> None:
    refused = _refused(db, lambda: acme.post("instances", {"instance_type": "1xH100", **fields}))
    assert (refused.status, refused.param, refused.code) == (422, param, code), refused.message


# The same checks run for clusters (one function); one case per field here.
CLUSTER_BAD = [BAD[0], BAD[2], BAD[8], BAD[9], BAD[11]]


@pytest.mark.parametrize(("fields", "param", "code"), CLUSTER_BAD)
def test_bad_cluster_input_is_precise_and_stores_nothing(
    acme: Client, db: Database, fields: dict[str, Any], param: str, code: str
) -> None:
    body = {"gpu_model": "H100", "node_count": 2, **fields}
    refused = _refused(db, lambda: acme.post("clusters", body))
    assert (refused.status, refused.param, refused.code) == (422, param, code), refused.message


def test_cloud_config_on_an_image_without_cloud_init_says_so(acme: Client, db: Database) -> None:
    refused = _refused(
        db, lambda: acme.instances.create("1xH100", image="host-os", user_data=CLOUD_CONFIG)
    )
    assert "host-os has no cloud-init" in refused.message


def test_the_second_bad_key_is_named_by_position(acme: Client, db: Database) -> None:
    refused = _refused(
        db, lambda: acme.instances.create("1xH100", ssh_keys=[public_key(), "ssh-rsa AAAA"])
    )
    assert refused.param == "ssh_keys"
    assert refused.message.startswith("ssh_keys[1]: ")


def test_a_pasted_private_key_is_refused_and_never_repeated(acme: Client, db: Database) -> None:
    private = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    body = private.splitlines()[1]  # one line of it: the field takes one line
    refused = _refused(db, lambda: acme.instances.create("1xH100", ssh_keys=[body]))
    assert refused.param == "ssh_keys"
    assert body not in refused.message


def test_another_orgs_key_id_reads_as_an_unknown_one(
    acme: Client, fleet: Client, db: Database
) -> None:
    _, other = tenant_client(fleet, "other")
    theirs = other.ssh_keys.add("theirs", public_key())["id"]
    unknown = "sshkey_01JZZZZZZZZZZZZZZZZZZZZZZZ"
    a = _refused(db, lambda: acme.instances.create("1xH100", ssh_key_ids=[theirs]))
    b = _refused(db, lambda: acme.instances.create("1xH100", ssh_key_ids=[unknown]))
    assert (
        (a.status, a.code, a.param)
        == (b.status, b.code, b.param)
        == (
            422,
            "ssh_key_not_found",
            "ssh_key_ids",
        )
    )
    assert a.message.replace(theirs, "ID") == b.message.replace(unknown, "ID")


def test_too_many_key_ids_are_refused_by_the_schema(acme: Client, db: Database) -> None:
    ids = [f"sshkey_{i}" for i in range(17)]
    refused = _refused(db, lambda: acme.instances.create("1xH100", ssh_key_ids=ids))
    assert (refused.status, refused.param) == (422, "ssh_key_ids")


# ------------------------------------------------------------------------------- what is stored


def test_keys_are_resolved_merged_and_deduplicated(acme: Client, db: Database) -> None:
    mine = public_key("laptop")
    added = acme.ssh_keys.add("laptop", mine)
    extra = public_key("ci")
    same_key_other_comment = mine.rsplit(" ", 1)[0] + " other-comment"
    inst = acme.instances.create(
        "1xH100",
        ssh_key_ids=[added["id"], added["id"]],
        ssh_keys=[same_key_other_comment, extra, extra],
    )
    assert inst["ssh_keys"] == 2
    row = _row(db, inst["id"])
    assert row.ssh_key_ids == [added["id"]]
    assert row.ssh_keys == [parse_public_key(mine).line, parse_public_key(extra).line]


def test_user_data_script_and_cloud_config_are_stored_as_sent(acme: Client, db: Database) -> None:
    script = acme.instances.create("1xH100", image="host-os", user_data=SCRIPT)
    assert _row(db, script["id"]).user_data == SCRIPT.strip()
    config = acme.instances.create("1xH100", user_data=CLOUD_CONFIG)
    row = _row(db, config["id"])
    assert (row.image, row.login_user) == ("ubuntu-22.04-cuda-12.4", "ubuntu")
    assert (row.user_data or "").startswith("#cloud-config")
    exact = "#!/bin/sh\n# " + "é" * 32_700  # 65,412 bytes: under 64 KiB
    assert _row(db, acme.instances.create("1xH100", user_data=exact)["id"]).user_data == exact


def test_a_cluster_gives_every_member_its_image_keys_and_user_data(
    acme: Client, db: Database, worker: Worker, clock: VirtualClock
) -> None:
    key = acme.ssh_keys.add("laptop", public_key())
    c = acme.clusters.create("H100", 3, image="host-os", ssh_key_ids=[key["id"]], user_data=SCRIPT)
    with db.transaction() as s:
        cluster = s.get(ClusterRow, c["id"])
        assert cluster is not None
        assert cluster.user_data == SCRIPT.strip()
    members = [_row(db, n["instance_id"]) for n in c["nodes"]]
    assert len(members) == 3
    for m in members:
        assert (m.image, m.login_user, m.ssh_key_ids) == ("host-os", "ubuntu", [key["id"]])
        assert m.ssh_keys == [key["public_key"]]
        assert m.user_data == SCRIPT.strip()
    # A member lost to a node failure is replaced by one that boots the same way.
    worker.run_once()
    lost = acme.clusters.get(c["id"])["nodes"][0]["node_id"]
    fleet_service.report_health(
        db=db, clock=clock, node_id=lost, checks=[CheckResult("gpu", CheckStatus.FAIL, "Xid 79")]
    )
    worker.run_once()
    worker.run_once()
    nodes = acme.clusters.get(c["id"])["nodes"]
    fresh = [
        _row(db, n["instance_id"]) for n in nodes if n["instance_id"] not in {m.id for m in members}
    ]
    assert len(fresh) == 1
    r = fresh[0]
    assert (r.image, r.login_user, r.ssh_key_ids) == ("host-os", "ubuntu", [key["id"]])
    assert (r.ssh_keys, r.user_data) == ([key["public_key"]], SCRIPT.strip())


# ------------------------------------------------------------------------------------------ CLI


def test_cli_create_takes_image_key_ids_and_a_user_data_file(
    acme: Client, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from neocloud.cli.compute import APPS
    from neocloud.cli.state import STATE

    app = typer.Typer()
    for name, sub in APPS.items():
        app.add_typer(sub, name=name)
    monkeypatch.setattr(STATE, "_client", acme)
    key = acme.ssh_keys.add("laptop", public_key())
    script = tmp_path / "boot.sh"
    script.write_text(SCRIPT)
    result = CliRunner().invoke(
        app,
        ["instances", "create", "1xH100", "--image", "host-os", "--ssh-key-id", key["id"],
         "--user-data", str(script), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = _row(db, json.loads(result.stdout)["id"])
    assert (row.image, row.ssh_key_ids, row.user_data) == ("host-os", [key["id"]], SCRIPT.strip())
    big = tmp_path / "big.sh"
    big.write_bytes(b"#!/bin/sh\n" + b"#" * 65_536)
    before = _counts(db)
    refused = CliRunner().invoke(app, ["instances", "create", "1xH100", "--user-data", str(big)])
    assert refused.exit_code == 2
    assert "64 KiB" in refused.output
    config = tmp_path / "c.yaml"
    config.write_text(CLOUD_CONFIG)
    refused = CliRunner().invoke(
        app,
        ["clusters", "create", "H100", "--nodes", "2", "--image", "host-os",
         "--user-data", str(config)],
    )  # fmt: skip
    assert refused.exit_code != 0
    assert "cloud_init_unavailable" in refused.output
    assert _counts(db) == before


def test_an_image_must_run_on_the_drivers_of_the_models_nodes(acme: Client, db: Database) -> None:
    """Every H100 node here is run by the ssh driver, which does not reimage: a named image it
    cannot run is refused naming ``image``; without one, the first image it runs is taken (the
    instance says which), not the catalog's default."""
    with db.transaction() as s:
        s.execute(sa.update(NodeRow).values(driver="ssh"))
    err = _refused(db, lambda: acme.instances.create("8xH100", image="ubuntu-22.04-cuda-12.4"))
    assert (err.status, err.param, err.code) == (422, "image", "image_not_runnable")
    assert "ssh" in err.message
    created = acme.instances.create("8xH100")
    assert created["image"] == "host-os"
    assert _row(db, created["id"]).login_user == "ubuntu"
