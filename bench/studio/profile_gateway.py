"""CPU per request of the gateway in-process: the ASGI app driven directly (no HTTP server in
front), one upstream-proxied chat completion at a time against the fake upstream in a child
process. ``--profile`` prints cProfile's top functions.

``.venv/bin/python bench/studio/profile_gateway.py [--requests 2000] [--stream] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _drive(app: Any, key: str, n: int, stream: bool, prof: cProfile.Profile | None) -> float:
    body = json.dumps(
        {
            "model": "bench/fake",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 8,
            "stream": stream,
        }
    ).encode()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]

    async def one() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    for _ in range(50):  # warm: key cached, connections open
        assert await one() == 200
    if prof:
        prof.enable()
    t0 = time.process_time()
    for _ in range(n):
        await one()
    cpu = time.process_time() - t0
    if prof:
        prof.disable()
    return cpu / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    import uvloop

    from neocloud.api.app import create_app
    from neocloud.db.engine import Database
    from neocloud.db.migrate import upgrade
    from neocloud.kernel.clock import SystemClock
    from neocloud.kernel.settings import Settings
    from neocloud.studio import runtime
    from neocloud.studio.catalog import Catalog, CatalogModel, ModelKind
    from neocloud.studio.engines.upstream import UpstreamPool
    from neocloud.tenancy.service import bootstrap_operator

    port = _free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "neocloud.studio.engines.fakeupstream", "--port", str(port)]
    )
    try:
        time.sleep(1.5)
        data = Path(tempfile.mkdtemp())
        settings = Settings(
            data_dir=data,
            studio_requests_per_minute=100_000_000,
            studio_tokens_per_minute=1_000_000_000,
        )
        db = Database.from_url(settings.resolved_database_url())
        upgrade(db)
        clock = SystemClock()
        key = bootstrap_operator(db=db, clock=clock)
        assert key is not None
        runtime.builtin_catalog = Catalog
        app = create_app(settings=settings, db=db, clock=clock)
        studio = app.state.studio
        studio.catalog.add_upstream(UpstreamPool("fake-vllm", [f"http://127.0.0.1:{port}/v1"]))
        studio.catalog.add(
            CatalogModel(
                "bench/fake",
                "fake-vllm",
                ModelKind.TEXT,
                8192,
                Decimal("0.1"),
                Decimal("0.2"),
                upstream_model="fake",
            )
        )
        prof = cProfile.Profile() if args.profile else None
        per = uvloop.run(_drive(app, key, args.requests, args.stream, prof))
        print(f"CPU per request ({'stream' if args.stream else 'plain'}): {per * 1000:.3f} ms")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
