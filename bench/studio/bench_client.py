"""The gateway's hand-written upstream client (``studio/engines/fasthttp.py``) against maintained
ones, in the same run against the same fake upstream (a child process): ``httpcore``'s
connection pool (what httpx is built on) and ``httpx2`` (the client ``UpstreamPool`` takes as
its alternative). Plain and streamed chat completions, over ``http://`` and, with ``--tls``,
``https://`` (a throwaway CA made with ``openssl``, verified by every client).

For each client and mode it prints the client's CPU per request (this process's CPU time over
the requests: the upstream runs in another process, so this is the client's own cost and the
steadiest figure on a shared machine) and the requests per second with 32 concurrent requests.
Each client's answers are checked first (the same text, every stream ending in ``[DONE]``).

``.venv/bin/python bench/studio/bench_client.py [--requests 2000] [--tls]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpcore
import httpx2

from neocloud.studio.engines.fasthttp import FastClient, tls_context

BODY = {"model": "fake", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
EXPECTED = " ".join(["hi"] * 8)
CONCURRENCY = 32

Call = Callable[[bool], Awaitable[str]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pki(d: Path) -> tuple[Path, Path, Path]:
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem"))
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for args in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(ca_key),
         "-out", str(ca), "-subj", "/CN=bench CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "1", "-out", str(cert), "-extfile", str(d / "san.cnf")],
    ):  # fmt: skip
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    return ca, cert, key


def _text(answer: str, stream: bool) -> str:
    if not stream:
        return str(json.loads(answer)["choices"][0]["message"]["content"])
    assert answer.rstrip().endswith("data: [DONE]"), answer[-200:]
    pieces = []
    for line in answer.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                pieces.append(choice["delta"].get("content", ""))
    return "".join(pieces)


def _fast(url: str, ca: Path | None) -> tuple[Call, Callable[[], Awaitable[None]]]:
    client = FastClient(ca_bundle=ca)

    async def call(stream: bool) -> str:
        if not stream:
            return (await client.request("POST", url, json_body=BODY)).text
        _, _, lines = await client.stream_lines(url, json_body={**BODY, "stream": True})
        out = []
        async for batch in lines:
            out.extend(batch)
        return "\n".join(out)

    return call, client.aclose


def _httpcore(url: str, ca: Path | None) -> tuple[Call, Callable[[], Awaitable[None]]]:
    context = tls_context(ca) if ca else None
    pool = httpcore.AsyncConnectionPool(ssl_context=context, max_connections=256)

    async def call(stream: bool) -> str:
        body = json.dumps({**BODY, "stream": stream}).encode()
        headers = [(b"content-type", b"application/json")]
        if not stream:
            response = await pool.request("POST", url, headers=headers, content=body)
            return response.content.decode()
        parts = []
        async with pool.stream("POST", url, headers=headers, content=body) as response:
            async for chunk in response.aiter_stream():
                parts.append(chunk)
        return b"".join(parts).decode()

    return call, pool.aclose


def _httpx2(url: str, ca: Path | None) -> tuple[Call, Callable[[], Awaitable[None]]]:
    verify: ssl.SSLContext | bool = tls_context(ca) if ca else True
    limits = httpx2.Limits(max_connections=256, max_keepalive_connections=256)
    client = httpx2.AsyncClient(verify=verify, limits=limits, timeout=60)

    async def call(stream: bool) -> str:
        if not stream:
            return (await client.post(url, json=BODY)).text
        lines = []
        async with client.stream("POST", url, json={**BODY, "stream": True}) as response:
            async for line in response.aiter_lines():
                lines.append(line)
        return "\n".join(lines)

    return call, client.aclose


async def _measure(call: Call, stream: bool, n: int) -> tuple[float, float]:
    """(ms of this process's CPU per request, one at a time; req/s with 32 at once)."""
    for _ in range(20):  # warm up, and check the answers
        assert _text(await call(stream), stream) == EXPECTED
    cpu = time.process_time()
    for _ in range(n):
        await call(stream)
    cpu_ms = (time.process_time() - cpu) * 1000 / n

    async def worker(count: int) -> None:
        for _ in range(count):
            await call(stream)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n // CONCURRENCY) for _ in range(CONCURRENCY)))
    rps = (n // CONCURRENCY) * CONCURRENCY / (time.perf_counter() - started)
    return cpu_ms, rps


async def _run(url: str, ca: Path | None, n: int) -> list[tuple[str, str, float, float]]:
    rows = []
    clients = {"fasthttp (ours)": _fast, "httpcore": _httpcore, "httpx2": _httpx2}
    for stream in (False, True):
        for name, make in clients.items():
            call, close = make(url, ca)
            try:
                cpu_ms, rps = await _measure(call, stream, n)
            finally:
                await close()
            rows.append((name, "stream" if stream else "plain", cpu_ms, rps))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tls", action="store_true", help="https:// to the upstream")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "neocloud.studio.engines.fakeupstream"]
        command += ["--port", str(port)]
        ca = None
        if args.tls:
            ca, cert, key = _pki(Path(tmp))
            command += ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        upstream = subprocess.Popen(command)
        scheme = "https" if args.tls else "http"
        url = f"{scheme}://127.0.0.1:{port}/v1/chat/completions"
        try:
            _wait(port)
            rows = asyncio.run(_run(url, ca, args.requests))
        finally:
            upstream.terminate()
            upstream.wait(timeout=20)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"{scheme}://, {args.requests} requests per figure, load average {load}")
    print(f"| client | mode | CPU per request | req/s ({CONCURRENCY} at once) |")
    print("|---|---|---|---|")
    for name, mode, cpu_ms, rps in rows:
        print(f"| {name} | {mode} | {cpu_ms:.3f} ms | {rps:,.0f} |")


def _wait(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    main()
