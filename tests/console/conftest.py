"""Fixtures of the console's browser tests: a real `neocloud up` with the demo fleet (4,096 GPUs)
in a subprocess on a free port, and Debian's headless Chromium driven by Playwright.

No browser is downloaded: Playwright's driver launches ``/usr/bin/chromium``. Where it cannot
start, the browser tests skip, except under ``CI=true`` where they fail."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("NEOCLOUD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@dataclass
class Server:
    url: str
    admin_key: str
    log: Path
    made = 0  # orgs made so far (slugs are unique)

    def api(self, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        r = httpx.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    def tenant(self, slug: str, quota: int = 64) -> dict[str, Any]:
        """A fresh org with an H100 quota; its owner's key. ``slug`` is made unique."""
        Server.made += 1
        slug = f"{slug}{Server.made}"
        org = self.api(
            "POST",
            "/orgs",
            json={"name": slug.title(), "slug": slug, "owner_email": f"owner@{slug}.example"},
        )
        user = self.api("GET", f"/orgs/{org['id']}/users")["data"][0]
        key = self.api(
            "POST", "/keys", json={"name": "owner", "org_id": org["id"], "user_id": user["id"]}
        )
        self.api("PUT", f"/orgs/{org['id']}/quotas/H100-SXM-80GB", json={"limit_gpus": quota})
        return {"org": org, "key": key["secret"]}


def _warm_studio(url: str, key: str) -> None:
    try:
        model = httpx.get(
            f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).json()["data"][0]["id"]
        httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
            timeout=180,
        )
    except (httpx.HTTPError, KeyError, IndexError):
        pass  # only a warm-up: the playground test itself says what went wrong


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`neocloud up` with the demo fleet, the worker cycling every 0.2 s; always stopped."""
    data_dir = tmp_path_factory.mktemp("console-platform")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NEOCLOUD_COMPUTE_WORKER_INTERVAL_S": "0.2", "NEOCLOUD_PUBLIC_URL": url}
    for name in ("NEOCLOUD_DATABASE_URL", "NEOCLOUD_SECRET_KEY"):
        env.pop(name, None)
    log = data_dir / "server.log"
    command = [
        sys.executable,
        "-m",
        "neocloud.cli.main",
        "up",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
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
            # The built-in model loads on its first request, and the server answers nothing
            # else while it loads: load it here, before any test waits on a page.
            _warm_studio(url, admin)
            yield Server(url, admin, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's); Playwright gives each launch a fresh user-data dir and each
    test makes its own context (cookie jar). Skipped locally when it cannot start, a failure
    under CI."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extra installs it
        if IN_CI:
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip(f"playwright is not installed: {exc}")
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
        except Error as exc:
            if IN_CI:
                pytest.fail(f"chromium cannot start under CI: {exc}")
            pytest.skip(f"chromium cannot start here: {exc}")
        try:
            yield browser
        finally:
            browser.close()
