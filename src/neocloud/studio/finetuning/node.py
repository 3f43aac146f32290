"""The ``node`` runner of fine-tuning jobs (``studio_runner=node``): training on the node compute
gave the job, through that node's driver.

Capacity comes as for the ``fleet`` runner (an instance in the job's org's name, a job waiting
in ``queued`` with the reason while there is none). Once the instance runs, the runner reaches
its node with the node's driver (the ``Executor`` and ``Streamer`` capabilities: the ``ssh``
and ``redfish+ssh`` drivers have both) and

1. stages the base model once per node under ``<workdir>/bases/<name>-<digest>`` (kept for the
   next job on that node; a half-copied one is never used: it is renamed into place whole);
2. stages the job under ``<workdir>/jobs/<job id>``: the few modules of this package the
   training needs (``remote.py`` names them), the hyperparameters and seed, the examples
   (tokenized here, so the node needs no tokenizer of its own), and the checkpoint to resume,
   owned by the instance's login user (mode 700);
3. runs ``python -m neocloud.studio.finetuning.remote`` as that user (never root: the driver's
   provisioning made it for this job, and its deprovisioning kills what it left running) with
   the node's Python
   (``studio_node_python``: the image must carry torch, transformers and peft) and reads its
   lines as they come: each step's metrics are recorded as if trained here (the lease renewed,
   cancel and preemption checked); each epoch's checkpoint comes back whole and is kept under
   the worker's data dir, so a job resumes from it on any node, and it is billed then;
4. removes the job's directory from the node, whatever happened.

Stopping the job (cancelled, preempted, the worker stopping or dying) closes the connection;
the training on the node sees its standard input end and exits at once. A node whose driver
cannot run commands (the simulator of ``make run``) trains in the worker's process, and the
job's events say so. A node that cannot be reached pauses the job back to ``queued`` (it
resumes from its last checkpoint); training that fails on the node fails the job with the
node's last lines of standard error.

Batches run on the node the same way (``studio/batches/node.py``); what both share is in
``studio/onnode.py``.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neocloud.drivers.base import Drivers
from neocloud.studio.capacity import FleetCapacity
from neocloud.studio.finetuning.fleet import FleetRunner
from neocloud.studio.finetuning.remote import encode_examples, unpack_dir
from neocloud.studio.finetuning.training import Example, StepMetrics, Trainer
from neocloud.studio.finetuning.worker import Paused
from neocloud.studio.onnode import (
    NodeOptions,
    NodeTarget,
    NodeUnreachable,
    NotOnNode,
    dir_digest,
    node_target,
    pack,
    unpack_script,
)
from neocloud.studio.tables import FineTuneJobRow

log = logging.getLogger("neocloud.studio.finetuning")

# What the training on the node imports of this package (and nothing else of it).
REMOTE_MODULES = (
    "neocloud",
    "neocloud.kernel",
    "neocloud.kernel.errors",
    "neocloud.studio",
    "neocloud.studio.jsonl",
    "neocloud.studio.finetuning",
    "neocloud.studio.finetuning.domain",
    "neocloud.studio.finetuning.training",
    "neocloud.studio.finetuning.remote",
)
STEP_FIELDS = StepMetrics.__slots__


def code_zip() -> bytes:
    """The modules in ``REMOTE_MODULES``, as a zip to put on ``PYTHONPATH``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in REMOTE_MODULES:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise RuntimeError(f"module {name} has no source file to ship")
            package = spec.submodule_search_locations is not None
            arcname = name.replace(".", "/") + ("/__init__.py" if package else ".py")
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(info, Path(spec.origin).read_bytes())
    return buffer.getvalue()


