"""A batch's requests run on the node compute gave it (the ``node`` runner's far end for batches).

Run on the node as ``python -m neocloud.studio.batches.remote WORK`` with this package on
``PYTHONPATH`` (``node.py`` ships it) and its dependencies in the node's Python. ``WORK`` holds
``job.json`` (the endpoint, the batch id, the time its requests are stamped with, how many run at
a time) and ``lines.jsonl`` (the requests still to run: index, ``custom_id``, body). The
requests run through the same executor and built-in engines as in the studio's worker.

One JSON object per line on standard output: ``start`` (host, pid), then ``outcome`` per request
in index order, then ``done``. Standard input is the controller's: at its end-of-file (the
worker stopped the batch, or its connection or process died) the run stops at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from neocloud.studio.batches.domain import request_id
from neocloud.studio.batches.executor import Outcome, execute, outcome_message

CONTROLLER_GONE = 75  # the exit status when standard input closed before the run finished


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _watch_controller() -> None:
    """Exit as soon as standard input closes (raw reads: see finetuning/remote.py)."""
    while os.read(0, 65536):
        pass
    os._exit(CONTROLLER_GONE)


async def _run(job: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    from neocloud.studio.runtime import builtin_catalog

    catalog = builtin_catalog()
    now = datetime.fromisoformat(job["now"])
    gate = asyncio.Semaphore(int(job["concurrency"]))

    async def one(line: dict[str, Any]) -> Outcome:
        async with gate:
            rid = request_id(job["batch_id"], line["custom_id"])
            return await execute(catalog, now, job["endpoint"], line["body"], rid)

    window = max(1, int(job["concurrency"]))
    for start in range(0, len(lines), window):
        part = lines[start : start + window]
        outs = await asyncio.gather(*(one(line) for line in part))
        for line, out in zip(part, outs, strict=True):
            _say(outcome_message(int(line["index"]), out))


def main(argv: list[str]) -> None:
    work = Path(argv[0])
    threading.Thread(target=_watch_controller, daemon=True).start()
    job = json.loads((work / "job.json").read_text())
    lines = [json.loads(raw) for raw in (work / "lines.jsonl").read_text().splitlines() if raw]
    _say({"kind": "start", "host": socket.gethostname(), "pid": os.getpid()})
    asyncio.run(_run(job, lines))
    _say({"kind": "done"})
    # Everything is said and flushed: end here, not through the interpreter's shutdown, which
    # aborts (SIGABRT) when a daemon thread (the engine's, the controller watch) holds a lock.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
