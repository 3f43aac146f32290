"""scripts/testhost: a test host is a real SSH server that leaves the machine untouched.

Each test starts real hosts (namespaces, an overlay root, sshd) and checks one promise of
docs/testhosts.md: its own hostname, users, /tmp and processes; hosts and the machine reach
each other over nctest0; ``down`` and a failed ``up`` leave no trace.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import (
    Host,
    load_testhost_script,
    run_testhost,
    unique_name,
    wait_for_port,
)

Keypair = tuple[str, str, Path]
MakeHost = Callable[..., Host]
script = load_testhost_script()


def traces(name: str) -> list[str]:
    """Whatever of host NAME is left on the machine: netns, veth, mounts, state dir."""
    left = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    if any(line.split()[0] == f"nc-{name}" for line in netns.stdout.splitlines() if line.strip()):
        left.append(f"netns nc-{name}")
    if Path(f"/sys/class/net/{script.veth_name(name)}").exists():
        left.append(f"veth {script.veth_name(name)}")
    state = script.state_dir(name)
    mounts = Path("/proc/mounts").read_text().splitlines()
    left += [m for m in mounts if f"{state}/" in m or f"nc-{name} " in m or f"nctest-{name} " in m]
    if state.exists():
        left.append(f"state dir {state}")
    return left


def test_ssh_login_reaches_the_host_and_the_machine_keeps_its_hostname(
    testhost: MakeHost, operator_keypair: Keypair
) -> None:
    machine = socket.gethostname()
    host = testhost(authorized_key=operator_keypair[1])
    assert host.address.startswith("10.231.")
    assert host.port == 22
    done = host.ssh(operator_keypair[2], "hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == host.name
    assert socket.gethostname() == machine
    # Its own host key, not the machine's: the machine's keys are deleted in the overlay.
    own = (host.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    assert own != Path("/etc/ssh/ssh_host_ed25519_key.pub").read_text(errors="replace")


def test_password_login_and_unknown_keys_are_refused(
    testhost: MakeHost, operator_keypair: Keypair, tmp_path: Path
) -> None:
    host = testhost(authorized_key=operator_keypair[1])
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    assert host.ssh(other, "true").returncode == 255
    config = host.exec("sshd -T").stdout
    assert "permitrootlogin without-password" in config
    assert "passwordauthentication no" in config


def test_users_made_inside_stay_in_the_overlay_and_can_log_in(
    testhost: MakeHost, operator_keypair: Keypair
) -> None:
    machine_passwd = Path("/etc/passwd").read_text()
    host = testhost(authorized_key=operator_keypair[1])
    user = "nctestuser"
    made = host.exec(
        f"useradd -m -s /bin/bash {user} && mkdir -m 700 /home/{user}/.ssh && "
        f"cat > /home/{user}/.ssh/authorized_keys && chown -R {user}: /home/{user}/.ssh",
        input=operator_keypair[1],
    )
    assert made.returncode == 0, made.stderr
    assert host.ssh(operator_keypair[2], "whoami", user=user).stdout.strip() == user
    assert Path("/etc/passwd").read_text() == machine_passwd
    assert not Path(f"/home/{user}").exists()
    assert f"{user}:" in (host.root.parent / "upper/etc/passwd").read_text()


def test_tmp_inside_is_its_own(testhost: MakeHost) -> None:
    host = testhost()
    marker = f"{host.name}-marker"
    assert host.exec(f"echo inside > /tmp/{marker} && cat /tmp/{marker}").stdout == "inside\n"
    assert not Path(f"/tmp/{marker}").exists()


def test_kill_everything_inside_spares_the_machine_and_sshd_comes_back(
    testhost: MakeHost, operator_keypair: Keypair
) -> None:
    host = testhost(authorized_key=operator_keypair[1])
    machine_sleep = subprocess.Popen(["sleep", "300"])
    try:
        # An orphan inside (reparented to the host's init) and the host's own PID namespace.
        host.exec("setsid sleep 300 >/dev/null 2>&1 < /dev/null &")
        assert host.exec("pgrep -x sleep").returncode == 0
        host.exec(["kill", "-9", "-1"])
        assert machine_sleep.poll() is None, "a process of the machine was killed from inside"
        deadline = time.monotonic() + 5
        while host.exec("pgrep -x sleep").returncode == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert host.exec("pgrep -x sleep").returncode == 1
        assert host.exec("cat /proc/1/cmdline").stdout.split("\0")[2] == "_init"
        # Like a server's init, the host's restarts sshd when something kills it.
        assert wait_for_port(host.address, 22)
        assert host.ssh(operator_keypair[2], "hostname").stdout.strip() == host.name
    finally:
        machine_sleep.kill()
        machine_sleep.wait()


def test_the_host_sees_only_its_own_processes(testhost: MakeHost) -> None:
    host = testhost()
    pids = [int(p) for p in host.exec("ls /proc").stdout.split() if p.isdigit()]
    assert 1 in pids
    assert len(pids) < 10, pids  # init, sshd, the ls and its shell: not the machine's hundreds


def test_two_hosts_reach_each_other_over_ssh(testhost: MakeHost, operator_keypair: Keypair) -> None:
    private, public, _ = operator_keypair
    a = testhost("a", authorized_key=public)
    b = testhost("b", authorized_key=public)
    put = a.exec("umask 077 && cat > /root/.ssh/id_ed25519", input=private)
    assert put.returncode == 0, put.stderr
    ssh = "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes"
    done = a.exec(f"{ssh} root@{b.address} hostname")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b.name
    assert b.exec(f"bash -c 'echo > /dev/tcp/{a.address}/22'").returncode == 0


def test_exec_passes_stdin_output_and_status(testhost: MakeHost) -> None:
    host = testhost()
    done = host.exec("cat; echo err >&2; exit 7", input="hello\n")
    assert (done.returncode, done.stdout, done.stderr) == (7, "hello\n", "err\n")
    listed = [json.loads(line) for line in run_testhost("list").stdout.splitlines()]
    mine = next(h for h in listed if h["name"] == host.name)
    assert mine["address"] == host.address
    assert mine["alive"] is True


def test_fake_nvidia_smi_only_with_gpus(testhost: MakeHost) -> None:
    gpu = testhost("gpu", gpus=2)
    rows = gpu.exec("nvidia-smi --query-gpu=index,name,uuid,memory.used --format=csv,noheader")
    lines = rows.stdout.splitlines()
    assert len(lines) == 2
    assert [line.split(", ")[:2] for line in lines] == [
        ["0", "NVIDIA H100 80GB HBM3"],
        ["1", "NVIDIA H100 80GB HBM3"],
    ]
    assert all(line.split(", ")[2].startswith("GPU-") for line in lines)
    assert all(line.endswith(", 0 MiB") for line in lines)
    apps = gpu.exec("nvidia-smi --query-compute-apps=pid --format=csv,noheader")
    assert (apps.returncode, apps.stdout) == (0, "")
    plain = testhost("nogpu")
    assert plain.exec("command -v nvidia-smi").returncode != 0


def test_kill_1_takes_the_host_down(testhost: MakeHost) -> None:
    host = testhost()
    host.exec("kill 1")
    deadline = time.monotonic() + 5
    while wait_for_port(host.address, 22, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not wait_for_port(host.address, 22, timeout=0.3)
    assert host.exec("true").returncode == 255  # exec says the host is not running


def test_down_leaves_nothing_and_is_idempotent(testhost: MakeHost) -> None:
    host = testhost()
    assert traces(host.name), "a running host should show up in the traces"
    for _ in range(2):
        done = run_testhost("down", host.name)
        assert done.returncode == 0, done.stderr
        assert traces(host.name) == []
    assert run_testhost("down", unique_name("never")).returncode == 0


def test_up_with_an_address_in_use_leaves_nothing(testhost: MakeHost) -> None:
    first = testhost()
    name = unique_name("clash")
    done = run_testhost("up", name, "--address", first.address)
    assert done.returncode == 1
    assert "already in use" in done.stderr
    assert traces(name) == []
    assert wait_for_port(first.address, 22, timeout=1)  # the first host is untouched


def test_up_with_a_taken_name_leaves_the_existing_host_alone(testhost: MakeHost) -> None:
    host = testhost()
    done = run_testhost("up", host.name)
    assert done.returncode == 1
    assert "already exists" in done.stderr
    assert host.exec("hostname").stdout.strip() == host.name


@pytest.mark.parametrize("step", ["network", "overlay", "init"])
def test_up_failing_midway_leaves_nothing(testhost_support: None, step: str) -> None:
    name = unique_name(f"fail-{step}")
    done = subprocess.run(
        [sys.executable, str(script.__file__), "up", name],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", script.FAIL_AFTER_ENV: step},
    )
    try:
        assert done.returncode == 1
        assert f"after step '{step}'" in done.stderr
        assert traces(name) == []
    finally:
        run_testhost("down", name)
