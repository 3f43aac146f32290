"""Batches on the node compute gave them (``studio_runner=node``): the batch worker's port to it.

A batch whose every request is for a model of the built-in engines runs on its instance's node,
through the node's driver (``studio/onnode.py``): this package's code is staged once per node
and version under ``<workdir>/code/<digest>`` (readable by all); the requests still to run and
the batch's settings under ``<workdir>/jobs/<batch id>`` (the instance's login user's, mode
700); then ``python -m neocloud.studio.batches.remote`` runs as that user with the node's Python
(which needs this package's dependencies: ``pip install neocloud`` in the image) and prints
each request's outcome as it finishes. The worker records them chunk by chunk exactly as it
records its own (billed, then recorded), and between chunks checks the batch's lease, cancel,
expiry and capacity; stopping closes the connection and the node's run ends with it. The job's
directory is removed from the node whatever happened.

A batch with a request for an upstream model (the upstream is the GPU server already) or a
fine-tuned one runs in the worker's process, as does any batch whose node cannot run commands
(the simulator).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers
from neocloud.studio.batches.executor import Outcome, outcome_of
from neocloud.studio.catalog import Catalog
from neocloud.studio.onnode import NodeOptions, dir_digest, node_target, pack, unpack_script
from neocloud.studio.tables import StudioBatchRow

log = logging.getLogger("neocloud.studio.batches")
PACKAGE = Path(__file__).resolve().parents[2]  # the neocloud package's directory


def builtin_only(catalog: Catalog, models: Sequence[str]) -> bool:
    """Whether every one of ``models`` is served here by a built-in engine (not an upstream,
    not a fine-tuned adapter): what the node can run with this package alone."""
    for name in set(models):
        model = catalog.models.get(name)
        if model is None or model.id.startswith("ft:"):
            return False
        if model.engine not in catalog.text_engines and model.engine not in (
            catalog.embedding_engines
        ):
            return False  # an upstream's
    return True


class BatchNodeRunner:
    """Runs a batch's requests on its node (see the module); ``NotOnNode``,
    ``NodeUnreachable`` and ``NodeRunFailed`` (``studio/onnode.py``) say when it cannot."""

    def __init__(self, db: Database, drivers: Drivers, options: NodeOptions | None = None) -> None:
        self.db, self.drivers = db, drivers
        self.options = options or NodeOptions()
        self._digest: str | None = None

    def run(
        self,
        row: StudioBatchRow,
        todo: Sequence[tuple[int, str, Any]],
        *,
        now: datetime,
        concurrency: int,
        on_start: Callable[[str], None],
        on_outcome: Callable[[int, Outcome], None],
    ) -> None:
        """Run ``todo`` (index, ``custom_id``, body) on the batch's node, each outcome to
        ``on_outcome`` in index order (it may raise to stop the run)."""
        target = node_target(self.db, self.drivers, row.id)
        if self._digest is None:
            self._digest = dir_digest(PACKAGE)
        code = f"{self.options.workdir}/code/{self._digest[:16]}"
        work = f"{self.options.workdir}/jobs/{row.id}"
        try:
            target.stage_shared(PACKAGE, f"{code}/neocloud", self.options)
            spec = {
                "endpoint": row.endpoint,
                "batch_id": row.id,
                "now": now.isoformat(),
                "concurrency": concurrency,
            }
            lines = "".join(
                json.dumps({"index": i, "custom_id": c, "body": b}, separators=(",", ":")) + "\n"
                for i, c, b in todo
            )
            files = {"job.json": json.dumps(spec).encode(), "lines.jsonl": lines.encode()}
            script = unpack_script(work, owner=target.login)
            target.root(script, "staging the batch", self.options, stdin=pack(files))

            def on_message(message: dict[str, Any]) -> None:
                if message.get("kind") == "start":
                    on_start(
                        f"node {target.node.hostname} (host {message['host']},"
                        f" pid {message['pid']})"
                    )
                elif message.get("kind") == "outcome":
                    on_outcome(int(message["index"]), outcome_of(message))

            target.run_module(
                "neocloud.studio.batches.remote",
                [work],
                work=work,
                pythonpath=code,
                what="the batch",
                options=self.options,
                on_message=on_message,
            )
        finally:
            target.cleanup(work)
