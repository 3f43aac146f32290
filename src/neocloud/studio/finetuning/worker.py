"""The fine-tuning worker: a reconciler that claims jobs with a lease and drives each one.

claim (a lease) → validate the files → ask the runner for capacity (no capacity: the job stays
``queued`` with the reason) → train epoch by epoch, a checkpoint and its billing after each →
deploy the adapter. A worker that dies leaves its lease to lapse; the next worker to claim the
job resumes from its last checkpoint (``epochs_done``), and the epochs already billed are not
billed again. A worker that stops on purpose lets its lease go at the next step. Training is
tracked through the ``Tracker`` port (tracking.py: an MLflow run per job, or none).

Runners (the ``Runner`` port): ``LocalRunner`` trains in this process with no fleet capacity
(``make run``, tests); ``FleetRunner`` (``studio/finetuning/fleet.py``, ``studio_runner=fleet``)
first gets the job an instance in its org's name and trains once it runs, pausing back to
``queued`` at the next step when the instance is preempted; ``NodeRunner``
(``studio/finetuning/node.py``, ``studio_runner=node``) does the same and trains *on* that
instance's node, through the node's driver.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import NeocloudError
from neocloud.studio.files import read_content
from neocloud.studio.filestore import FileStore
from neocloud.studio.finetuning import service
from neocloud.studio.finetuning.domain import JobStatus, fine_tuned_model_name
from neocloud.studio.finetuning.tracking import JobTracking, NoTracker, Tracker
from neocloud.studio.finetuning.training import (
    Example,
    StepMetrics,
    Trainer,
    build_examples,
    examples_tokens,
)
from neocloud.studio.jsonl import LineProblem
from neocloud.studio.poller import WorkLoop
from neocloud.studio.tables import FineTuneJobRow

log = logging.getLogger("neocloud.studio.finetuning")


class JobLost(Exception):
    """The job was cancelled, or another worker holds it now: stop without writing."""


class WorkerStopping(Exception):
    """This worker is stopping: let the lease go so another resumes the job."""


class Paused(Exception):
    """The job's capacity went (preempted): back to queued, to resume from its checkpoint."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Runner(Protocol):
    """Where a job trains."""

    name: str

    @property
    def retry_s(self) -> float:
        """How soon a job that waits for capacity is claimed again (0: at once)."""
        ...

    def acquire(self, job: FineTuneJobRow) -> str | None:
        """Capacity for ``job`` in its org's name: None when granted, else why it must wait."""
        ...

    def check(self, job: FineTuneJobRow) -> str | None:
        """At each step: None while the job keeps its capacity, else why it must pause."""
        ...

    def sweep(self) -> None:
        """Each cycle: give back the capacity of jobs that have ended."""
        ...

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
        """Run ``job``'s epochs after ``start_epoch`` with ``trainer`` (``on_note``: an event
        for the job, where it trains)."""
        ...


class LocalRunner:
    """Trains in the worker's own process (CPU, or its GPU when there is one)."""

    name = "local"
    retry_s = 0.0

    def acquire(self, job: FineTuneJobRow) -> str | None:
        return None

    def check(self, job: FineTuneJobRow) -> str | None:
        return None

    def sweep(self) -> None:
        return None

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
        trainer.run(train, valid, start_epoch=start_epoch, on_step=on_step, on_epoch=on_epoch)


@dataclass
class _Run:
    """One claimed job on this worker."""

    lease: service.Lease
    job: FineTuneJobRow
    model_name: str
    epoch_tokens: int = 0
    last: StepMetrics | None = None
    tracking: JobTracking | None = None  # its MLflow run, once training starts


