"""Real SSH test hosts for the node (ssh driver) tests, built on ``scripts/testhost``.

``testhost(...)`` starts a host (its own network, PID, UTS and mount namespaces, an overlay of
the machine's ``/`` as its root, a real sshd at 10.231.X.Y:22) and returns a :class:`Host`;
every host a test made is destroyed when the test ends, failed or not. ``operator_keypair``
is a fresh ed25519 key pair, the login the platform's driver uses.

The Redfish emulator (``start_redfish_emulator``): ``sushy-emulator`` with its fake-systems
driver on a free loopback port behind HTTP basic auth (``BMC_USER``/``BMC_PASSWORD``), for the
redfish driver's tests and the platform's.

Test hosts need root, ``ip``, ``nsenter``/``unshare``, ``mount`` and OpenSSH (server and
client). Where the machine lacks any of them the tests are skipped, except under ``CI=true``,
where they fail with the reason. Host names carry the pytest-xdist worker id and this process's
pid, so parallel workers and concurrent test sessions never collide.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testhost"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SSH_OPTIONS = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "BatchMode=yes",
    "-o",
    "ConnectTimeout=5",
)


def load_testhost_script() -> ModuleType:
    """The script as a module, for its naming rules (veth names, state dir) in assertions."""
    loader = importlib.machinery.SourceFileLoader("testhost_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("testhost_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def run_testhost(
    *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/testhost ARGS`` and return its completed process (never raises on status).

    The script runs under this interpreter, not its ``env python3`` shebang: a pyenv shim costs
    about 0.3 s a call.
    """
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Restarts the host's PID namespace (reboot(2) in a child PID namespace ends its init with
# SIGHUP; scripts/testhost starts it again). The guard makes sure it only ever runs inside a
# test host, whose PID 1 is testhost's init, never on the machine running the tests.
TESTHOST_REBOOT = (
    "tr '\\000' ' ' < /proc/1/cmdline | grep -q 'testhost _init'"
    " && systemctl reboot --force --force"
)


