"""Where a heartbeat's server CPU goes: the app driven in-process, without HTTP or sockets.

Builds the platform's app (``create_app``, every middleware) on a fresh SQLite database (or
the PostgreSQL at NEOCLOUD_BENCH_POSTGRES_URL with ``--backend postgresql``), issues agent
tokens for a few nodes and sends heartbeats straight into the ASGI callable, one after the
other, 8 GPUs of telemetry each (as bench_heartbeat.py sends them). It prints the CPU seconds
per heartbeat (``time.process_time``: this process only, so on PostgreSQL the server's own CPU
is not in it) and, with ``--profile``, the top of a cProfile sorted by cumulative time (the
threadpool hop is run inline so that the profile sees the endpoint).

Rerun:  .venv/bin/python bench/agent/profile_heartbeat.py [--beats 2000] [--profile]
            [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_heartbeat import FLEET, PG_URL, heartbeat_body

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.db.scratch import scratch_database
from neocloud.fleet import agent
from neocloud.fleet import service as fleet_service
from neocloud.fleet.spec import parse_spec
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings
from neocloud.tenancy.service import bootstrap_operator

NODES = 16


async def _call(app: Any, token: str, raw: bytes) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/agent/heartbeat",
        "raw_path": b"/api/v1/agent/heartbeat",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8420),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status, chunks = 0, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def _inline_threadpool() -> None:
    """Run ``anyio.to_thread.run_sync`` in the calling thread (cProfile sees one thread only)."""
    import anyio.to_thread

    async def run_sync(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
        return func(*args)

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]


def run(db: Database, beats: int, profile: bool) -> None:
    clock = SystemClock()
    upgrade(db)
    bootstrap_operator(db=db, clock=clock)
    fleet_service.import_spec(db=db, clock=clock, spec=parse_spec(FLEET))
    with db.transaction() as s:
        nodes = list(s.scalars(sa.select(NodeRow.id).order_by(NodeRow.id).limit(NODES)))
    tokens = [
        agent.issue_agent_token(db=db, clock=clock, node_id=n, actor="bench").token for n in nodes
    ]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), api_requests_per_minute=1_000_000, api_writes_per_minute=1_000_000
        )
        app = create_app(settings=settings, db=db, clock=clock)
        bodies = [
            [json.dumps(heartbeat_body(n, i, i == 0)).encode() for i in range(2)] for n in nodes
        ]

        async def loop(count: int) -> None:
            for i in range(count):
                k = i % len(nodes)
                status, out = await _call(app, tokens[k], bodies[k][min(i // len(nodes), 1)])
                assert status == 200, out

        asyncio.run(loop(len(nodes) * 2))  # inventories in, caches warm
        if profile:
            _inline_threadpool()
            prof = cProfile.Profile()
            t0 = time.process_time()
            prof.enable()
            asyncio.run(loop(beats))
            prof.disable()
            cpu = time.process_time() - t0
            stats = pstats.Stats(prof)
            stats.sort_stats("cumulative").print_stats(45)
            stats.sort_stats("tottime").print_stats(25)
            if os.environ.get("NEOCLOUD_PROFILE_CALLEES"):
                stats.sort_stats("cumulative").print_callees(os.environ["NEOCLOUD_PROFILE_CALLEES"])
        else:
            t0 = time.process_time()
            asyncio.run(loop(beats))
            cpu = time.process_time() - t0
        print(f"{beats} heartbeats: {cpu / beats * 1000:.2f} ms CPU each (in-process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--beats", type=int, default=2000, help="heartbeats to send")
    parser.add_argument("--profile", action="store_true", help="print a cProfile")
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    if args.backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database.from_url(f"sqlite:///{tmp}/profile.db")
            try:
                run(db, args.beats, args.profile)
            finally:
                db.dispose()
    else:
        with scratch_database(PG_URL, "neocloud_profile_agent") as url:
            db = Database.from_url(url)
            try:
                run(db, args.beats, args.profile)
            finally:
                db.dispose()


if __name__ == "__main__":
    main()