class FineTuneWorker:
    """Claims and runs fine-tuning jobs, one at a time, in a thread (``start``) or on call
    (``run_once``). ``root``: where checkpoints and adapters go (``<data_dir>/studio-finetune``).
    ``step_hook`` runs after each step's metrics are recorded (tests use it to kill a worker)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        store: FileStore,
        root: Path,
        bases: Mapping[str, service.BaseModel],
        runner: Runner | None = None,
        lease_ttl_s: float = 60.0,
        interval_s: float = 1.0,
        step_hook: Callable[[StepMetrics], None] | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.db, self.clock, self.store, self.root = db, clock, store, root
        self.bases = bases
        self.runner: Runner = runner or LocalRunner()
        self.lease_ttl_s = lease_ttl_s
        self.interval_s = interval_s
        self.step_hook = step_hook
        self.tracker: Tracker = tracker or NoTracker()
        self._loop = WorkLoop("studio-finetune", self.run_once, self.interval_s, log)

    # -- the loop ------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def nudge(self) -> None:
        self._loop.nudge()

    def run_once(self) -> bool:
        """Claim one job and drive it as far as it goes now; False when none was due."""
        self.runner.sweep()
        claimed = service.claim_job(db=self.db, clock=self.clock, ttl_s=self.lease_ttl_s)
        if claimed is None:
            return False
        lease, job = claimed
        name = fine_tuned_model_name(job.model, job.org_id, job.suffix, job.id)
        run = _Run(lease, job, name)
        try:
            self._drive(run)
        except JobLost:
            log.info("fine-tuning job %s was cancelled or taken over", job.id)
            if run.tracking is not None:
                run.tracking.lost()
        except WorkerStopping:
            service.release(db=self.db, lease=lease)
        except Paused as exc:
            service.requeue(
                db=self.db,
                clock=self.clock,
                lease=lease,
                reason=exc.reason,
                retry_s=self.runner.retry_s,
            )
        except NeocloudError as exc:
            self._fail(run, exc.code, exc.message, exc.param)
        except Exception as exc:
            log.exception("fine-tuning job %s failed", job.id)
            self._fail(run, "training_failed", f"training failed: {exc}", None)
        return True

    def _fail(self, run: _Run, code: str, message: str, param: str | None) -> None:
        failed = service.fail(
            db=self.db, clock=self.clock, lease=run.lease, code=code, message=message, param=param
        )
        if failed and run.tracking is not None:
            run.tracking.end(JobStatus.FAILED)

    # -- one job -------------------------------------------------------------------------------

    def _drive(self, run: _Run) -> None:
        job = run.job
        trainer = Trainer(
            Path(job.base_path), service.hyperparameters_of(job), job.seed, self.root / job.id
        )
        train = self._examples(run, trainer, job.training_file, "training_file")
        valid = (
            self._examples(run, trainer, job.validation_file, "validation_file")
            if job.validation_file
            else []
        )
        if train is None or valid is None:
            return
        run.epoch_tokens = examples_tokens(train)
        status = JobStatus(job.status)
        if status is JobStatus.VALIDATING_FILES:
            self._move(run, JobStatus.QUEUED, "Files validated, moving job to queued state")
            status = JobStatus.QUEUED
        if status is JobStatus.QUEUED:
            reason = self.runner.acquire(job)
            if reason is not None:
                service.wait_queued(
                    db=self.db,
                    clock=self.clock,
                    lease=run.lease,
                    reason=reason,
                    retry_s=self.runner.retry_s,
                )
                return
            self._move(
                run,
                JobStatus.RUNNING,
                f"Resuming from the checkpoint of epoch {job.epochs_done}"
                if job.epochs_done
                else f"Fine-tuning job started on the {self.runner.name} runner",
            )
        else:  # resuming a running job another worker left: its capacity must still be there
            reason = self.runner.acquire(job)
            if reason is not None:
                raise Paused(reason)
            if job.epochs_done:
                self._move(
                    run,
                    JobStatus.RUNNING,
                    f"Resuming from the checkpoint of epoch {job.epochs_done}",
                )
        run.tracking = JobTracking(
            self.tracker, db=self.db, clock=self.clock, job=job, lease=run.lease
        )
        run.tracking.start()
        self.runner.train(
            job,
            trainer,
            train,
            valid,
            start_epoch=job.epochs_done,
            on_step=lambda m: self._on_step(run, m),
            on_epoch=lambda epoch, step, path: self._on_epoch(run, epoch, step, path),
            on_note=lambda text: self._note(run, text),
        )
        hp = trainer.hp
        adapter = self.root / job.id / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        shutil.copytree(
            trainer.checkpoint_path(hp.n_epochs),
            adapter,
            ignore=shutil.ignore_patterns("optimizer.pt"),
        )
        if not service.finish(
            db=self.db,
            clock=self.clock,
            lease=run.lease,
            model_name=run.model_name,
            adapter_path=adapter,
            trained_tokens=run.epoch_tokens * hp.n_epochs,
            base=self.bases.get(job.model),
        ):
            raise JobLost(job.id)
        run.tracking.end(JobStatus.SUCCEEDED, adapter)

    def _examples(
        self, run: _Run, trainer: Trainer, file_id: str | None, param: str
    ) -> list[Example] | None:
        assert file_id is not None
        content = read_content(db=self.db, store=self.store, org_id=run.job.org_id, file_id=file_id)
        examples, problems = build_examples(trainer.tokenizer, content, max_len=trainer.max_len())
        if problems or (param == "training_file" and not examples):
            shown = problems or [LineProblem(1, "no examples")]
            text = "; ".join(f"line {p.line}: {p.message}" for p in shown[:10])
            self._fail(run, f"invalid_{param}", f"invalid {param} {file_id}: {text}", param)
            return None
        return examples

    def _move(self, run: _Run, target: JobStatus, message: str) -> None:
        if not service.move(
            db=self.db, clock=self.clock, lease=run.lease, target=target, message=message
        ):
            raise JobLost(run.job.id)

    def _note(self, run: _Run, text: str) -> None:
        if not service.note(db=self.db, clock=self.clock, lease=run.lease, message=text):
            raise JobLost(run.job.id)

    def _on_step(self, run: _Run, m: StepMetrics) -> None:
        run.last = m
        text = f"Step {m.step}/{m.total_steps}: training loss={m.train_loss:.4f}"
        if m.valid_loss is not None:
            text += f", validation loss={m.valid_loss:.4f}"
        data = {
            "step": m.step,
            "epoch": m.epoch,
            "total_steps": m.total_steps,
            "train_loss": m.train_loss,
            "valid_loss": m.valid_loss,
            "train_mean_token_accuracy": m.train_mean_token_accuracy,
        }
        if not service.record_step(
            db=self.db,
            clock=self.clock,
            lease=run.lease,
            ttl_s=self.lease_ttl_s,
            message=text,
            data=data,
        ):
            raise JobLost(run.job.id)
        if run.tracking is not None:
            run.tracking.step(m)
        if self.step_hook is not None:
            self.step_hook(m)
        if self._loop.stopping:
            raise WorkerStopping(run.job.id)
        reason = self.runner.check(run.job)
        if reason is not None:
            raise Paused(reason)

    def _on_epoch(self, run: _Run, epoch: int, step: int, path: Path) -> None:
        last = run.last
        metrics = {
            "step": step,
            "train_loss": last.train_loss if last else None,
            "valid_loss": last.valid_loss if last else None,
            "train_mean_token_accuracy": last.train_mean_token_accuracy if last else None,
        }
        if not service.record_checkpoint(
            db=self.db,
            clock=self.clock,
            lease=run.lease,
            epoch=epoch,
            step=step,
            metrics=metrics,
            tokens=run.epoch_tokens,
            model_name=run.model_name,
        ):
            raise JobLost(run.job.id)


def build_worker(
    db: Database,
    clock: Clock,
    data_dir: Path,
    *,
    runner: Runner | None = None,
    tracker: Tracker | None = None,
) -> FineTuneWorker | None:
    """The platform's fine-tuning worker over the built-in models, with ``runner`` (default the
    local one), tracking to ``tracker`` (none by default); None when torch, transformers or
    peft is missing (nothing could train)."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")):
        return None
    from neocloud.studio.filestore import LocalFileStore
    from neocloud.studio.finetuning.serving import fine_tunable
    from neocloud.studio.runtime import builtin_catalog

    return FineTuneWorker(
        db,
        clock,
        store=LocalFileStore(data_dir / "studio-files"),
        root=data_dir / "studio-finetune",
        bases=fine_tunable(builtin_catalog()),
        runner=runner,
        tracker=tracker,
    )
