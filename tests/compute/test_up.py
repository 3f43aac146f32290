"""End to end: `neocloud up` runs the compute worker; the CLI gets GPUs over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("up-compute")
    port = _free_port()
    env = {**os.environ, "NEOCLOUD_CONFIG": str(data_dir / "profiles.json")}
    env.pop("NEOCLOUD_DATABASE_URL", None)
    log = (data_dir / "server.log").open("w")
    proc = subprocess.Popen(
        [*NEOCLOUD, "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError((data_dir / "server.log").read_text())
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("server did not come up in 120 s")
            time.sleep(0.3)
        yield url, data_dir
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NEOCLOUD_CONFIG": str(data_dir / "profiles.json")}
    env.pop("NEOCLOUD_API_KEY", None)
    env.pop("NEOCLOUD_API_URL", None)
    return subprocess.run(
        [*NEOCLOUD, *args], capture_output=True, text=True, env=env, timeout=90, check=False
    )


def test_instance_and_cluster_tour(server: tuple[str, Path]) -> None:
    url, data_dir = server
    login = _cli(data_dir, "login", "--url", url, "--key-file", str(data_dir / "admin-key"))
    assert login.returncode == 0, login.stderr
    made = _cli(data_dir, "instances", "create", "8xH100", "--wait", "--timeout", "30", "--json")
    assert made.returncode == 0, made.stderr
    inst = json.loads(made.stdout)
    assert inst["state"] == "running"  # the default quota (64 GPUs per model) let it in
    cluster = _cli(
        data_dir, "clusters", "create", "H200", "--nodes", "8", "--wait", "--timeout", "30"
    )
    assert cluster.returncode == 0, cluster.stderr
    assert "eu-west-1a-ib01" in cluster.stdout
    gone = _cli(data_dir, "instances", "terminate", inst["id"], "--wait", "--json")
    assert json.loads(gone.stdout)["state"] == "terminated"
