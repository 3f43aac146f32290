"""The ``ssh`` driver against real servers: test hosts (``scripts/testhost``) with a real sshd,
driven by the driver over paramiko, and checked with the real ``ssh`` client and from inside
the host. The pure parts (settings, names, output parsing) are tested without a host first.

The test hosts have no GPU: ``--gpus N`` gives them a stand-in ``nvidia-smi`` (see
scripts/testhost). Their reboot is a reboot(2) restart of the host's PID namespace (a new
PID 1; see ``reboot_node`` below for what that does and does not exercise).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from neocloud.drivers import ssh_commands as sc
from neocloud.drivers.base import Login, NodeRef, ProvisionRequest
from neocloud.drivers.ssh import SshDriver
from neocloud.drivers.ssh_session import SshStepError, load_private_key
from neocloud.kernel.secrets import SecretBox

from .conftest import TESTHOST_REBOOT, Host, load_testhost_script

BOX = SecretBox(SecretBox.new_key())


def keypair(tmp_path: Path, name: str, kind: str = "ed25519") -> tuple[str, str, Path]:
    path = tmp_path / name
    extra = ["-b", "3072"] if kind == "rsa" else []
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), path.with_suffix(".pub").read_text(), path


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ubuntu", "_svc", "a", "dev-1", "x" * 32])
def test_posix_user_names_pass(name: str) -> None:
    assert sc.valid_user(name) == name


@pytest.mark.parametrize(
    "name", ["", "Root", "1abc", "-rf", "a b", "a;b", "a.b", "x" * 33, "$(id)", "ü"]
)
def test_other_user_names_are_refused(name: str) -> None:
    with pytest.raises(sc.SshConfigError, match="not a POSIX user name"):
        sc.valid_user(name)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("My Box", "my-box"), ("gpu_01.train", "gpu-01-train"), ("-a-", "a"), ("x" * 80, "x" * 63)],
)
def test_hostnames_become_labels(given: str, expected: str) -> None:
    assert sc.safe_hostname(given) == expected


def test_a_hostname_without_letters_is_refused() -> None:
    with pytest.raises(sc.SshConfigError):
        sc.safe_hostname("___")


@pytest.mark.parametrize(
    "path", ["/", "//", "/etc", "/usr/lib", "/home", "/var/tmp/../..", "relative", "/proc/1"]
)
def test_system_dirs_are_never_scratch(path: str) -> None:
    with pytest.raises(sc.SshConfigError):
        sc.valid_scratch_path(path)


def test_scratch_paths_are_normalised() -> None:
    assert sc.valid_scratch_path("/scratch/./a/") == "/scratch/a"
    assert sc.valid_scratch_path("/mnt/nvme0") == "/mnt/nvme0"
    assert sc.valid_scratch_path("/var/tmp/") == "/var/tmp"
    assert sc.valid_scratch_path("/dev/shm") == "/dev/shm"


def test_node_settings_defaults_and_errors() -> None:
    cfg = sc.SshNodeConfig.from_mapping({"address": "10.0.0.5"})
    assert (cfg.port, cfg.user, cfg.gpu_check, cfg.sudo) == (22, "root", "nvidia-smi", True)
    assert cfg.reboot_command == "systemctl reboot"
    assert cfg.endpoint == "10.0.0.5:22"
    assert sc.SshNodeConfig.from_mapping({"address": "fd00::5", "port": 2222}).endpoint == (
        "[fd00::5]:2222"
    )
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "'address' is required"),
        ({"address": "-oProxyCommand=x"}, "'address'"),
        ({"address": "h", "port": 0}, "'port'"),
        ({"address": "h", "port": True}, "'port'"),
        ({"address": "h", "user": "bad user"}, "'user'"),
        ({"address": "h", "gpu_check": "maybe"}, "'gpu_check'"),
        ({"address": "h", "sudo": "yes"}, "'sudo'"),
        ({"address": "h", "scratch_paths": "/scratch"}, "'scratch_paths'"),
        ({"address": "h", "scratch_paths": ["/etc"]}, "system directory"),
        ({"address": "h", "host_key": "not a key"}, "host_key"),
        ({"address": "h", "reboot_command": " "}, "'reboot_command'"),
    ]
    for config, message in bad:
        with pytest.raises(sc.SshConfigError, match=message):
            sc.SshNodeConfig.from_mapping(config)


def test_host_key_lines_and_known_hosts_lines_parse() -> None:
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIBqSS5m0kYy5x1yY5dGvq3a1m1c2aYcGjv5c9S3m8dQf"
    assert sc.parse_host_key(f"ssh-ed25519 {blob} root@h") == sc.HostKey("ssh-ed25519", blob)
    assert sc.parse_host_key(f"10.0.0.5 ssh-ed25519 {blob}") == sc.HostKey("ssh-ed25519", blob)


def test_public_keys_are_one_line_each() -> None:
    assert sc.public_key_lines(["ssh-ed25519 AAAA a\n", "", "ssh-rsa BBBB"]) == (
        "ssh-ed25519 AAAA a\nssh-rsa BBBB\n"
    )
    with pytest.raises(sc.SshConfigError, match="more than one line"):
        sc.public_key_lines(["ssh-ed25519 AAAA a\nssh-ed25519 CCCC evil"])
    with pytest.raises(sc.SshConfigError, match="no public key"):
        sc.public_key_lines([])


def test_gpu_listing_parses() -> None:
    out = "0, NVIDIA H100 80GB HBM3, GPU-aa, 0 MiB\n1, NVIDIA H100 80GB HBM3, GPU-bb, 3 MiB\n\n"
    gpus = sc.parse_gpus(out)
    assert [g.index for g in gpus] == ["0", "1"]
    assert gpus[1] == sc.Gpu("1", "NVIDIA H100 80GB HBM3", "GPU-bb", "3 MiB")
    assert sc.describe_gpus([]) == "none"


def test_output_tail_is_safe_text() -> None:
    data = b"x" * 5000 + b"\xff\xfe bad utf8 \x1b[31mred\x1b[0m\ttab\nend\x00"
    tail = sc.output_tail(data)
    assert len(tail.encode()) <= sc.OUTPUT_TAIL_BYTES + 8  # replacement characters are 3 bytes
    assert "\x1b" not in tail
    assert "\x00" not in tail
    assert tail.endswith("tab\nend")
    assert "\ufffd" in tail


def test_boot_marker_and_user_data_kinds() -> None:
    assert sc.parse_boot_marker("abc-def\n12345\n") == "abc-def/12345"
    with pytest.raises(sc.SshConfigError):
        sc.parse_boot_marker("only-one")
    assert sc.user_data_kind("#!/bin/bash\n") == "script"
    assert sc.user_data_kind("#cloud-config\n") == "cloud-config"
    with pytest.raises(sc.SshConfigError, match="must start with"):
        sc.user_data_kind("echo hi")


def test_scripts_quote_every_value() -> None:
    line = sc.assign(LOGIN="a'; rm -rf / #", N=3)
    assert line == "LOGIN='a'\"'\"'; rm -rf / #'\nN=3\n"
    assert sc.as_root("id", "root") == "sh -c id"
    assert sc.as_root("id -u", "ops") == "sudo -n -- sh -c 'id -u'"


def test_private_keys_load_and_errors_never_quote_them(tmp_path: Path) -> None:
    for kind in ("ed25519", "ecdsa", "rsa"):
        private, _, _ = keypair(tmp_path, f"k-{kind}", kind)
        assert load_private_key(private).get_name()
    garbage = "\n".join(
        [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "c2VjcmV0LXNlY3JldA==",
            "-----END OPENSSH PRIVATE KEY-----",
        ]
    )
    with pytest.raises(SshStepError) as caught:
        load_private_key(garbage)
    assert "c2VjcmV0" not in str(caught.value)
    path = tmp_path / "locked"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "pass phrase", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(SshStepError, match="passphrase"):
        load_private_key(path.read_text())


def test_power_and_sharing() -> None:
    driver = SshDriver(BOX)
    node = NodeRef("n", "gpu-1", "H100", 8, "ssh", {"address": "10.231.255.254"})
    result = driver.power(node, on=True)
    assert result.ok
    assert result.message == "the ssh driver does not switch power"
    assert driver.shares_nodes is False


def test_bad_credentials_and_settings_fail_precisely() -> None:
    driver = SshDriver(BOX, connect_timeout_s=1)
    base = NodeRef("n", "gpu-9", "H100", 8, "ssh", {"address": "10.231.255.254"})
    cases = [
        (base, "no operator key is registered"),
        (
            NodeRef(**{**_fields(base), "sealed": SecretBox(SecretBox.new_key()).seal({})}),
            "cannot be opened with this platform's secret key",
        ),
        (NodeRef(**{**_fields(base), "sealed": BOX.seal({"user": "x"})}), "no private_key"),
        (NodeRef(**{**_fields(base), "config": {"port": 22}}), "'address' is required"),
    ]
    for node, message in cases:
        result = driver.wipe(node)
        assert not result.ok
        assert message in (result.message or "")
        assert (result.message or "").startswith("node gpu-9")
        health = driver.health(node)
        assert not health.ok
        assert message in (health.message or "")


def _fields(node: NodeRef) -> dict[str, Any]:
    return {name: getattr(node, name) for name in NodeRef.__slots__}


# --- on real test hosts --------------------------------------------------------------------------


class Rig:
    """A driver, the operator key, and nodes for test hosts; every private key it made is
    checked absent from every log record and message at the end of the test."""

    def __init__(self, tmp_path: Path, testhost: Callable[..., Host], **timeouts: float) -> None:
        self.tmp_path, self.make_host = tmp_path, testhost
        self.operator, self.operator_pub, self.operator_path = keypair(tmp_path, "operator")
        self.tenant, self.tenant_pub, self.tenant_path = keypair(tmp_path, "tenant")
        self.secrets = [self.operator, self.tenant]
        self.messages: list[str] = []
        options = {"connect_timeout_s": 5.0, "kill_timeout_s": 2.0, "reboot_poll_s": 0.5}
        self.driver = SshDriver(BOX, **{**options, **timeouts})

    def host(self, gpus: int = 8, key: str | None = None, **kw: Any) -> Host:
        return self.make_host(name="sd", gpus=gpus, authorized_key=key or self.operator_pub, **kw)

    def node(self, host: Host, gpus: int = 8, private: str | None = None, **config: Any) -> NodeRef:
        settings = {"address": host.address, "port": host.port, **config}
        sealed = BOX.seal({"private_key": private or self.operator})
        return NodeRef(
            f"node-{host.name}", f"gpu-{host.name}", "H100", gpus, "ssh", settings, sealed
        )

    def request(
        self, user_data: str | None = None, sudo: bool = True, wid: str = "inst_t1"
    ) -> ProvisionRequest:
        login = Login("ubuntu", (self.tenant_pub,), sudo)
        return ProvisionRequest(wid, tuple(range(8)), "Tenant Box", login, None, user_data)

    def ssh(self, host: Host, cmd: str, user: str = "ubuntu") -> subprocess.CompletedProcess[str]:
        return host.ssh(self.tenant_path, cmd, user=user)

    def keep(self, message: str | None) -> str:
        self.messages.append(message or "")
        return message or ""


@pytest.fixture
def rig(
    tmp_path: Path, testhost: Callable[..., Host], caplog: pytest.LogCaptureFixture
) -> Iterator[Rig]:
    caplog.set_level(logging.DEBUG)
    made = Rig(tmp_path, testhost)
    yield made
    seen = caplog.text + "\n".join(made.messages)
    for secret in made.secrets:
        body = [line for line in secret.splitlines() if line and not line.startswith("-----")]
        assert secret not in seen
        assert not any(line in seen for line in body), "a private key reached a log or message"


def user_exists(host: Host, user: str = "ubuntu") -> bool:
    return host.exec(f"id {user}").returncode == 0


def test_health_passes_with_the_declared_gpus(rig: Rig) -> None:
    host = rig.host(gpus=8)
    health = rig.driver.health(rig.node(host))
    assert health.ok, health.message
    assert health.checks == {"reachable": "pass", "command": "pass", "disk": "pass", "gpu": "pass"}


def test_health_fails_when_fewer_gpus_answer_than_declared(rig: Rig) -> None:
    host = rig.host(gpus=4)
    health = rig.driver.health(rig.node(host, gpus=8))
    assert not health.ok
    assert health.checks["gpu"] == "fail"
    message = rig.keep(health.message)
    assert "nvidia-smi lists 4 GPUs, the node declares 8" in message
    assert "NVIDIA H100 80GB HBM3" in message
    assert "GPU-" in message


def test_gpu_check_none_skips_only_the_gpus(rig: Rig) -> None:
    host = rig.host(gpus=0)
    health = rig.driver.health(rig.node(host, gpus=0, gpu_check="none"))
    assert health.ok
    assert health.checks["gpu"] == "warn"
    assert health.checks["disk"] == "pass"
    assert health.message == "gpu check skipped (gpu_check: none)"
    missing = rig.driver.health(rig.node(host, gpus=0))
    assert not missing.ok
    assert "nvidia-smi is not installed" in rig.keep(missing.message)


def test_provision_gives_the_tenant_a_login_with_sudo_and_runs_user_data(rig: Rig) -> None:
    host = rig.host()
    node = rig.node(host)
    script = (
        "#!/bin/sh\nset -e\necho 'user data ran' > /home/ubuntu/ready.txt\necho done-$((40+2))\n"
    )
    step = rig.driver.provision(node, rig.request(script))
    assert step.ok, step.message
    assert step.access is not None
    assert step.access.to_dict() == {
        "host": host.address,
        "port": 22,
        "user": "ubuntu",
        "addresses": [host.address],
        "simulated": False,
    }
    assert step.notes[0] == "user data exited 0"
    assert "done-42" in step.notes[1]
    login = rig.ssh(host, "cat ~/ready.txt && sudo -n true && echo SUDO && hostname")
    assert login.returncode == 0, login.stderr
    assert login.stdout.split() == ["user", "data", "ran", "SUDO", "tenant-box"]
    inside = host.exec(
        "stat -c '%a %U' /home/ubuntu/.ssh /home/ubuntu/.ssh/authorized_keys"
        " /etc/sudoers.d/neocloud-ubuntu; getent passwd ubuntu | cut -d: -f5"
    )
    assert inside.stdout.split("\n")[:4] == [
        "700 ubuntu",
        "600 ubuntu",
        "440 root",
        "neocloud tenant inst_t1",
    ]
    # Provision again for the same workload (a retried step): the user data does not run twice.
    host.exec("rm /home/ubuntu/ready.txt")
    again = rig.driver.provision(node, rig.request(script))
    assert again.ok
    assert host.exec("test -e /home/ubuntu/ready.txt").returncode == 1


def test_sudo_off_gives_no_sudo(rig: Rig) -> None:
    host = rig.host()
    step = rig.driver.provision(rig.node(host, sudo=False), rig.request())
    assert step.ok, step.message
    assert rig.ssh(host, "id -un").stdout.strip() == "ubuntu"
    assert rig.ssh(host, "sudo -n true").returncode != 0
    assert host.exec("test -e /etc/sudoers.d/neocloud-ubuntu").returncode == 1


def test_user_data_that_fails_undoes_the_login(rig: Rig) -> None:
    host = rig.host()
    script = "#!/bin/bash\necho preparing\necho 'disk not found' >&2\nexit 3\n"
    step = rig.driver.provision(rig.node(host), rig.request(script))
    message = rig.keep(step.message)
    assert not step.ok
    assert not step.repair
    assert message.startswith("user data exited 3: ")
    assert "disk not found" in message
    assert step.notes[0] == "user data exited 3"
    assert "preparing" in step.notes[1]
    assert not user_exists(host)
    assert "ubuntu" not in host.exec("ls /home /etc/sudoers.d").stdout
    assert host.exec("ls -A /var/lib/neocloud").stdout.strip() == ""
    assert rig.ssh(host, "true").returncode == 255


def test_cloud_config_needs_cloud_init_and_leaves_nothing(rig: Rig) -> None:
    host = rig.host()
    step = rig.driver.provision(rig.node(host), rig.request("#cloud-config\nruncmd: [ls]\n"))
    assert not step.ok
    assert "needs cloud-init, which this server does not have" in rig.keep(step.message)
    assert not user_exists(host)


def test_a_user_that_is_not_ours_is_never_taken_over(rig: Rig) -> None:
    host = rig.host()
    host.exec("useradd -m -c 'Ubuntu' ubuntu")
    step = rig.driver.provision(rig.node(host), rig.request())
    assert not step.ok
    assert "user ubuntu already exists and is not this workload's" in rig.keep(step.message)
    assert user_exists(host)  # left alone, home and all
    assert host.exec("test -d /home/ubuntu").returncode == 0
    gone = rig.driver.deprovision(rig.node(host), workload_id="inst_t1", login_user="ubuntu")
    assert gone.ok
    assert "not this workload's" in gone.notes[0]
    assert user_exists(host)


def test_an_unreachable_host_is_named_precisely(rig: Rig) -> None:
    host = rig.host()
    node = rig.node(host)
    host.exec("kill 1")  # sshd stops; the address still answers, with a refusal
    deadline = time.monotonic() + 15  # once its listening socket is closed (not at once)
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host.address, 22), timeout=1).close()
        except ConnectionRefusedError:
            break
        except OSError:
            pass
        time.sleep(0.1)
    step = rig.driver.provision(node, rig.request())
    assert not step.ok
    assert step.repair  # a node that cannot be reached takes no tenant until repaired
    assert rig.keep(step.message) == (
        f"node gpu-{host.name} ({host.address}:22) unreachable: connection refused"
    )
    health = rig.driver.health(node)
    assert not health.ok
    assert health.checks == {"reachable": "fail"}
    # Off the network altogether: its interface down, nothing answers at the address (the
    # host keeps the address reserved, so no other test's host takes it meanwhile, as after
    # `testhost down` under xdist).
    netns = load_testhost_script().netns_name(host.name)
    subprocess.run(["ip", "-n", netns, "link", "set", "eth0", "down"], check=True)
    down = rig.driver.provision(node, rig.request())
    assert rig.keep(down.message) in (
        f"node gpu-{host.name} ({host.address}:22) unreachable: no route to host",
        f"node gpu-{host.name} ({host.address}:22) unreachable: no answer within 5 s",
    )


def test_a_wrong_operator_key_is_refused_precisely(rig: Rig) -> None:
    host = rig.host()
    stranger, _, _ = keypair(rig.tmp_path, "stranger")
    rig.secrets.append(stranger)
    step = rig.driver.provision(rig.node(host, private=stranger), rig.request())
    assert rig.keep(step.message) == (
        f"node gpu-{host.name} ({host.address}:22) refused the operator key:"
        " authentication failed (user root)"
    )
    assert not user_exists(host)


def test_host_keys_pinned_or_trusted_on_first_use(rig: Rig) -> None:
    host = rig.host()
    real = (host.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    assert rig.driver.health(rig.node(host, host_key=real)).ok
    _, other, _ = keypair(rig.tmp_path, "impostor")
    pinned = rig.driver.health(rig.node(host, host_key=other))
    assert not pinned.ok
    assert "not the pinned SHA256:" in rig.keep(pinned.message)
    # First use: the key this driver saw first is the one it trusts; the same address
    # presenting another key later (the server's key replaced, sshd restarted) is refused.
    assert rig.driver.health(rig.node(host)).ok
    host.exec(
        "rm -f /etc/ssh/ssh_host_ed25519_key*"
        " && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key"
        " && pkill -KILL -f '^/usr/sbin/sshd -D'"  # testhost's init starts sshd again
    )
    deadline = time.monotonic() + 15
    changed = rig.driver.health(rig.node(host))
    while changed.ok and time.monotonic() < deadline:
        time.sleep(0.2)
        changed = rig.driver.health(rig.node(host))
    assert not changed.ok
    assert "the one it presented at first contact" in rig.keep(changed.message)
    fresh = SshDriver(BOX, connect_timeout_s=5)  # another process: first use again
    assert fresh.health(rig.node(host)).ok


def test_a_non_root_operator_works_through_sudo(rig: Rig) -> None:
    host = rig.host()
    host.exec(
        "useradd -m ops && install -d -m 700 -o ops /home/ops/.ssh"
        f" && printf '%s' '{rig.operator_pub.strip()}' > /home/ops/.ssh/authorized_keys"
        " && chown ops /home/ops/.ssh/authorized_keys"
    )
    node = rig.node(host, user="ops")
    refused = rig.driver.health(node)
    assert not refused.ok
    assert "the operator user ops cannot use sudo without a password" in rig.keep(refused.message)
    host.exec(
        "echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops && chmod 440 /etc/sudoers.d/ops"
    )
    assert rig.driver.health(node).ok
    step = rig.driver.provision(node, rig.request())
    assert step.ok, step.message
    assert rig.ssh(host, "sudo -n id -u").stdout.strip() == "0"


def test_deprovision_removes_the_login_its_home_and_its_processes(rig: Rig) -> None:
    host = rig.host()
    node = rig.node(host)
    assert rig.driver.provision(node, rig.request()).ok
    started = rig.ssh(
        host,
        "nohup sleep 1000 >/dev/null 2>&1 & setsid sleep 1001 </dev/null >/dev/null 2>&1 & echo ok",
    )
    assert started.stdout.strip() == "ok"
    assert host.exec("pgrep -u ubuntu sleep").stdout.split()
    step = rig.driver.deprovision(node, workload_id="inst_t1", login_user="ubuntu")
    assert step.ok, step.message
    assert rig.ssh(host, "true").returncode == 255  # the real client: the key is refused
    assert not user_exists(host)
    assert host.exec("test -e /home/ubuntu").returncode == 1
    assert host.exec("test -e /etc/sudoers.d/neocloud-ubuntu").returncode == 1
    assert host.exec("pgrep sleep").stdout.strip() == ""
    # Again (a retried step): nothing left to do is success.
    assert rig.driver.deprovision(node, workload_id="inst_t1", login_user="ubuntu").ok


def test_processes_that_cannot_be_killed_fail_deprovision_and_wipe(rig: Rig) -> None:
    host = rig.host()
    node = rig.node(host)
    assert rig.driver.provision(node, rig.request()).ok
    rig.ssh(host, "nohup sleep 1000 >/dev/null 2>&1 & echo ok")
    # A pkill that kills nothing, first on root's PATH: the processes survive every round.
    host.exec(
        "printf '#!/bin/sh\\nexit 0\\n' > /usr/local/sbin/pkill && chmod 755 /usr/local/sbin/pkill"
    )
    pids = host.exec("pgrep -u ubuntu").stdout.split()
    assert pids
    step = rig.driver.deprovision(node, workload_id="inst_t1", login_user="ubuntu")
    message = rig.keep(step.message)
    assert not step.ok
    assert message.startswith(
        f"node gpu-{host.name}: could not kill {len(pids)} processes of ubuntu: "
    )
    assert message.split(": ")[-1].split() == sorted(pids, key=int)
    assert user_exists(host)
    wipe = rig.driver.wipe(node)
    assert not wipe.ok
    assert f"processes of ubuntu: {' '.join(sorted(pids, key=int))}" in rig.keep(wipe.message)


def test_wipe_empties_tmp_and_scratch_and_removes_every_tenant(rig: Rig) -> None:
    host = rig.host()
    host.exec("mkdir -p /scratch/a/b && touch /scratch/a/b/f /scratch/.hidden")
    node = rig.node(host, scratch_paths=["/scratch", "/dev/shm"])
    assert rig.driver.provision(node, rig.request()).ok
    tenant = "touch /tmp/t1 /tmp/.x /dev/shm/nccl-x; mkdir -p /tmp/d/e; echo ok"
    assert rig.ssh(host, tenant).stdout.strip() == "ok"
    assert rig.ssh(host, "nohup sleep 1000 >/dev/null 2>&1 & echo ok").stdout.strip() == "ok"
    host.exec("useradd -m -c 'neocloud tenant inst_old' leftover")
    host.exec("useradd -m -c 'Operator' keepme")
    step = rig.driver.wipe(node)
    assert step.ok, step.message
    assert host.exec("ls -A /tmp /scratch /dev/shm").stdout.split() == [
        "/dev/shm:",
        "/scratch:",
        "/tmp:",
    ]
    assert host.exec("test -d /scratch").returncode == 0
    assert not user_exists(host)
    assert not user_exists(host, "leftover")
    assert user_exists(host, "keepme")
    assert host.exec("ls /home").stdout.split().count("keepme") == 1
    assert host.exec("hostname").stdout.strip() == f"gpu-{host.name}"


def test_wipe_refuses_a_scratch_path_that_leads_to_a_system_dir(rig: Rig) -> None:
    host = rig.host()
    host.exec("ln -s /etc /scratch")
    step = rig.driver.wipe(rig.node(host, scratch_paths=["/scratch", "/nowhere"]))
    message = rig.keep(step.message)
    assert not step.ok
    assert "system /scratch -> /etc" in message
    assert "missing /nowhere" in message
    assert host.exec("test -e /etc/passwd").returncode == 0


def test_reboot_brings_the_server_back_with_the_login_kept(rig: Rig) -> None:
    """What this exercises: the reboot command run detached as root, the connection lost,
    the driver waiting for SSH with a new boot marker (PID 1's start time; a test host shares
    the machine's kernel, so boot_id stays), the tenant's login surviving and /tmp emptied.
    What it does not: systemd's orderly shutdown (``systemctl reboot`` without --force), a
    real kernel boot, firmware."""
    host = rig.host()
    node = rig.node(host, reboot_command=TESTHOST_REBOOT)
    assert rig.driver.provision(node, rig.request()).ok
    rig.ssh(host, "touch ~/kept /tmp/lost")
    before = host.exec("cut -d' ' -f22 /proc/1/stat").stdout.strip()
    step = rig.driver.reboot(node, workload_id="inst_t1")
    assert step.ok, step.message
    assert "is back after" in (step.message or "")
    assert host.exec("cut -d' ' -f22 /proc/1/stat").stdout.strip() != before
    after = rig.ssh(host, "ls ~/kept && hostname && sudo -n true && ls -A /tmp")
    assert after.returncode == 0, after.stderr
    assert after.stdout.split() == ["/home/ubuntu/kept", "tenant-box"]


def test_a_reboot_that_never_comes_back_fails(rig: Rig) -> None:
    host = rig.host()
    rig.driver.reboot_timeout_s = 3
    # A "reboot" that does nothing: the server never presents a new boot marker.
    step = rig.driver.reboot(rig.node(host, reboot_command="true"), workload_id="inst_t1")
    assert not step.ok
    assert rig.keep(step.message) == (
        f"node gpu-{host.name} did not come back over SSH within 3 s after its reboot"
        " (it answers but has not restarted)"
    )


def test_root_and_leftover_homes_are_never_handed_over(rig: Rig) -> None:
    host = rig.host()
    node = rig.node(host)
    root = ProvisionRequest("inst_t1", (), "box", Login("root", (rig.tenant_pub,), True))
    step = rig.driver.provision(node, root)
    assert rig.keep(step.message) == (
        f"node gpu-{host.name}: provision: login user root is the operator's, never a tenant's"
    )
    host.exec("mkdir -p /home/ubuntu && echo previous > /home/ubuntu/notes")
    step = rig.driver.provision(node, rig.request())
    assert not step.ok
    assert "/home/ubuntu exists without its user" in rig.keep(step.message)
    assert not user_exists(host)
    # A system account given a tenant comment (the tenant had root) is reported, not removed.
    host.exec("rm -rf /home/ubuntu; usermod -c 'neocloud tenant inst_x' daemon")
    wipe = rig.driver.wipe(node)
    assert not wipe.ok
    assert "user daemon (uid 1) has a tenant comment but is not a tenant user" in rig.keep(
        wipe.message
    )
    assert user_exists(host, "daemon")
