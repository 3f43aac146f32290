"""Batch throughput on CPU with the built-in model, beside online serving of the same requests.

One process: the real app (SQLite, the built-in tiny Llama on the CPU, its batching engine)
behind uvicorn on loopback. The same N chat requests (``Count to N.``, greedy, at most 24
tokens) are run three ways, each answer checked:

* **online, 1 at a time**: one client sending them back to back (``/v1/chat/completions``);
* **online, C at a time**: C clients (C = the batch concurrency), what the engine can batch;
* **batch**: one ``/v1/batches`` of the N requests, run by the server's own worker (chunks of
  ``--chunk``, ``--concurrency`` at a time), from ``create`` to ``completed`` as the client
  sees it (polling every 50 ms), output file checked (one line per request).

Prints requests/s and completion tokens/s for each. The anchor is online serving of the same
requests in the same run: a batch should reach at least the online figure at the same
concurrency, as it runs the same engine at the same width without an HTTP exchange per request,
plus its bookkeeping (a billing write and a result write per chunk).

Rerun: ``.venv/bin/python bench/studio/bench_batches.py [--requests 200] [--concurrency 4]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.db.migrate import upgrade
from neocloud.kernel.clock import SystemClock
from neocloud.kernel.settings import Settings
from neocloud.tenancy.service import bootstrap_operator

MODEL = "neocloud/tiny-llama"


def body(i: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Count to {i % 9 + 1}."}],
        "temperature": 0,
        "max_tokens": 24,
    }


async def online(base: str, key: str, n: int, concurrency: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)
    tokens = 0
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:

        async def one(i: int) -> None:
            nonlocal tokens
            async with gate:
                answer = await http.post("/v1/chat/completions", json=body(i))
                answer.raise_for_status()
                tokens += answer.json()["usage"]["completion_tokens"]

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - start, tokens


def batch(base: str, key: str, n: int) -> tuple[float, int]:
    headers = {"Authorization": f"Bearer {key}"}
    lines = [
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": body(i)})
        for i in range(n)
    ]  # fmt: skip
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        upload = http.post(
            "/v1/files",
            files={"file": ("bench.jsonl", ("\n".join(lines) + "\n").encode())},
            data={"purpose": "batch"},
        )
        upload.raise_for_status()
        start = time.perf_counter()
        made = http.post(
            "/v1/batches",
            json={
                "input_file_id": upload.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        ).json()
        while (state := http.get(f"/v1/batches/{made['id']}").json())["status"] not in (
            "completed",
            "failed",
            "expired",
            "cancelled",
        ):
            time.sleep(0.05)
        took = time.perf_counter() - start
        assert state["status"] == "completed", state
        out = http.get(f"/v1/files/{state['output_file_id']}/content").text.splitlines()
    assert len(out) == n, f"{len(out)} output lines for {n} requests"
    answers = [json.loads(line) for line in out]
    assert all(a["response"]["status_code"] == 200 for a in answers)
    tokens = sum(a["response"]["body"]["usage"]["completion_tokens"] for a in answers)
    return took, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=16)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-batches-"))
    settings = Settings(
        data_dir=tmp,
        studio_requests_per_minute=10**8,
        studio_tokens_per_minute=10**9,
        studio_batch_concurrency=args.concurrency,
        studio_batch_chunk=args.chunk,
        studio_batch_yield_rps=0,  # nothing else runs: the batch need not yield
    )
    db = Database.from_url(settings.resolved_database_url())
    upgrade(db)
    clock = SystemClock()
    key = bootstrap_operator(db=db, clock=clock)
    assert key is not None
    app = create_app(settings=settings, db=db, clock=clock)
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(online(base, key, 8, args.concurrency))  # load the weights, warm up
        rows = []
        took, tokens = asyncio.run(online(base, key, args.requests, 1))
        rows.append(("online, 1 at a time", took, tokens))
        took, tokens = asyncio.run(online(base, key, args.requests, args.concurrency))
        rows.append((f"online, {args.concurrency} at a time", took, tokens))
        took, tokens = batch(base, key, args.requests)
        rows.append((f"batch (concurrency {args.concurrency}, chunk {args.chunk})", took, tokens))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        db.dispose()
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
        f"{args.requests} requests to {MODEL} (CPU)"
    )
    print(f"{'':42} {'seconds':>8} {'req/s':>8} {'tokens/s':>9}")
    for name, took, tokens in rows:
        print(f"{name:42} {took:8.2f} {args.requests / took:8.1f} {tokens / took:9.0f}")
    print(
        "anchor: online serving of the same requests in this run; a batch should at least "
        "match online serving at the same concurrency"
    )


if __name__ == "__main__":
    main()
