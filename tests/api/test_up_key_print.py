"""`neocloud up` shows a new operator admin key on a terminal only (issue 13, finding 9): piped
stdout, what log collectors read, gets the key file's path and never the key; and no key, nor
its digest, reaches the server's log while it serves keyed calls."""

from __future__ import annotations

import hashlib
import os
import pty
import select
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(data_dir: Path, port: int) -> list[str]:
    return [*NEOCLOUD, "up", "--port", str(port), "--data-dir", str(data_dir), "--no-demo-fleet"]


def _env() -> dict[str, str]:
    env = {**os.environ}
    env.pop("NEOCLOUD_DATABASE_URL", None)
    return env


def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server stopped"
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("server did not come up in 120 s")


def test_piped_stdout_gets_the_key_files_path_and_the_log_no_key(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            _command(tmp_path, port), stdout=log, stderr=subprocess.STDOUT, env=_env()
        )
        try:
            _wait_healthy(url, proc)
            key_file = tmp_path / "admin-key"
            assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
            admin_key = key_file.read_text().strip()
            headers = {"Authorization": f"Bearer {admin_key}", "Idempotency-Key": "up-1"}
            made = httpx.post(f"{url}/api/v1/keys", json={"name": "ci"}, headers=headers)
            assert made.status_code == 201
            child = made.json()["secret"]
            # Keyed calls the log would show: a replay, a bad key, a call with the child key.
            httpx.post(f"{url}/api/v1/keys", json={"name": "ci"}, headers=headers)
            httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {child}x"})
            httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {child}"})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    output = log_path.read_text()
    assert str(key_file) in output
    assert "GET /api/v1/me" in output  # the access log is in what we read
    for secret in (admin_key, child):
        for leaked in (secret, secret[12:], hashlib.sha256(secret.encode()).hexdigest()):
            assert leaked not in output


def test_a_terminal_is_shown_the_key_once(tmp_path: Path) -> None:
    port = _free_port()
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        _command(tmp_path, port),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.DEVNULL,
        env={**_env(), "COLUMNS": "200"},
    )
    os.close(secondary)
    seen = b""
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 30
        while b"serving" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                seen += os.read(primary, 65536)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        os.close(primary)
    admin_key = (tmp_path / "admin-key").read_text().strip()
    assert admin_key in seen.decode(errors="replace").replace("\r\n", "\n")
