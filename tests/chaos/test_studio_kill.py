"""A gateway SIGKILLed right after answering chat requests loses none of their usage: each
request is spooled before its answer completes, and the restarted process (same data dir)
flushes what the dead one had not. Every answered request is billed exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from .harness import NEOCLOUD, free_port

REQUESTS = 40


def _up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise AssertionError(log.read_text()[-3000:])
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.2)


def _billed(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(
            conn.execute("SELECT count(*) FROM usage_events WHERE source = 'studio'").fetchone()[0]
        )
    finally:
        conn.close()


def test_sigkilled_gateway_bills_every_answered_request_once(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "NEOCLOUD_CONFIG": str(tmp_path / "profiles.json"),
        "NEOCLOUD_LOG_LEVEL": "warning",
        "NEOCLOUD_API_WRITES_PER_MINUTE": "1000000",
    }
    env.pop("NEOCLOUD_DATABASE_URL", None)
    data = tmp_path / "up"
    up_port, fake_port = free_port(), free_port()
    url = f"http://127.0.0.1:{up_port}"
    argv = [
        *NEOCLOUD,
        "up",
        "--port",
        str(up_port),
        "--data-dir",
        str(data),
        "--no-demo-fleet",
        "--no-worker",
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with (tmp_path / "fake.log").open("w") as out:
            fake = subprocess.Popen(
                [sys.executable, "-m", "neocloud.studio.engines.fakeupstream", "--port",
                 str(fake_port)], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append(fake)
        _up(fake, f"http://127.0.0.1:{fake_port}/health", tmp_path / "fake.log")
        with (tmp_path / "up.log").open("w") as out:
            server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(server)
        _up(server, f"{url}/api/v1/health", tmp_path / "up.log")
        auth = {"Authorization": f"Bearer {(data / 'admin-key').read_text().strip()}"}
        made = httpx.post(
            f"{url}/api/v1/studio/models",
            json={"id": "acme/fake", "upstream_urls": [f"http://127.0.0.1:{fake_port}/v1"],
                  "upstream_model": "fake", "input_price_per_m": "1",
                  "output_price_per_m": "2"},
            headers=auth, timeout=30,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        body = {"model": "acme/fake", "messages": [{"role": "user", "content": "hello there"}]}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
            http.post("/v1/chat/completions", json=body)  # the model is loaded and routable
            deadline = time.monotonic() + 30  # ... and that first request flushed (1 s cycle)
            while (first := _billed(data / "neocloud.db")) < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert first == 1, first
            with ThreadPoolExecutor(8) as pool:
                answers = list(
                    pool.map(
                        lambda _: http.post("/v1/chat/completions", json=body), range(REQUESTS)
                    )
                )
        server.send_signal(signal.SIGKILL)  # at once: the last flush (every 1 s) has not run
        server.wait(timeout=10)
        assert [a.status_code for a in answers] == [200] * REQUESTS
        before_restart = _billed(data / "neocloud.db") - first

        with (tmp_path / "up2.log").open("w") as out:
            again = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(again)
        _up(again, f"{url}/api/v1/health", tmp_path / "up2.log")
        deadline = time.monotonic() + 20
        while _billed(data / "neocloud.db") - first < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.2)
        after_restart = _billed(data / "neocloud.db") - first
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
    print(
        f"\nstudio: {REQUESTS} requests answered, {before_restart} billed when the gateway was "
        f"SIGKILLed, {after_restart} after its restart"
    )
    assert after_restart == REQUESTS
    assert not list((data / "usage-spool").glob("*.jsonl"))
