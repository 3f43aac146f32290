"""What a tenant connects to (compute/access.py, pure): the ssh view of an instance and a
cluster's hosts in each tool's format, each checked by what reads it (OpenSSH's own parser,
``ssh -G``; YAML against the documented structure; ``ansible-inventory`` where installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from neocloud.compute import access
from neocloud.compute.access import Host, Member
from neocloud.drivers.base import Access
from neocloud.kernel.errors import ValidationFailed

V6 = "2001:db8::5f3a:1c2e"
SIM = Access(V6, 22, "ubuntu", (V6,), simulated=True).to_dict()
REAL = Access("203.0.113.10", 2222, "alice", ("203.0.113.10", "10.0.0.5")).to_dict()

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client here")


def ssh_g(*args: str) -> dict[str, str]:
    """What OpenSSH resolves for a destination, without connecting (``ssh -G``)."""
    done = subprocess.run(
        ["ssh", "-G", *args], capture_output=True, text=True, check=True, timeout=10
    )
    resolved: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        resolved.setdefault(key, value)
    return resolved


# ------------------------------------------------------------------------------ one instance


def test_ssh_view_only_while_running() -> None:
    view = access.ssh_view(SIM, "running")
    assert view == {
        "host": V6,
        "port": 22,
        "user": "ubuntu",
        "command": f"ssh -p 22 ubuntu@{V6}",
    }
    for state in ("pending", "provisioning", "stopping", "terminated", "failed", "preempted"):
        assert access.ssh_view(SIM, state) is None
    assert access.ssh_view(None, "running") is None


def test_addresses_while_the_machine_is_held_and_simulated_flag() -> None:
    assert access.addresses_of(REAL, "provisioning") == ["203.0.113.10", "10.0.0.5"]
    assert access.addresses_of(REAL, "running") == ["203.0.113.10", "10.0.0.5"]
    assert access.addresses_of(REAL, "terminated") == []
    assert access.addresses_of(None, "running") == []
    assert access.simulated_of(None) is None
    assert access.simulated_of(SIM) is True
    assert access.simulated_of(REAL) is False


@needs_ssh
@pytest.mark.parametrize("stored", [SIM, REAL])
def test_the_command_is_what_openssh_reads(stored: dict[str, Any]) -> None:
    view = access.ssh_view(stored, "running")
    assert view is not None
    argv = view["command"].split()
    assert argv[0] == "ssh"
    resolved = ssh_g(*argv[1:])
    assert (resolved["hostname"], resolved["port"], resolved["user"]) == (
        stored["host"],
        str(stored["port"]),
        stored["user"],
    )


# --------------------------------------------------------------------------- a cluster's hosts

HOSTS = [
    Host("train-0", "203.0.113.10", 22, "ubuntu", 8),
    Host("train-1", "203.0.113.11", 22, "ubuntu", 8),
]
SIM_HOSTS = [
    Host("train-0", "2001:db8::1", 22, "ubuntu", 8, simulated=True),
    Host("train-1", "2001:db8::2", 22, "ubuntu", 8, simulated=True),
]
# Behind one address on two ports (NAT), two users: the formats without a port use aliases.
NAT_HOSTS = [
    Host("train-0", "203.0.113.10", 2200, "ubuntu", 4),
    Host("train-1", "203.0.113.10", 2201, "root", 4),
]


def test_reachable_hosts_are_running_members_with_access() -> None:
    members = [
        Member("a-0", SIM, "running", 8),
        Member(None, REAL, "running", 8),
        Member("a-2", SIM, "provisioning", 8),
        Member("a-3", None, "running", 8),
    ]
    hosts = access.reachable_hosts(members)
    assert hosts == [
        Host("a-0", V6, 22, "ubuntu", 8, simulated=True),
        Host("node-1", "203.0.113.10", 2222, "alice", 8, simulated=False),
    ]


@needs_ssh
@pytest.mark.parametrize("hosts", [HOSTS, SIM_HOSTS, NAT_HOSTS])
def test_ssh_config_parses_with_openssh(hosts: list[Host], tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(access.render("ssh-config", hosts, name="train"))
    for h in hosts:
        resolved = ssh_g("-F", str(config), h.name)
        assert (resolved["hostname"], resolved["port"], resolved["user"]) == (
            h.host,
            str(h.port),
            h.user,
        )
    text = config.read_text()
    assert "IdentityFile" not in text
    assert "StrictHostKeyChecking" not in text


@needs_ssh
def test_ssh_config_keeps_a_percent_literal(tmp_path: Path) -> None:
    config = tmp_path / "config"
    hosts = [Host("n-0", "fe80::1%eth0", 22, "ubuntu", 1)]
    config.write_text(access.render("ssh-config", hosts, name="c"))
    assert ssh_g("-F", str(config), "n-0")["hostname"] == "fe80::1%eth0"


def _hostfile_pool(text: str) -> dict[str, int]:
    """The hostfile as DeepSpeed's launcher reads it: '#' lines and blank lines skipped, then
    ``HOST slots=N`` per line, each host once."""
    pool: dict[str, int] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\S+)\s+slots=(\d+)", line)
        assert match, line
        assert match.group(1) not in pool
        pool[match.group(1)] = int(match.group(2))
    return pool


def test_hostfile_lists_addresses_and_gpus() -> None:
    text = access.render("hostfile", HOSTS, name="train")
    assert _hostfile_pool(text) == {"203.0.113.10": 8, "203.0.113.11": 8}
    assert "SIMULATED" not in text


def test_hostfile_uses_aliases_when_ports_differ() -> None:
    text = access.render("hostfile", NAT_HOSTS, name="train")
    assert _hostfile_pool(text) == {"train-0": 4, "train-1": 4}
    assert "ssh-config" in text  # says where the aliases come from


def test_ansible_inventory_structure() -> None:
    data = yaml.safe_load(access.render("ansible", SIM_HOSTS, name="train"))
    assert set(data) == {"all"}
    assert data["all"]["hosts"] == {
        "train-0": {
            "ansible_host": "2001:db8::1",
            "ansible_port": 22,
            "ansible_user": "ubuntu",
            "neocloud_gpus": 8,
        },
        "train-1": {
            "ansible_host": "2001:db8::2",
            "ansible_port": 22,
            "ansible_user": "ubuntu",
            "neocloud_gpus": 8,
        },
    }


@pytest.mark.skipif(shutil.which("ansible-inventory") is None, reason="ansible not installed")
def test_ansible_inventory_parses_with_ansible(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(access.render("ansible", NAT_HOSTS, name="train"))
    done = subprocess.run(
        ["ansible-inventory", "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    hostvars = json.loads(done.stdout)["_meta"]["hostvars"]
    assert hostvars["train-1"]["ansible_port"] == 2201


def test_dstack_fleet_structure() -> None:
    data = yaml.safe_load(access.render("dstack", HOSTS, name="Train Run"))
    assert (data["type"], data["name"], data["placement"]) == ("fleet", "train-run", "cluster")
    ssh = data["ssh_config"]
    assert ssh["user"] == "ubuntu"
    assert ssh["identity_file"] == access.IDENTITY_FILE_PLACEHOLDER
    assert ssh["hosts"] == [
        {"hostname": "203.0.113.10", "port": 22},
        {"hostname": "203.0.113.11", "port": 22},
    ]


def test_dstack_per_host_user_when_users_differ() -> None:
    data = yaml.safe_load(access.render("dstack", NAT_HOSTS, name="clu_01ABC"))
    assert data["name"] == "clu-01abc"
    assert "user" not in data["ssh_config"]
    assert data["ssh_config"]["hosts"][1] == {
        "hostname": "203.0.113.10",
        "port": 2201,
        "user": "root",
    }


def test_skypilot_pool_structure() -> None:
    text = access.render("skypilot", SIM_HOSTS, name="train")
    data = yaml.safe_load(text)
    assert data == {
        "train": {
            "user": "ubuntu",
            "identity_file": access.IDENTITY_FILE_PLACEHOLDER,
            "hosts": ["2001:db8::1", "2001:db8::2"],
        }
    }
    nat = yaml.safe_load(access.render("skypilot", NAT_HOSTS, name="train"))["train"]
    assert nat["hosts"] == [{"ip": "train-0", "user": "ubuntu"}, {"ip": "train-1", "user": "root"}]


@pytest.mark.parametrize("fmt", access.FORMATS)
def test_every_format_says_simulated_addresses_are_unreachable(fmt: str) -> None:
    text = access.render(fmt, SIM_HOSTS, name="train")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("SIMULATED" in line and "no server answers" in line for line in comments)
    assert "SIMULATED" not in access.render(fmt, HOSTS, name="train")


@pytest.mark.parametrize("fmt", ["ansible", "dstack", "skypilot"])
def test_yaml_formats_keep_the_placeholder_documented(fmt: str) -> None:
    text = access.render(fmt, HOSTS, name="train")
    if fmt != "ansible":
        assert any(
            line.startswith("#") and access.IDENTITY_FILE_PLACEHOLDER in line
            for line in text.splitlines()
        )
    assert yaml.safe_load(text)  # comments and all, it is one YAML document


def test_unknown_format_names_the_param() -> None:
    with pytest.raises(ValidationFailed) as caught:
        access.render("csv", HOSTS, name="train")
    assert (caught.value.param, caught.value.code) == ("format", "unknown_format")
    assert "ssh-config" in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("train", "train"), ("clu_01JX", "clu-01jx"), ("9 lives", "c-9-lives"), ("", "c")],
)
def test_slug(text: str, expected: str) -> None:
    assert access.slug(text) == expected
