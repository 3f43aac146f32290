"""End to end: `neocloud up` as a user starts it, then the CLI against it over real HTTP."""

from __future__ import annotations

import json
import os
import socket
import stat
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
    data_dir = tmp_path_factory.mktemp("up")
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
        [*NEOCLOUD, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_health_needs_no_key(server: tuple[str, Path]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/api/v1/health").json()["status"] == "ok"


def test_admin_key_file_is_private(server: tuple[str, Path]) -> None:
    _, data_dir = server
    key_file = data_dir / "admin-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip().startswith("nck_")


def test_other_endpoints_need_a_key(server: tuple[str, Path]) -> None:
    url, _ = server
    response = httpx.get(f"{url}/api/v1/nodes")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_demo_fleet_and_cli_tour(server: tuple[str, Path]) -> None:
    url, data_dir = server
    login = _cli(data_dir, "login", "--url", url, "--key-file", str(data_dir / "admin-key"))
    assert login.returncode == 0, login.stderr

    summary = _cli(data_dir, "fleet", "summary", "--json")
    assert summary.returncode == 0, summary.stderr

    listed = _cli(
        data_dir, "nodes", "list", "--gpu-model", "H100", "--state", "available", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    nodes = json.loads(listed.stdout)
    assert nodes, "the demo fleet has available H100 nodes"
    assert all(n["gpu_model"].startswith("H100") and n["state"] == "available" for n in nodes)

    table = _cli(data_dir, "nodes", "list", "--gpu-model", "H100", "--state", "available")
    assert table.returncode == 0, table.stderr
    assert nodes[0]["hostname"] in table.stdout


def test_instance_and_cluster_tour(server: tuple[str, Path]) -> None:
    """`neocloud up` runs the compute worker: the CLI gets GPUs over real HTTP."""
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


def test_demo_fleet_size(server: tuple[str, Path]) -> None:
    url, data_dir = server
    key = (data_dir / "admin-key").read_text().strip()
    summary = httpx.get(
        f"{url}/api/v1/fleet/summary", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert 3500 <= summary["total_gpus"] <= 4700
    assert len({row["gpu_model"] for row in summary["data"]}) == 3


def test_restart_keeps_data_and_does_not_make_a_new_key(server: tuple[str, Path]) -> None:
    _, data_dir = server
    port = _free_port()
    first_key = (data_dir / "admin-key").read_text()
    env = {**os.environ}
    env.pop("NEOCLOUD_DATABASE_URL", None)
    # A second process on the same data dir must not create another operator or fleet.
    proc = subprocess.Popen(
        [*NEOCLOUD, "up", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).is_success:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert (data_dir / "admin-key").read_text() == first_key
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert "Imported" not in out
    assert "shown once" not in out


def _fresh_cli(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI with a profiles file of its own and no NEOCLOUD_* variables but ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("NEOCLOUD_")}
    full = {**base, "NEOCLOUD_CONFIG": str(config), **(env or {})}
    return subprocess.run(
        [*NEOCLOUD, *args], capture_output=True, text=True, env=full, timeout=60, check=False
    )


def test_login_profiles_and_whoami(server: tuple[str, Path], tmp_path: Path) -> None:
    url, data_dir = server
    config = tmp_path / "profiles.json"
    key_file = str(data_dir / "admin-key")

    nothing = _fresh_cli(config, "nodes", "list")  # was: Connection refused, no hint
    assert nothing.returncode == 2
    assert "not logged in: run `neocloud login" in nothing.stderr
    unknown = _fresh_cli(config, "-p", "nosuch", "nodes", "list")  # was: 127.0.0.1:8420
    assert unknown.returncode == 2
    assert "no profile 'nosuch'" in unknown.stderr
    missing = _fresh_cli(config, "login", "--url", url, "--key-file", "/nonexistent")
    assert missing.returncode == 2
    assert "cannot read the key file /nonexistent" in missing.stderr
    assert "Traceback" not in nothing.stderr + unknown.stderr + missing.stderr

    ops = _fresh_cli(config, "-p", "ops", "login", "--url", url, "--key-file", key_file)
    assert ops.returncode == 0, ops.stderr
    assert set(json.loads(config.read_text())) == {"ops"}  # -p names it; `default` untouched
    who = _fresh_cli(config, "-p", "ops", "whoami", "--json")
    assert who.returncode == 0, who.stderr
    shown = json.loads(who.stdout)
    assert (shown["profile"], shown["api_url"], shown["role"]) == ("ops", url, "owner")
    assert shown["org"] == "operator"

    second = _fresh_cli(config, "-p", "ops", "keys", "create", "second", "--json")
    assert second.returncode == 0, second.stderr
    again = _fresh_cli(config, "-p", "ops", "login", "--key", json.loads(second.stdout)["secret"])
    assert again.returncode == 0, again.stderr
    assert "profile 'ops' replaced" in again.stderr  # the URL stayed the profile's

    env = {"NEOCLOUD_API_URL": url, "NEOCLOUD_API_KEY": (data_dir / "admin-key").read_text()}
    by_env = _fresh_cli(tmp_path / "none.json", "whoami", "--json", env={**env})
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["profile"] == "default (key from NEOCLOUD_API_KEY)"
    helped = _fresh_cli(config, "--help")
    assert "NEOCLOUD_API_KEY" in helped.stdout
