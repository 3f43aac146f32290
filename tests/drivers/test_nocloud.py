"""The NoCloud seed image: built with pycdlib, read back with pycdlib, every file checked."""

from __future__ import annotations

import email
import io

import pycdlib
import pytest
import yaml

from neocloud.drivers.base import Login
from neocloud.drivers.nocloud import (
    Seed,
    SeedError,
    build_seed_iso,
    merge_cloud_config,
    read_seed_iso,
)

KEYS = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 alice@laptop", "ssh-rsa AAAAB3Nza bob")


def seed(**kw: object) -> Seed:
    base: dict[str, object] = {
        "instance_id": "inst_01HX",
        "hostname": "trainer-0",
        "login": Login("alice", KEYS, sudo=True),
    }
    base.update(kw)
    return Seed(**base)  # type: ignore[arg-type]


def read(iso: bytes) -> dict[str, bytes]:
    volume, files = read_seed_iso(iso)
    assert volume == "cidata"
    return files


def cloud_config(text: str) -> dict[str, object]:
    first, rest = text.split("\n", 1)
    assert first == "#cloud-config"
    doc = yaml.safe_load(rest)
    assert isinstance(doc, dict)
    return doc


def test_meta_data_and_login_without_user_data() -> None:
    files = read(build_seed_iso(seed()))
    assert sorted(files) == ["meta-data", "user-data"]
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": "inst_01HX",
        "local-hostname": "trainer-0",
    }
    doc = cloud_config(files["user-data"].decode())
    assert doc["users"] == [
        {
            "name": "alice",
            "ssh_authorized_keys": list(KEYS),
            "lock_passwd": True,
            "shell": "/bin/bash",
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
        }
    ]
    assert doc["ssh_pwauth"] is False
    assert doc["hostname"] == "trainer-0"


def test_no_sudo_and_root_login() -> None:
    files = read(build_seed_iso(seed(login=Login("bob", KEYS[:1], sudo=False))))
    user = cloud_config(files["user-data"].decode())["users"][0]  # type: ignore[index]
    assert "sudo" not in user
    assert user["name"] == "bob"
    files = read(build_seed_iso(seed(login=Login("root", KEYS[1:]))))
    doc = cloud_config(files["user-data"].decode())
    assert doc["disable_root"] is False
    assert doc["users"] == [{"name": "root", "ssh_authorized_keys": [KEYS[1]], "lock_passwd": True}]


def test_tenant_cloud_config_is_merged() -> None:
    tenant = (
        "#cloud-config\n"
        "packages: [htop]\n"
        "users:\n  - name: svc\n    ssh_authorized_keys: [ssh-ed25519 AAAA svc]\n"
        "runcmd: [[touch, /tmp/ran]]\n"
        "ssh_pwauth: false\n"
        "timezone: UTC\n"
    )
    files = read(build_seed_iso(seed(user_data=tenant)))
    doc = cloud_config(files["user-data"].decode())
    users = doc["users"]
    assert isinstance(users, list)
    assert [u["name"] for u in users] == ["alice", "svc"]  # ours first, theirs after
    assert doc["packages"] == ["htop"]
    assert doc["runcmd"] == [["touch", "/tmp/ran"]]
    assert doc["timezone"] == "UTC"


def test_merge_rules_as_a_table() -> None:
    ours = {"users": [1], "ssh_pwauth": False, "hostname": "a"}
    assert merge_cloud_config(ours, {}) == ours
    assert merge_cloud_config(ours, {"users": [2]})["users"] == [1, 2]
    assert merge_cloud_config(ours, {"hostname": "b"})["hostname"] == "b"
    assert merge_cloud_config(ours, {"users": "x"})["users"] == "x"  # not both lists: theirs
    assert ours["users"] == [1]  # the platform's document is not changed in place


def test_script_goes_as_a_mime_part() -> None:
    script = "#!/bin/bash\nset -e\necho 'héllo' > /root/first-boot\n"
    files = read(build_seed_iso(seed(user_data=script)))
    message = email.message_from_bytes(files["user-data"])
    assert message.is_multipart()
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 2
    assert parts[0].get_content_type() == "text/cloud-config"
    config = parts[0].get_payload(decode=True).decode()
    assert cloud_config(config)["users"][0]["name"] == "alice"  # type: ignore[index]
    assert parts[1].get_content_type() == "text/x-shellscript"
    assert parts[1].get_payload(decode=True).decode() == script


def test_network_config_when_given() -> None:
    net = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
    files = read(build_seed_iso(seed(network_config=net)))
    assert files["network-config"].decode() == net


def test_iso_names_for_every_reader() -> None:
    """ISO 9660 8.3 names, Rock Ridge and Joliet names: each reader sees the files."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(build_seed_iso(seed(network_config="version: 2\n"))))
    try:
        plain = sorted(
            c.file_identifier() for c in iso.list_children(iso_path="/") if not c.is_dir()
        )
        rock = sorted(c.rock_ridge.name() for c in iso.list_children(rr_path="/") if not c.is_dir())
        assert plain == [b"METADATA.;1", b"NETWORKC.;1", b"USERDATA.;1"]
        assert rock == [b"meta-data", b"network-config", b"user-data"]
        assert iso.has_joliet()
        assert iso.has_rock_ridge()
    finally:
        iso.close()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("echo hi\n", "must start with"),
        ("#cloud-config\n- a list\n", "mapping"),
        ("#cloud-config\nkey: [unclosed\n", "not YAML"),
    ],
)
def test_refused_user_data(text: str, why: str) -> None:
    with pytest.raises(SeedError, match=why):
        build_seed_iso(seed(user_data=text))