class NodeRunner(FleetRunner):
    """Trains each job on its instance's node, through the node's driver (see the module)."""

    name = "node"

    def __init__(
        self, capacity: FleetCapacity, drivers: Drivers, options: NodeOptions | None = None
    ) -> None:
        super().__init__(capacity)
        self.drivers = drivers
        self.options = options or NodeOptions()
        self._digests: dict[Path, str] = {}
        self._code: bytes | None = None

    def train(
        self,
        job: FineTuneJobRow,
        trainer: Trainer,
        train: list[Example],
        valid: list[Example],
        *,
        start_epoch: int,
        on_step: Callable[[StepMetrics], None],
        on_epoch: Callable[[int, int, Path], None],
        on_note: Callable[[str], None],
    ) -> None:
        try:
            target = node_target(self.capacity.db, self.drivers, job.id)
        except NodeUnreachable as exc:  # the job waits, to resume from its last checkpoint
            raise Paused(exc.reason) from None
        except NotOnNode as exc:
            on_note(str(exc))
            super().train(
                job,
                trainer,
                train,
                valid,
                start_epoch=start_epoch,
                on_step=on_step,
                on_epoch=on_epoch,
                on_note=on_note,
            )
            return
        work = f"{self.options.workdir}/jobs/{job.id}"
        try:
            base = self._stage_base(target, trainer.base_path)
            self._stage_job(target, work, trainer, train, valid, start_epoch)
            self._run(target, work, base, trainer, on_step, on_epoch, on_note)
        except NodeUnreachable as exc:
            raise Paused(exc.reason) from None
        finally:
            target.cleanup(work)

    def _stage_base(self, target: NodeTarget, base: Path) -> str:
        """The base model's directory on the node, copied there unless it already is."""
        digest = self._digests.get(base)
        if digest is None:
            digest = self._digests[base] = dir_digest(base)
        where = f"{self.options.workdir}/bases/{base.name}-{digest[:16]}"
        target.stage_shared(base, where, self.options)
        return where

    def _stage_job(
        self,
        target: NodeTarget,
        work: str,
        trainer: Trainer,
        train: list[Example],
        valid: list[Example],
        start_epoch: int,
    ) -> None:
        if self._code is None:
            self._code = code_zip()
        spec = {
            "hyperparameters": trainer.hp.as_dict(),
            "seed": trainer.seed,
            "start_epoch": start_epoch,
        }
        files = {
            "code.zip": self._code,
            "job.json": json.dumps(spec).encode(),
            "train.json": encode_examples(train).encode(),
            "valid.json": encode_examples(valid).encode(),
        }
        dirs = {}
        if start_epoch:
            dirs[f"checkpoints/epoch-{start_epoch}"] = trainer.checkpoint_path(start_epoch)
        script = unpack_script(work, owner=target.login)
        target.root(script, "staging the job", self.options, stdin=pack(files, dirs))

    def _run(
        self,
        target: NodeTarget,
        work: str,
        base: str,
        trainer: Trainer,
        on_step: Callable[[StepMetrics], None],
        on_epoch: Callable[[int, int, Path], None],
        on_note: Callable[[str], None],
    ) -> None:
        def on_message(message: dict[str, Any]) -> None:
            kind = message.get("kind")
            if kind == "start":
                on_note(
                    f"Training on node {target.node.hostname} (host {message['host']},"
                    f" pid {message['pid']}, {message['device']})"
                )
            elif kind == "step":
                on_step(StepMetrics(**{k: message[k] for k in STEP_FIELDS}))
            elif kind == "epoch":
                epoch, step = int(message["epoch"]), int(message["step"])
                path = self._keep_checkpoint(trainer, epoch, message["checkpoint"])
                on_epoch(epoch, step, path)

        target.run_module(
            "neocloud.studio.finetuning.remote",
            [work, base],
            work=work,
            pythonpath=f"{work}/code.zip",
            what="training",
            options=self.options,
            on_message=on_message,
        )

    def _keep_checkpoint(self, trainer: Trainer, epoch: int, packed: str) -> Path:
        """Epoch ``epoch``'s checkpoint from the node, written where a local one would be."""
        final = trainer.checkpoint_path(epoch)
        partial = final.with_name(final.name + ".part")
        shutil.rmtree(partial, ignore_errors=True)
        unpack_dir(base64.b64decode(packed), partial)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        return final
