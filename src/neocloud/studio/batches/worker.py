"""The batch worker: a reconciler that claims batches with a lease and runs them.

claim (a lease) → validate the input file (``failed`` with line-numbered errors, or
``in_progress`` with the request count) → run the requests chunk by chunk → ``finalizing``:
write the output and error files → ``completed`` (or ``expired`` / ``cancelled``).

Each chunk: its requests run at most ``concurrency`` at a time; their usage is written to billing
(as batch usage: the price book's batch rate) *before* the chunk's results and the index to
resume from are recorded, with request ids fixed by (batch, ``custom_id``). A worker killed
between the two redoes that one chunk and bills nothing twice (billing is idempotent on the
id); a worker killed anywhere else resumes at the first request not recorded. Batches do not go
through the online rate limits or the online usage buffer.

Yielding to online traffic: before each chunk the worker asks ``online_busy()`` (in the server
process: online requests started in the last second at or above
``studio_batch_yield_rps``) and, while it is, waits ``pause_s`` and asks again, keeping its
lease. With few requests at a time (``concurrency``) a chunk in flight delays online requests
by at most that many sequences in the engine's batch.

Fleet capacity (``capacity``, ``studio_runner=fleet``): before each chunk the batch needs its
instance (spot by default) running; without it the batch stays ``in_progress`` with
``queued_reason`` (no capacity or quota, or "preempted; resumes from the last checkpoint") and
is claimed again after the capacity's ``retry_s``. A preempted batch resumes at its first
request not recorded: what was written is neither redone nor billed again.

On the node (``node``, ``studio_runner=node``, ``batches/node.py``): a batch of built-in
models' requests runs on its instance's node; its outcomes come back in order and are recorded
in the same chunks, billed then recorded, with the loop's checks between chunks (online
traffic is not waited for: the node is not the server's engines).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NeocloudError
from neocloud.studio.batches import service
from neocloud.studio.batches.domain import BatchStatus, request_id
from neocloud.studio.batches.executor import Outcome, execute
from neocloud.studio.batches.node import BatchNodeRunner, builtin_only
from neocloud.studio.catalog import Catalog
from neocloud.studio.files import read_content, store_output_file
from neocloud.studio.filestore import FileStore
from neocloud.studio.metering import BillingUsageSink, UsageRecord
from neocloud.studio.onnode import NodeRunFailed, NodeUnreachable, NotOnNode
from neocloud.studio.poller import WorkLoop
from neocloud.studio.tables import StudioBatchRow

log = logging.getLogger("neocloud.studio.batches")

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]
_ENDPOINT_NAMES = {"/v1/chat/completions": "chat.completions", "/v1/embeddings": "embeddings"}


@dataclass(frozen=True, slots=True)
class InputLine:
    index: int  # 0-based among the requests
    custom_id: str
    body: Any


class WorkerStopping(Exception):
    """This worker is stopping: let the lease go so another resumes the batch."""


class _Interrupted(Exception):
    """A run on the node stopped between chunks for the loop to look again."""


class Capacity(Protocol):
    """Where a batch gets its capacity (``studio/capacity.py``'s ``FleetCapacity``)."""

    @property
    def retry_s(self) -> float: ...

    def acquire_batch(self, row: StudioBatchRow) -> str | None:
        """None when the batch may run its next chunk, else why it waits."""
        ...

    def sweep(self) -> list[str]:
        """Give back the capacity of jobs that have ended."""
        ...


@dataclass(frozen=True, slots=True)
class BatchOptions:
    concurrency: int = 4
    chunk: int = 16
    lease_ttl_s: float = 60.0
    interval_s: float = 1.0
    pause_s: float = 0.05


class BatchWorker:
    """Claims and runs batches one at a time, in a thread (``start``) or on call
    (``run_once``). ``run`` runs a coroutine to its end (default: a fresh event loop; the server
    hands in its own loop, where its engines and upstream connections live). ``hook(stage,
    next_index)`` is called after a chunk is ``billed`` and after it is ``recorded`` (tests kill
    a worker there)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        store: FileStore,
        catalog: Callable[[], Catalog],
        run: Callable[[Coroutine[Any, Any, Any]], Any] | None = None,
        online_busy: Callable[[], bool] = lambda: False,
        options: BatchOptions | None = None,
        hook: Callable[[str, int], None] | None = None,
        capacity: Capacity | None = None,
        node: BatchNodeRunner | None = None,
    ) -> None:
        self.db, self.clock, self.store, self.catalog = db, clock, store, catalog
        self.run = run or asyncio.run
        self.online_busy = online_busy
        self.options = options or BatchOptions()
        self.hook = hook
        self.capacity = capacity  # None: no fleet capacity (the local runner)
        self.node = node  # studio_runner=node: built-in models' batches run on their node
        self._not_on_node: set[str] = set()  # batches whose node cannot run commands
        self.sink = BillingUsageSink(db, clock)
        self.paused = 0  # pauses taken for online traffic (for tests and the logs)
        self._loop = WorkLoop("studio-batches", self.run_once, self.options.interval_s, log)

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def nudge(self) -> None:
        self._loop.nudge()

    def run_once(self) -> bool:
        """Claim one batch and drive it as far as it goes now; False when none was due."""
        if self.capacity is not None:
            self.capacity.sweep()
        claimed = service.claim_batch(db=self.db, clock=self.clock, ttl_s=self.options.lease_ttl_s)
        if claimed is None:
            return False
        lease, row = claimed
        try:
            self._drive(lease, row)
        except service.LeaseLost:
            log.info("batch %s is another worker's now", row.id)
        except WorkerStopping:
            service.release(db=self.db, lease=lease)
        return True

    # -- one batch -----------------------------------------------------------------------------

    def _drive(self, lease: service.Lease, row: StudioBatchRow) -> None:
        if row.status in (BatchStatus.FINALIZING, BatchStatus.CANCELLING):
            self._finalize(lease, row, self._lines_or_none(row) or [])
            return
        lines = self._validate(lease, row)
        if lines is None:
            return
        row = service.start(db=self.db, clock=self.clock, lease=lease, total=len(lines))
        while True:
            if self._loop.stopping:
                raise WorkerStopping
            row = service.renew(
                db=self.db, clock=self.clock, lease=lease, ttl_s=self.options.lease_ttl_s
            )
            if row.status == BatchStatus.CANCELLING or self.clock.now() >= row.expires_at:
                break
            if row.next_index >= len(lines):
                service.to_status(
                    db=self.db, clock=self.clock, lease=lease, status=BatchStatus.FINALIZING
                )
                if self.hook is not None:
                    self.hook("finalizing", row.next_index)
                break
            if self.capacity is not None:
                reason = self.capacity.acquire_batch(row)
                if reason is not None:
                    service.wait(
                        db=self.db,
                        clock=self.clock,
                        lease=lease,
                        reason=reason,
                        retry_s=self.capacity.retry_s,
                    )
                    return
            if self.node is not None and self._on_node(row, lines):
                if not self._run_on_node(lease, row, lines):
                    return
                continue
            if self.online_busy():
                self.paused += 1
                time.sleep(self.options.pause_s)
                continue
            chunk = lines[row.next_index : row.next_index + self.options.chunk]
            self._run_chunk(lease, row, chunk)
        self._finalize(lease, row, lines)

    # -- on the batch's node (``studio_runner=node``) -----------------------------------------

    def _on_node(self, row: StudioBatchRow, lines: list[InputLine]) -> bool:
        """Whether ``row`` runs on its node: its node can run commands (not yet found unable)
        and every request is for a built-in engine's model."""
        if row.id in self._not_on_node:
            return False
        models = [str(line.body.get("model")) for line in lines if isinstance(line.body, dict)]
        return builtin_only(self.catalog(), models)

    def _run_on_node(
        self, lease: service.Lease, row: StudioBatchRow, lines: list[InputLine]
    ) -> bool:
        """Run the rest of ``row`` on its node, recording chunk by chunk (``_record``) and
        checking between chunks as the loop does; False when the batch must wait or failed."""
        assert self.node is not None
        now = self.clock.now()
        pending: list[tuple[InputLine, Outcome]] = []

        def flush() -> None:
            if pending:
                chunk, outs = [line for line, _ in pending], [out for _, out in pending]
                pending.clear()
                self._record(lease, row, chunk, outs, now)

        def on_outcome(index: int, out: Outcome) -> None:
            pending.append((lines[index], out))
            if len(pending) >= self.options.chunk:
                flush()
                self._between_chunks(lease)

        todo = [(line.index, line.custom_id, line.body) for line in lines[row.next_index :]]
        try:
            self.node.run(
                row,
                todo,
                now=now,
                concurrency=self.options.concurrency,
                on_start=lambda where: log.info("batch %s runs on %s", row.id, where),
                on_outcome=on_outcome,
            )
            flush()
        except _Interrupted:
            pass  # the loop looks again: cancelled, expired, or its capacity went
        except NotOnNode as exc:
            log.info("batch %s: %s", row.id, exc)
            self._not_on_node.add(row.id)
        except NodeUnreachable as exc:
            retry = self.capacity.retry_s if self.capacity is not None else 5.0
            service.wait(
                db=self.db, clock=self.clock, lease=lease, reason=exc.reason, retry_s=retry
            )
            return False
        except NodeRunFailed as exc:
            errors = [{"code": "node_failed", "message": str(exc)[:1000], "param": None}]
            service.fail(db=self.db, clock=self.clock, lease=lease, errors=errors)
            return False
        return True

    def _between_chunks(self, lease: service.Lease) -> None:
        """The loop's checks, between two chunks recorded from the node."""
        row = service.renew(
            db=self.db, clock=self.clock, lease=lease, ttl_s=self.options.lease_ttl_s
        )
        if self._loop.stopping:
            raise WorkerStopping
        if row.status == BatchStatus.CANCELLING or self.clock.now() >= row.expires_at:
            raise _Interrupted
        if self.capacity is not None and self.capacity.acquire_batch(row) is not None:
            raise _Interrupted

    def _lines_or_none(self, row: StudioBatchRow) -> list[InputLine] | None:
        try:
            content = read_content(
                db=self.db, store=self.store, org_id=row.org_id, file_id=row.input_file_id
            )
        except NeocloudError:
            return None
        lines, _ = parse_input(content, row.endpoint)
        return lines

    def _validate(self, lease: service.Lease, row: StudioBatchRow) -> list[InputLine] | None:
        try:
            content = read_content(
                db=self.db, store=self.store, org_id=row.org_id, file_id=row.input_file_id
            )
        except NeocloudError as exc:
            errors = [{"code": exc.code, "message": exc.message, "param": "input_file_id"}]
            service.fail(db=self.db, clock=self.clock, lease=lease, errors=errors)
            return None
        lines, errors = parse_input(content, row.endpoint)
        if errors:
            service.fail(db=self.db, clock=self.clock, lease=lease, errors=errors)
            return None
        return lines

    def _run_chunk(self, lease: service.Lease, row: StudioBatchRow, chunk: list[InputLine]) -> None:
        now = self.clock.now()
        catalog = self.catalog()

        async def run_all() -> list[Outcome]:
            gate = asyncio.Semaphore(self.options.concurrency)

            async def one(line: InputLine) -> Outcome:
                async with gate:
                    rid = request_id(row.id, line.custom_id)
                    return await execute(catalog, now, row.endpoint, line.body, rid)

            return list(await asyncio.gather(*(one(line) for line in chunk)))

        outcomes: list[Outcome] = self.run(run_all())
        self._record(lease, row, chunk, outcomes, now)

    def _record(
        self,
        lease: service.Lease,
        row: StudioBatchRow,
        chunk: list[InputLine],
        outcomes: list[Outcome],
        now: datetime,
    ) -> None:
        """Bill a chunk's usage, then record its results and the index to resume from."""
        usage = [
            UsageRecord(
                request_id=request_id(row.id, line.custom_id),
                org_id=row.org_id,
                key_id=row.key_id,
                model=out.model or "",
                endpoint=_ENDPOINT_NAMES[row.endpoint],
                prompt_tokens=out.prompt_tokens,
                completion_tokens=out.completion_tokens,
                aborted=False,
                created_at=now,
                batch=True,
            )
            for line, out in zip(chunk, outcomes, strict=True)
            if out.model is not None and out.status_code < 400
        ]
        if usage:
            self.sink.write(usage)
        next_index = chunk[-1].index + 1
        if self.hook is not None:
            self.hook("billed", next_index)
        results = [
            service.Result(line.index, out.status_code < 400, _output_line(row.id, line, out))
            for line, out in zip(chunk, outcomes, strict=True)
        ]
        service.record_results(db=self.db, lease=lease, results=results, next_index=next_index)
        if self.hook is not None:
            self.hook("recorded", next_index)

    def _finalize(self, lease: service.Lease, row: StudioBatchRow, lines: list[InputLine]) -> None:
        """Write the files and end the batch: ``completed``, or ``expired`` / ``cancelled``
        with the requests that did not run in the error file."""
        # As it is now: a cancel may have come in since the worker last looked.
        row = service.renew(
            db=self.db, clock=self.clock, lease=lease, ttl_s=self.options.lease_ttl_s
        )
        if row.status == BatchStatus.CANCELLING:
            end, code = BatchStatus.CANCELLED, "batch_cancelled"
        elif row.status != BatchStatus.FINALIZING and self.clock.now() >= row.expires_at:
            end, code = BatchStatus.EXPIRED, "batch_expired"
        else:
            end, code = BatchStatus.COMPLETED, ""
        done = service.results(db=self.db, batch_id=row.id)
        finished = {index for index, _, _ in done}
        outputs = [line for _, ok, line in done if ok]
        errors = [line for _, ok, line in done if not ok]
        not_run = [line for line in lines if line.index not in finished]
        for line in not_run:
            message = (
                "the batch was cancelled before this request ran"
                if end is BatchStatus.CANCELLED
                else "the batch expired before this request ran"
            )
            errors.append(
                json.dumps(
                    {
                        "id": request_id(row.id, line.custom_id),
                        "custom_id": line.custom_id,
                        "response": None,
                        "error": {"code": code, "message": message},
                    },
                    separators=(",", ":"),
                )
            )
        output_id = self._store(row, "output", outputs)
        error_id = self._store(row, "error", errors)
        service.finish(
            db=self.db,
            clock=self.clock,
            lease=lease,
            status=end,
            output_file_id=output_id,
            error_file_id=error_id,
            failed_extra=len(not_run),
        )

    def _store(self, row: StudioBatchRow, kind: str, lines: list[str]) -> str | None:
        if not lines:
            return None
        stored = store_output_file(
            db=self.db,
            clock=self.clock,
            store=self.store,
            org_id=row.org_id,
            filename=f"{row.id}_{kind}.jsonl",
            content=("\n".join(lines) + "\n").encode(),
        )
        return stored.id


def _output_line(batch_id: str, line: InputLine, out: Outcome) -> dict[str, Any]:
    """OpenAI's output line: the response as the endpoint answered it (a refused request's
    error body included, with its status)."""
    rid = request_id(batch_id, line.custom_id)
    return {
        "id": rid,
        "custom_id": line.custom_id,
        "response": {"status_code": out.status_code, "request_id": rid, "body": out.body},
        "error": None,
    }


def parse_input(content: bytes, endpoint: str) -> tuple[list[InputLine], list[dict[str, Any]]]:
    """The requests of an input file, and its problems as OpenAI's batch errors (``line``
    1-based): a line that is not a request object, or one for another endpoint than the
    batch's. Uploads were checked already; this re-checks what a batch adds (the endpoint)."""
    lines: list[InputLine] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.decode("utf-8", "replace").split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            errors.append(_error(number, "invalid_json", "the line is not valid JSON", None))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
            errors.append(
                _error(number, "invalid_request", "a line needs a custom_id", "custom_id")
            )
            continue
        if record.get("url") != endpoint:
            errors.append(
                _error(
                    number,
                    "invalid_url",
                    f"the line's url {record.get('url')!r} is not the batch's endpoint "
                    f"{endpoint!r}",
                    "url",
                )
            )
            continue
        if record["custom_id"] in seen:
            errors.append(
                _error(
                    number,
                    "duplicate_custom_id",
                    "custom_id repeats an earlier line's",
                    "custom_id",
                )
            )
            continue
        seen.add(record["custom_id"])
        lines.append(InputLine(len(lines), record["custom_id"], record.get("body")))
    if not lines and not errors:
        errors.append(_error(1, "empty_file", "the input file has no requests", None))
    return lines, errors[:100]


def _error(line: int, code: str, message: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}
