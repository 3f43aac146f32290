"""Real processes of one platform on one PostgreSQL database, to kill and restart: API replicas
(``neocloud up --no-worker``) and workers (``neocloud worker``), for the failover, chaos and soak
tests. Every process is stopped (SIGKILL at the latest) when the platform's block ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from neocloud.api.platform import prepare
from neocloud.db.engine import Database
from neocloud.db.tables import LeaseRow
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.secrets import SecretBox
from neocloud.kernel.settings import load_settings

NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]


def fleet_spec(nodes_per_rack: int = 2, blocks: int = 2, racks: int = 2) -> str:
    return f"""\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x: {{gpu_model: h100, gpu_count: 8, vcpus: 224, ram_gib: 2048, nvme_tib: 30}}
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - {{name: ib01, template: h100-8x, blocks: {blocks}, racks_per_block: {racks},
         nodes_per_rack: {nodes_per_rack}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """One platform process: ``api`` (with its URL) or ``worker``."""

    kind: str
    name: str
    argv: list[str]
    log_path: Path
    url: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Platform:
    """The processes and what they share: the database URL, environment and admin key."""

    db_url: str
    env: dict[str, str]
    admin_key: str
    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    kills: int = 0

    def add_api(self, name: str) -> Proc:
        port = free_port()
        argv = [
            *NEOCLOUD,
            "up",
            "--no-worker",
            "--port",
            str(port),
            "--data-dir",
            str(self.workdir / name),
            "--database-url",
            self.db_url,
            "--no-demo-fleet",
        ]
        proc = Proc("api", name, argv, self.workdir / f"{name}.log", f"http://127.0.0.1:{port}")
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str) -> Proc:
        argv = [
            *NEOCLOUD,
            "worker",
            "--data-dir",
            str(self.workdir / "worker-data"),
            "--database-url",
            self.db_url,
        ]
        proc = Proc("worker", name, argv, self.workdir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def wait_spools_flushed(self, timeout_s: float = 90) -> None:
        """Every API replica's usage spool is empty: what a killed replica answered has been
        taken over and written, and nothing answered is still on its way to the database."""
        deadline = time.monotonic() + timeout_s
        pending: list[str] = []
        while time.monotonic() < deadline:
            pending = [
                f"{f} ({size} bytes)"
                for p in self.procs
                if p.kind == "api"
                for f in (self.workdir / p.name / "usage-spool").glob("*.jsonl")
                if (size := _size(f)) > 0
            ]
            if not pending:
                return
            time.sleep(0.2)
        raise AssertionError(f"usage spools not flushed after {timeout_s} s: {pending}")

    def start(self, proc: Proc) -> None:
        assert not proc.alive()
        with proc.log_path.open("ab") as log:
            proc.popen = subprocess.Popen(
                proc.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        proc.starts += 1

    def wait_ready(self, proc: Proc, timeout_s: float = 120) -> None:
        """An API answers /health; a worker has printed its start line."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited: {proc.log_path.read_text()[-3000:]}")
            if proc.kind == "api":
                assert proc.url is not None
                try:
                    if httpx.get(f"{proc.url}/api/v1/health", timeout=1).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            elif b" worker on " in proc.log_path.read_bytes():
                return
            time.sleep(0.1)
        raise AssertionError(f"{proc.name} not ready in {timeout_s} s")

    def kill(self, proc: Proc) -> None:
        """SIGKILL: no shutdown, no lease released, requests in flight cut off."""
        assert proc.popen is not None
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=10)
        self.kills += 1

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                assert proc.popen is not None
                proc.popen.terminate()
        for proc in self.procs:
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()
                    proc.popen.wait(timeout=10)

    def apis(self) -> list[Proc]:
        return [p for p in self.procs if p.kind == "api"]

    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.kind == "worker"]


def env_for(tmp: Path, **overrides: str) -> dict[str, str]:
    """The processes' environment: sim steps of a second or so (work is in flight when a
    process dies), no random sim failures, quiet logs."""
    env = {
        **os.environ,
        "NEOCLOUD_LOG_LEVEL": "warning",
        "NEOCLOUD_SIM_PROVISION_S": "1",
        "NEOCLOUD_SIM_DEPROVISION_S": "0.5",
        "NEOCLOUD_SIM_WIPE_S": "0.5",
        "NEOCLOUD_SIM_POWER_S": "0",
        "NEOCLOUD_SIM_FAILURE_PROBABILITY": "0",
        "NEOCLOUD_CONFIG": str(tmp / "profiles.json"),
        # the clients are a load generator, not a runaway script: no per-key rate limits
        "NEOCLOUD_API_WRITES_PER_MINUTE": "1000000",
        "NEOCLOUD_API_REQUESTS_PER_MINUTE": "1000000",
        "NEOCLOUD_STUDIO_REQUESTS_PER_MINUTE": "1000000",
        # a key whose request died with a killed replica is taken over (nothing committed) or
        # answered idempotency_outcome_unknown (it took effect) well within the clients' 30 s
        "NEOCLOUD_IDEMPOTENCY_LEASE_S": "10",
        # one key for every process (each has its own data dir, so no shared key file)
        "NEOCLOUD_SECRET_KEY": SecretBox.new_key().decode("ascii"),
    }
    env.update(overrides)
    return env


@contextmanager
def platform(db_url: str, tmp: Path, fleet: str, **env: str) -> Iterator[Platform]:
    """Prepare the database (operator, fleet), yield a platform with no process started yet;
    stop every process on the way out."""
    spec = tmp / "fleet.yaml"
    spec.write_text(fleet)
    environment = env_for(tmp, **env)
    settings = load_settings(
        database_url=db_url,
        data_dir=tmp / "worker-data",
        secret_key=environment["NEOCLOUD_SECRET_KEY"],
    )
    prepared = prepare(settings, SystemClock(), fleet_file=spec, demo_fleet=False)
    prepared.db.dispose()
    assert prepared.admin_key is not None
    plat = Platform(db_url, environment, prepared.admin_key, tmp)
    try:
        yield plat
    finally:
        plat.stop_all()


def scheduler_holder_pid(db: Database) -> int | None:
    """The pid of the process holding the scheduler lease (unexpired), if any."""
    with db.transaction() as s:
        row = s.execute(
            sa.select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == "scheduler")
        ).first()
    if row is None or row.expires_at <= SystemClock().now():
        return None
    return int(row.holder.split(":")[1])  # hostname:pid:id


@contextmanager
def fake_upstream(tmp: Path) -> Iterator[str]:
    """The fake OpenAI-compatible server (a stand-in for vLLM); yields its /v1 URL."""
    port = free_port()
    log_path = tmp / "upstream.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neocloud.studio.engines.fakeupstream", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the fake upstream did not come up"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _size(path: Path) -> int:
    """A file's size; 0 once it is gone (a flushed segment is deleted)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
