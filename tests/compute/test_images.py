"""The image catalog: the built-in seed, reads for everyone, the operator's publish, update and
retire, one default, and what an instance takes from its image (on both backends)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from neocloud.client import ApiError, Client
from neocloud.compute import images
from neocloud.compute.tables import ImageRow, InstanceRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import VirtualClock

from .helpers import tenant_client

DEFAULT = "ubuntu-22.04-cuda-12.4"


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


@pytest.fixture
def catalog(db: Database, clock: VirtualClock) -> list[str]:
    return images.seed_catalog(db=db, clock=clock)


def _stored(db: Database, instance_id: str) -> InstanceRow:
    with db.transaction() as s:
        row = s.get(InstanceRow, instance_id)
        assert row is not None
        return row


def _defaults(db: Database) -> list[str]:
    with db.transaction() as s:
        return list(s.scalars(sa.select(ImageRow.name).where(ImageRow.is_default.is_(True))))


def test_the_seed_is_a_small_honest_catalog_published_once(
    db: Database, clock: VirtualClock, admin: Client
) -> None:
    assert admin.images.list()["data"] == []
    assert images.seed_catalog(db=db, clock=clock) == [
        DEFAULT,
        "ubuntu-24.04-cuda-12.8",
        "host-os",
    ]
    assert images.seed_catalog(db=db, clock=clock) == []  # idempotent
    listed = {i["name"]: i for i in admin.images.list()["data"]}
    assert sorted(listed) == sorted([DEFAULT, "ubuntu-24.04-cuda-12.8", "host-os"])
    assert [n for n, i in listed.items() if i["is_default"]] == [DEFAULT]
    default = listed[DEFAULT]
    assert (default["object"], default["os"], default["cuda_toolkit"]) == (
        "image",
        "Ubuntu 22.04",
        "12.4",
    )
    assert default["cloud_init"] is True
    assert default["drivers"] == ["sim", "redfish"]
    host = listed["host-os"]
    assert (host["cloud_init"], host["drivers"], host["login_user"]) == (
        False,
        ["ssh", "sim"],
        "ubuntu",
    )
    assert "no reimage" in host["description"]
    assert "does not reimage" in default["description"]


def test_tenants_read_the_catalog_and_cannot_change_it(catalog: list[str], acme: Client) -> None:
    assert {i["name"] for i in acme.images.list()["data"]} == set(catalog)
    assert acme.images.get("host-os")["login_user"] == "ubuntu"
    missing = _error(acme.images.get, "no-such-image")
    assert (missing.status, missing.code, missing.param) == (404, "image_not_found", "name")
    for call in (
        lambda: acme.images.publish("mine", os="Debian 12", drivers=["sim"]),
        lambda: acme.images.update("host-os", description="mine now"),
        lambda: acme.images.retire("host-os"),
    ):
        refused = _error(call)
        assert (refused.status, refused.code) == (403, "operator_only")


def test_the_list_is_paged_by_name(catalog: list[str], admin: Client) -> None:
    first = admin.images.list(limit=2)
    assert [i["name"] for i in first["data"]] == sorted(catalog)[:2]
    assert first["has_more"] is True
    rest = admin.images.list(limit=2, after=first["next_cursor"])
    assert [i["name"] for i in rest["data"]] == sorted(catalog)[2:]
    assert rest["has_more"] is False


def test_publish_update_and_one_default(catalog: list[str], admin: Client, db: Database) -> None:
    made = admin.images.publish(
        "rocky-9-cuda-12.6",
        os="Rocky Linux 9",
        drivers=["redfish", "sim", "sim"],
        cuda_driver="560",
        cuda_toolkit="12.6",
        login_user="rocky",
        cloud_init=True,
        description="Rocky 9",
    )
    assert (made["drivers"], made["login_user"], made["is_default"]) == (
        ["redfish", "sim"],
        "rocky",
        False,
    )
    again = _error(admin.images.publish, "rocky-9-cuda-12.6", os="Rocky Linux 9", drivers=["sim"])
    assert (again.status, again.code, again.param) == (409, "image_exists", "name")
    assert admin.images.update("rocky-9-cuda-12.6", is_default=True)["is_default"] is True
    assert _defaults(db) == ["rocky-9-cuda-12.6"]
    assert admin.images.get(DEFAULT)["is_default"] is False
    new = admin.images.publish("debian-12", os="Debian 12", drivers=["ssh"], is_default=True)
    assert new["is_default"] is True
    assert _defaults(db) == ["debian-12"]
    changed = admin.images.update("host-os", description="the node's own OS", drivers=["ssh"])
    assert (changed["description"], changed["drivers"]) == ("the node's own OS", ["ssh"])
    off = _error(admin.images.update, "debian-12", is_default=False)
    assert (off.status, off.param) == (422, "is_default")


def test_the_first_image_published_is_the_default(admin: Client, db: Database) -> None:
    admin.images.publish("only-one", os="Ubuntu 22.04", drivers=["sim"])
    assert _defaults(db) == ["only-one"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"name": "Ubuntu"}, "name"),
        ({"name": "-lead"}, "name"),
        ({"name": "a" * 65}, "name"),
        ({"login_user": "root"}, "login_user"),
        ({"login_user": "Bad User"}, "login_user"),
        ({"drivers": ["vmware"]}, "drivers"),
        ({"drivers": []}, "drivers"),
    ],
)
def test_bad_images_are_refused_naming_the_field(
    admin: Client, db: Database, fields: dict[str, object], param: str
) -> None:
    body: dict[str, object] = {"name": "ok-image", "os": "Ubuntu 22.04", "drivers": ["sim"]}
    body |= fields
    refused = _error(admin.post, "images", body)
    assert (refused.status, refused.param) == (422, param), refused.message
    with db.transaction() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ImageRow)) == 0


def test_retire_keeps_running_instances_and_refuses_new_ones(
    catalog: list[str], admin: Client, acme: Client, worker: Worker
) -> None:
    inst = acme.instances.create("1xH100", image="ubuntu-24.04-cuda-12.8")
    worker.run_once()
    retired = admin.images.retire("ubuntu-24.04-cuda-12.8")
    assert retired["retired_at"] is not None
    assert admin.images.retire("ubuntu-24.04-cuda-12.8") == retired  # again: no change
    got = acme.instances.get(inst["id"])
    assert (got["state"], got["image"]) == ("running", "ubuntu-24.04-cuda-12.8")
    refused = _error(acme.instances.create, "1xH100", image="ubuntu-24.04-cuda-12.8")
    assert (refused.status, refused.code, refused.param) == (422, "image_retired", "image")
    names = {i["name"] for i in acme.images.list()["data"]}
    assert "ubuntu-24.04-cuda-12.8" not in names
    every = {i["name"] for i in acme.images.list(include_retired=True)["data"]}
    assert "ubuntu-24.04-cuda-12.8" in every
    assert acme.images.get("ubuntu-24.04-cuda-12.8")["retired_at"] is not None
    patched = _error(admin.images.update, "ubuntu-24.04-cuda-12.8", description="x")
    assert (patched.status, patched.code) == (409, "image_retired")
    again = _error(admin.images.publish, "ubuntu-24.04-cuda-12.8", os="x", drivers=["sim"])
    assert again.code == "image_exists"  # a name is never reused


def test_the_default_cannot_be_retired(catalog: list[str], admin: Client) -> None:
    refused = _error(admin.images.retire, DEFAULT)
    assert (refused.status, refused.code) == (409, "image_is_default")
    admin.images.update("host-os", is_default=True)
    assert admin.images.retire(DEFAULT)["retired_at"] is not None


def test_an_instance_takes_the_default_image_and_its_login_user(
    catalog: list[str], admin: Client, acme: Client, db: Database
) -> None:
    inst = acme.instances.create("1xH100")
    assert inst["image"] == DEFAULT
    assert _stored(db, inst["id"]).login_user == "ubuntu"
    admin.images.publish("rocky-9", os="Rocky Linux 9", drivers=["sim"], login_user="rocky")
    other = acme.instances.create("1xH100", image="rocky-9")
    assert (other["image"], _stored(db, other["id"]).login_user) == ("rocky-9", "rocky")


def test_an_empty_catalog_leaves_the_image_unset(acme: Client, db: Database) -> None:
    """No image published (a platform not started through ``prepare``): the instance runs
    whatever its node has, with the usual login user."""
    inst = acme.instances.create("1xH100")
    assert inst["image"] is None
    assert _stored(db, inst["id"]).login_user == "ubuntu"
    refused = _error(acme.instances.create, "1xH100", image="anything")
    assert (refused.status, refused.param) == (422, "image")


def test_another_org_reads_the_same_catalog(catalog: list[str], fleet: Client) -> None:
    _, other = tenant_client(fleet, "other")
    assert {i["name"] for i in other.images.list()["data"]} == set(catalog)


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import typer
    from typer.testing import CliRunner

    from neocloud.cli import output
    from neocloud.cli.images import APPS
    from neocloud.cli.state import STATE

    app = typer.Typer()
    for name, sub in APPS.items():
        app.add_typer(sub, name=name)
    monkeypatch.setattr(output.out, "width", 200)

    def run(client: Client, *args: str):  # type: ignore[no-untyped-def]
        monkeypatch.setattr(STATE, "_client", client)
        return CliRunner().invoke(app, list(args))

    return run


def test_cli_lists_gets_and_publishes(
    catalog: list[str], admin: Client, acme: Client, run_cli
) -> None:  # type: ignore[no-untyped-def]
    import json

    listed = run_cli(acme, "images", "list")
    assert listed.exit_code == 0, listed.output
    assert "host-os" in listed.stdout
    assert "Ubuntu 22.04" in listed.stdout
    got = run_cli(acme, "images", "get", "host-os", "--json")
    assert json.loads(got.stdout)["cloud_init"] is False
    denied = run_cli(acme, "images", "publish", "mine", "--os", "Debian 12", "--driver", "sim")
    assert denied.exit_code != 0
    assert "operator_only" in denied.output
    made = run_cli(
        admin,
        "images", "publish", "debian-12", "--os", "Debian 12", "--driver", "ssh",
        "--login-user", "debian", "--default", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["is_default"] is True
    updated = run_cli(admin, "images", "update", "host-os", "--description", "as is", "--json")
    assert json.loads(updated.stdout)["description"] == "as is"
    retired = run_cli(admin, "images", "retire", "ubuntu-24.04-cuda-12.8", "--json")
    assert json.loads(retired.stdout)["retired_at"] is not None
    every = run_cli(acme, "images", "list", "--retired", "--json")
    assert len(json.loads(every.stdout)) == 4
    missing = run_cli(admin, "images", "publish", "x", "--os", "y")
    assert missing.exit_code == 2


def test_the_first_start_seeds_the_catalog_and_a_restart_keeps_the_operators(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from neocloud.api.platform import prepare
    from neocloud.kernel.settings import load_settings

    clock = VirtualClock(datetime(2026, 3, 1, tzinfo=UTC))
    prepared = prepare(load_settings(data_dir=tmp_path), clock, demo_fleet=False)
    with prepared.db.transaction() as s:
        assert set(s.scalars(sa.select(ImageRow.name))) == {b.name for b in images.BUILTIN}
    operator = Principal("key", "usr", "org", Role.ADMIN, is_operator=True)
    images.update_image(
        db=prepared.db,
        clock=clock,
        actor=operator,
        name="host-os",
        changes=images.ImageChanges(is_default=True),
    )
    images.retire_image(db=prepared.db, clock=clock, actor=operator, name=DEFAULT)
    prepare(load_settings(data_dir=tmp_path), clock, demo_fleet=False)  # a restart
    assert _defaults(prepared.db) == ["host-os"]
    assert images.get_image(db=prepared.db, name=DEFAULT).retired_at is not None
    prepared.db.dispose()
