"""A running `neocloud up` for the end-to-end tests on test hosts: started in a subprocess on a
data dir of its own (no demo fleet), reached over real HTTP and through the real CLI, always
stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Platform:
    url: str
    data_dir: Path
    admin_key: str
    log: Path

    def api(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kw)

    def ok(self, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
        r = self.api(method, path, key, **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return (
            r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        )

    def cli(
        self, key: str | None, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "NEOCLOUD_API_URL": self.url,
            "NEOCLOUD_API_KEY": key or self.admin_key,
            "NEOCLOUD_CONFIG": str(self.data_dir / "profiles.json"),
            "COLUMNS": "200",
        }
        done = subprocess.run(
            [*NEOCLOUD, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@contextmanager
def running_platform(
    data_dir: Path, *, host: str = "127.0.0.1", env: dict[str, str] | None = None
) -> Iterator[Platform]:
    """`neocloud up --no-demo-fleet` on ``host`` and a free port, with the worker cycling every
    0.2 s, its own URL as the public one, and ``env`` on top; the sealing key is the one the
    platform makes in its data dir."""
    port = free_port(host)
    url = f"http://{host}:{port}"
    full = {
        **os.environ,
        "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": "0.2",
        "NEOCLOUD_PUBLIC_URL": url,  # where agents on the hosts report
        **(env or {}),
    }
    for name in ("NEOCLOUD_DATABASE_URL", "NEOCLOUD_SECRET_KEY"):
        if name not in (env or {}):
            full.pop(name, None)
    log = data_dir / "server.log"
    command = [*NEOCLOUD, "up", "--host", host, "--port", str(port), "--data-dir", str(data_dir)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*command, "--no-demo-fleet"], stdout=out, stderr=subprocess.STDOUT, env=full
        )
        try:

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(log.read_text())
                try:
                    return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            wait_for("the platform", up, timeout=120)
            admin = (data_dir / "admin-key").read_text().strip()
            yield Platform(url, data_dir, admin, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a driver step stuck on a host already gone
                proc.kill()
                proc.wait(timeout=10)