@dataclass(frozen=True)
class Host:
    """A running test host as the machine sees it."""

    name: str
    address: str
    port: int
    root: Path  # the host's filesystem (its overlay), readable from the machine
    pid: int  # its init, in the machine's PID namespace

    def exec(
        self, cmd: str | Sequence[str], *, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run CMD inside the host (a string goes to ``sh -c``); stdout/stderr as text."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return run_testhost("exec", self.name, "--", *argv, input=input, timeout=timeout)

    def ssh(
        self, private_key: Path, cmd: str, *, user: str = "root", timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run CMD over SSH from the machine, as the platform would."""
        return subprocess.run(
            [
                "ssh",
                "-i",
                str(private_key),
                *SSH_OPTIONS,
                "-p",
                str(self.port),
                f"{user}@{self.address}",
                cmd,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _unsupported_reason() -> str | None:
    if os.geteuid() != 0:
        return "test hosts need root (namespaces, mounts, interfaces)"
    for tool in ("ip", "nsenter", "unshare", "mount", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"test hosts need `{tool}` (apt-get install iproute2 util-linux openssh-client)"
    if not Path("/usr/sbin/sshd").exists():
        return "test hosts need /usr/sbin/sshd (apt-get install openssh-server)"
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "--uts", "--pid", "--fork", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip()}"
    return None


# prefix-worker-pid-serial, as unique_name() makes them.
FIXTURE_NAME = re.compile(r"^.+-(?:gw\d+|main)-(?P<pid>\d+)-\d+$")


def down_leftovers() -> None:
    """Down the hosts of test sessions that died without their finalizers (killed, crashed)."""
    listed = run_testhost("list").stdout.splitlines()
    for host in (json.loads(line) for line in listed):
        match = FIXTURE_NAME.match(host["name"])
        if match and not Path(f"/proc/{match['pid']}").exists():
            run_testhost("down", host["name"])


@pytest.fixture(scope="session")
def testhost_support() -> None:
    """Skip (locally) or fail (under CI=true) when this machine cannot run test hosts."""
    reason = _unsupported_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"test hosts cannot run under CI: {reason}")
        pytest.skip(reason)
    down_leftovers()


_serial = itertools.count(1)


def unique_name(prefix: str = "th") -> str:
    """A host name no other xdist worker or test session uses: prefix-worker-pid-serial."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{prefix}-{worker}-{os.getpid()}-{next(_serial)}"


@pytest.fixture
def testhost(testhost_support: None) -> Iterator[Callable[..., Host]]:
    """Factory: ``testhost(name=None, gpus=0, authorized_key=None, address=None, binds=())
    -> Host`` (``binds``: the machine's directories shown read-only inside, ``up --bind``).

    ``name`` is a prefix (the worker id and a serial are appended); ``authorized_key`` is the
    public key text root logs in with. Every host made is downed at teardown.
    """
    made: list[str] = []

    def make(
        name: str | None = None,
        gpus: int = 0,
        authorized_key: str | None = None,
        address: str | None = None,
        binds: tuple[str, ...] = (),
    ) -> Host:
        host_name = unique_name(name or "th")
        args = ["up", host_name]
        key_file = None
        if authorized_key is not None:
            key_file = Path(f"/tmp/{host_name}.authorized_key")
            key_file.write_text(
                authorized_key if authorized_key.endswith("\n") else authorized_key + "\n"
            )
            args += ["--authorized-key", str(key_file)]
        if gpus:
            args += ["--gpus", str(gpus)]
        if address is not None:
            args += ["--address", address]
        for path in binds:
            args += ["--bind", path]
        made.append(host_name)
        try:
            done = run_testhost(*args)
        finally:
            if key_file is not None:
                key_file.unlink(missing_ok=True)
        if done.returncode != 0:
            raise RuntimeError(f"testhost up {host_name} failed: {done.stderr.strip()}")
        info = json.loads(done.stdout)
        return Host(info["name"], info["address"], info["port"], Path(info["root"]), info["pid"])

    yield make
    failures = []
    for host_name in made:
        done = run_testhost("down", host_name)
        if done.returncode != 0:
            failures.append(f"{host_name}: {done.stderr.strip()}")
    assert not failures, f"testhost down failed: {failures}"


@pytest.fixture
def operator_keypair(tmp_path: Path) -> tuple[str, str, Path]:
    """A fresh ed25519 key pair: (private key text, public key text, private key path)."""
    path = tmp_path / "operator_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "neocloud-operator", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_text(), path.with_suffix(".pub").read_text(), path


def wait_for_port(address: str, port: int, timeout: float = 10) -> bool:
    """True once something accepts TCP on address:port, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ------------------------------------------------------------------ the Redfish (BMC) emulator

BMC_USER = "bmc-admin"
BMC_PASSWORD = "Corr3ct-Horse-bmc"  # the emulator's test login


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Emulator:
    url: str
    log: Path

    def client(self, *, verify: bool | str = True) -> Any:
        """An independent sushy client (not the driver) for reading back what changed."""
        import sushy  # type: ignore[import-untyped]

        return sushy.Sushy(self.url, username=BMC_USER, password=BMC_PASSWORD, verify=verify)

    def system(self, uuid: str, **kwargs: Any) -> Any:
        """The emulated system ``uuid``, read afresh."""
        return self.client(**kwargs).get_system(f"/redfish/v1/Systems/{uuid}")


def start_redfish_emulator(
    tmp: Path,
    systems: list[dict[str, Any]],
    *,
    tls: tuple[Path, Path] | None = None,
    downloads: Path | None = None,
) -> tuple[Emulator, Any]:
    """Start ``sushy-emulator`` (fake driver, basic auth) on a free loopback port; return it
    and its process once it answers. ``downloads``: its temporary directory, where it keeps
    the virtual media images it downloads (tests read them back)."""
    import bcrypt  # sushy-tools' own dependency (its htpasswd takes bcrypt only)

    tmp.mkdir(parents=True, exist_ok=True)
    htpasswd = tmp / "htpasswd"
    digest = bcrypt.hashpw(BMC_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{BMC_USER}:{digest}\n")
    last_error = ""
    for _attempt in range(3):
        port = free_port()
        config = tmp / "emulator.conf"
        lines = [
            "SUSHY_EMULATOR_FAKE_DRIVER = True",
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}",
            f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
            f"SUSHY_EMULATOR_STATE_DIR = {str(tmp / 'state')!r}",
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'",
            f"SUSHY_EMULATOR_LISTEN_PORT = {port}",
        ]
        if tls is not None:
            lines += [
                f"SUSHY_EMULATOR_SSL_CERT = {str(tls[0])!r}",
                f"SUSHY_EMULATOR_SSL_KEY = {str(tls[1])!r}",
            ]
        config.write_text("\n".join(lines) + "\n")
        log_path = tmp / f"emulator-{port}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(  # our interpreter, our config
                [sys.executable, "-m", "sushy_tools.emulator.main", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=None if downloads is None else {**os.environ, "TMPDIR": str(downloads)},
            )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return Emulator(url, log_path), proc
            except OSError:
                time.sleep(0.1)
        stop_emulator(proc)
        last_error = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"sushy-emulator did not start:\n{last_error}")


def stop_emulator(proc: Any) -> None:
    """Stop an emulator process (politely, then for good)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
