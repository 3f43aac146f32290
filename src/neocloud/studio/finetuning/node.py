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

Batches under ``studio_runner=node`` get their capacity as under ``fleet`` and still run in the
worker's process (docs/studio-jobs.md).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import logging
import shlex
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.compute.jobs import job_node
from neocloud.drivers.base import Drivers, Executor, NodeRef, Streamer
from neocloud.kernel.settings import Settings
from neocloud.studio.capacity import WAITING, FleetCapacity
from neocloud.studio.finetuning.fleet import FleetRunner
from neocloud.studio.finetuning.remote import encode_examples, unpack_dir
from neocloud.studio.finetuning.training import Example, StepMetrics, Trainer
from neocloud.studio.finetuning.worker import Paused
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


class NodeTrainingFailed(Exception):
    """The training on the node exited with an error; the message says where and why."""


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """How jobs run on nodes (``studio_node_*`` settings)."""

    python: str = "python3"  # the node's Python with torch, transformers and peft
    workdir: str = "/var/lib/neocloud/studio"  # where bases and jobs are staged on the node
    stage_timeout_s: float = 600.0  # one staging copy (a base model, a job)
    train_timeout_s: float = 7 * 24 * 3600.0  # one training run

    @classmethod
    def from_settings(cls, settings: Settings) -> NodeOptions:
        return cls(python=settings.studio_node_python, workdir=settings.studio_node_workdir)


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


def pack(files: dict[str, bytes], dirs: dict[str, Path] | None = None) -> bytes:
    """A ``.tar.gz`` of ``files`` (name → bytes) and the files under ``dirs`` (prefix → dir)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
        for prefix, root in sorted((dirs or {}).items()):
            for item in sorted(root.rglob("*")):
                if item.is_file():
                    tar.add(item, arcname=f"{prefix}/{item.relative_to(root)}")
    return buffer.getvalue()


def dir_digest(root: Path) -> str:
    """A digest of every file's name and bytes under ``root``."""
    h = hashlib.sha256()
    for item in sorted(root.rglob("*")):
        if item.is_file():
            h.update(str(item.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(item.read_bytes()).digest())
    return h.hexdigest()


def _unpack_script(target: str, *, owner: str | None = None) -> str:
    """A root script that writes the ``.tar.gz`` on its standard input to ``target`` whole:
    readable by all (a base model), or ``owner``'s alone (a job's files)."""
    t = shlex.quote(target)
    part = shlex.quote(target + ".part")
    own = (
        f" chown -R {shlex.quote(owner)}: {part}; chmod 700 {part};"
        if owner is not None
        else f" chmod -R a+rX {part};"
    )
    return (
        f"set -e; umask 022; mkdir -p $(dirname {t}); rm -rf {part}; mkdir -p {part};"
        f" tar -xzf - --no-same-owner -C {part};{own} rm -rf {t}; mv {part} {t}"
    )


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
        found = job_node(db=self.capacity.db, studio_job_id=job.id)
        if found is None:
            raise Paused(f"{WAITING}: the job's instance holds no node")
        node, login = found
        driver = self.drivers.for_node(node)
        if not isinstance(driver, Streamer) or not isinstance(driver, Executor):
            on_note(
                f"Node {node.hostname} ({node.driver} driver) cannot run commands: training"
                " in the worker process"
            )
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
            base = self._stage_base(driver, node, trainer.base_path)
            self._stage_job(driver, node, work, login, trainer, train, valid, start_epoch)
            self._run(driver, node, work, login, base, trainer, on_step, on_epoch, on_note)
        finally:
            driver.run_root(node, f"rm -rf {shlex.quote(work)}", timeout_s=60)

    # -- staging --------------------------------------------------------------------------------

    def _root(self, driver: Executor, node: NodeRef, script: str, what: str, **kw: Any) -> str:
        status, out = driver.run_root(node, script, timeout_s=self.options.stage_timeout_s, **kw)
        if status == -1:  # not reached: the job waits and resumes from its last checkpoint
            raise Paused(f"{WAITING}: {what}: {out}")
        if status != 0:
            raise NodeTrainingFailed(f"node {node.hostname}: {what} failed (exit {status}): {out}")
        return out

    def _stage_base(self, driver: Executor, node: NodeRef, base: Path) -> str:
        """The base model's directory on the node, copied there unless it already is."""
        digest = self._digests.get(base)
        if digest is None:
            digest = self._digests[base] = dir_digest(base)
        target = f"{self.options.workdir}/bases/{base.name}-{digest[:16]}"
        found = self._root(
            driver, node, f"test -d {shlex.quote(target)} && echo present || true", "base check"
        )
        if "present" not in found:
            payload = pack({}, {".": base})
            self._root(driver, node, _unpack_script(target), "staging the base", stdin=payload)
        return target

    def _stage_job(
        self,
        driver: Executor,
        node: NodeRef,
        work: str,
        login: str,
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
        script = _unpack_script(work, owner=login)
        self._root(driver, node, script, "staging the job", stdin=pack(files, dirs))

    # -- the run --------------------------------------------------------------------------------

    def _run(
        self,
        driver: Streamer,
        node: NodeRef,
        work: str,
        login: str,
        base: str,
        trainer: Trainer,
        on_step: Callable[[StepMetrics], None],
        on_epoch: Callable[[int, int, Path], None],
        on_note: Callable[[str], None],
    ) -> None:
        w = shlex.quote(work)
        script = (
            f"cd {w} && exec runuser -u {shlex.quote(login)} -- env HOME={w}"
            f" PYTHONPATH={shlex.quote(work + '/code.zip')} PYTHONUNBUFFERED=1"
            f" {shlex.quote(self.options.python)} -m neocloud.studio.finetuning.remote"
            f" {w} {shlex.quote(base)}"
        )
        done = False

        def on_line(line: str) -> None:
            nonlocal done
            if not line.startswith("{"):
                return
            message = json.loads(line)
            kind = message.get("kind")
            if kind == "start":
                on_note(
                    f"Training on node {node.hostname} (host {message['host']},"
                    f" pid {message['pid']}, {message['device']})"
                )
            elif kind == "step":
                on_step(StepMetrics(**{k: message[k] for k in STEP_FIELDS}))
            elif kind == "epoch":
                epoch, step = int(message["epoch"]), int(message["step"])
                path = self._keep_checkpoint(trainer, epoch, message["checkpoint"])
                on_epoch(epoch, step, path)
            elif kind == "done":
                done = True

        status, err = driver.stream_root(
            node,
            script,
            timeout_s=self.options.train_timeout_s,
            stdin=b"",
            on_line=on_line,
        )
        if status == -1 and not done:
            raise Paused(f"{WAITING}: training on node {node.hostname}: {err}")
        if status != 0 or not done:
            tail = " ".join(err.strip().splitlines()[-3:])[-600:]
            raise NodeTrainingFailed(
                f"training on node {node.hostname} failed (exit {status}): {tail or 'no output'}"
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


def build_node_runner(capacity: FleetCapacity, drivers: Drivers, settings: Settings) -> NodeRunner:
    return NodeRunner(capacity, drivers, NodeOptions.from_settings(settings))
