"""Real gateway server processes for tests that need more than one process on one database."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

SERVER = Path(__file__).with_name("gateway_server.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway_servers(env: dict[str, str], log_dir: Path, count: int = 2) -> Iterator[list[str]]:
    """``count`` ``gateway_server.py`` processes with ``env``, each logging to
    ``log_dir/serverN.log``; their base URLs once every one answers its health check (90 s at
    most; a process that exits first fails with its log). Terminated on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    with ExitStack() as stack:
        try:
            for n in range(count):
                port = free_port()
                log = stack.enter_context((log_dir / f"server{n}.log").open("w"))
                command = [sys.executable, str(SERVER), str(port)]
                procs.append(subprocess.Popen(command, stdout=log, stderr=log, env=env))
                urls.append(f"http://127.0.0.1:{port}")
            deadline = time.monotonic() + 90
            for n, url in enumerate(urls):
                while not _healthy(url):
                    if procs[n].poll() is not None:
                        raise AssertionError((log_dir / f"server{n}.log").read_text())
                    assert time.monotonic() < deadline, "the servers did not come up in 90 s"
                    time.sleep(0.2)
            yield urls
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=20)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def serve_in_thread(app: object, **config: object) -> Iterator[int]:
    """An ASGI ``app`` on a free port of 127.0.0.1 in a uvicorn thread, stopped on the way out."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            **config,  # type: ignore[arg-type]
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
