"""Graceful shutdown: SIGTERM to `neocloud up` lets a request in flight finish with its answer,
then the process stops its background work and exits 0 within the grace."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

NEOCLOUD = [sys.executable, "-m", "neocloud.cli.main"]
GRACE_S = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up in 120 s"
        time.sleep(0.3)


@pytest.fixture
def slow_upstream(tmp_path: Path) -> Iterator[str]:
    """The fake vLLM, answering each generation after 3 s."""
    port = _free_port()
    log = tmp_path / "upstream.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neocloud.studio.engines.fakeupstream", "--port", str(port),
             "--delay-ms", "3000"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            _wait_until_up(proc, f"http://127.0.0.1:{port}/health", log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(
    tmp_path: Path, slow_upstream: str
) -> None:
    data_dir = tmp_path / "up"
    port = _free_port()
    env = {**os.environ, "NEOCLOUD_CONFIG": str(tmp_path / "profiles.json")}
    env.pop("NEOCLOUD_DATABASE_URL", None)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*NEOCLOUD, "up", "--port", str(port), "--data-dir", str(data_dir),
             "--no-demo-fleet", "--shutdown-grace", str(GRACE_S)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, f"{url}/api/v1/health", log)
        key = (data_dir / "admin-key").read_text().strip()
        auth = {"Authorization": f"Bearer {key}"}
        made = httpx.post(
            f"{url}/api/v1/studio/models",
            json={
                "id": "acme/slow",
                "upstream_urls": [slow_upstream],
                "upstream_model": "fake",
                "input_price_per_m": "0",
                "output_price_per_m": "0",
            },
            headers=auth,
            timeout=30,
        )
        assert made.status_code == 201, made.text
        answers: list[httpx.Response | BaseException] = []

        def chat() -> None:
            try:
                body = {"model": "acme/slow", "messages": [{"role": "user", "content": "hi"}]}
                answers.append(
                    httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=60)
                )
            except BaseException as exc:  # reported by the assertion below
                answers.append(exc)

        caller = threading.Thread(target=chat)
        caller.start()
        time.sleep(1.0)  # the request is now waiting on the upstream's 3 s
        assert not answers, "the request should still be in flight"
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        caller.join(timeout=30)
        assert len(answers) == 1
        answer = answers[0]
        assert isinstance(answer, httpx.Response), repr(answer)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
        code = proc.wait(timeout=GRACE_S + 15)
        assert code == 0, log.read_text()
        assert time.monotonic() - started < GRACE_S + 15
        with pytest.raises(httpx.TransportError):  # no longer accepting
            httpx.get(f"{url}/api/v1/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)
