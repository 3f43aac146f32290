"""Experiment tracking of fine-tuning jobs: each job as an MLflow run (docs/studio-jobs.md).

The ``Tracker`` port says what a tracking backend does (open or reopen a job's run, log step
metrics, end the run with the adapter); ``NoTracker`` (tracking off) and ``MlflowTracker``
(``NEOCLOUD_MLFLOW_TRACKING_URI`` set) implement it. ``JobTracking`` is what the worker holds for
one job: it calls the tracker and makes sure tracking never fails or stalls the job. A failed
call becomes one ``warn`` event on the job per outage; the tracker is then left alone for
``retry_s`` (by the clock) while step metrics wait in a bounded buffer, and tried again after.

The run's id is stored on the job row (``mlflow_run_id``), written under the worker's lease, so
the worker that resumes a job after a restart reopens the same run and logs only the steps after
the last one the run already has (a resumed epoch replays steps the run saw before the crash).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.settings import Settings
from neocloud.studio.finetuning import service
from neocloud.studio.finetuning.domain import JobStatus
from neocloud.studio.finetuning.training import StepMetrics
from neocloud.studio.tables import FineTuneJobRow

log = logging.getLogger("neocloud.studio.finetuning.tracking")

# The job's final state → the MLflow run's.
RUN_STATUS = {
    JobStatus.SUCCEEDED: "FINISHED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELLED: "KILLED",
}
METRICS = ("train_loss", "valid_loss", "train_mean_token_accuracy")
LOG_BATCH_MAX = 1000  # MLflow's log_batch takes at most 1,000 metrics a call
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Point:
    """One step's metrics and when the step ended."""

    metrics: StepMetrics
    at: datetime


@dataclass(frozen=True, slots=True)
class OpenRun:
    """A run opened or reopened: its id, and the last step it already has (0: none)."""

    run_id: str
    last_step: int


class Tracker(Protocol):
    """A tracking backend. Any method may raise; ``JobTracking`` turns that into a warning."""

    def start(self, job: FineTuneJobRow, *, run_id: str | None, now: datetime) -> OpenRun | None:
        """Open the job's run (reopen ``run_id`` when given); None: this tracker keeps none."""
        ...

    def log_metrics(self, run_id: str, points: Sequence[Point]) -> None:
        """Log each point's metrics at its step."""
        ...

    def finish(
        self, run_id: str, status: JobStatus, *, adapter: Path | None, now: datetime
    ) -> None:
        """Upload ``adapter`` (a directory) when given, and end the run as ``status``."""
        ...


class NoTracker:
    """Tracking off: no run."""

    def start(self, job: FineTuneJobRow, *, run_id: str | None, now: datetime) -> OpenRun | None:
        return None

    def log_metrics(self, run_id: str, points: Sequence[Point]) -> None:
        return None

    def finish(
        self, run_id: str, status: JobStatus, *, adapter: Path | None, now: datetime
    ) -> None:
        return None


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def run_params(job: FineTuneJobRow) -> dict[str, str]:
    """What a job's run records as parameters: what was asked, never a secret or a path."""
    hp = service.hyperparameters_of(job)
    params: dict[str, Any] = {
        "job_id": job.id,
        "org_id": job.org_id,
        "base_model": job.model,
        "training_file": job.training_file,
        "validation_file": job.validation_file or "",
        "suffix": job.suffix or "",
        "seed": job.seed,
        "runner": job.runner,
        **hp.as_dict(),
        "learning_rate": hp.learning_rate,
    }
    return {k: str(v) for k, v in params.items()}


class MlflowTracker:
    """Tracks to an MLflow tracking server with the ``mlflow`` client (``mlflow-skinny``).

    One experiment per org, ``<experiment_prefix><org id>``, made when first needed. Each MLflow
    HTTP request gives up after ``timeout_s`` and is not retried: ``JobTracking`` retries later.
    """

    def __init__(self, uri: str, *, experiment_prefix: str = "neocloud/", timeout_s: int = 5):
        # MLflow reads its HTTP timeout and retries only from these variables, at each request;
        # its defaults (120 s, 7 retries with backoff) would hold a job for minutes.
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        # Before mlflow's first import: its usage telemetry would report to MLflow's servers
        # from a thread that sets and unsets a variable of os.environ as it goes, racing any
        # copy of the environment (requests copies it on every call: a KeyError at random).
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        from mlflow import MlflowClient

        self.uri = uri
        self.experiment_prefix = experiment_prefix
        self.client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, org_id: str) -> str:
        from mlflow.exceptions import MlflowException

        name = f"{self.experiment_prefix}{org_id}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, tags={"neocloud.org_id": org_id}))
        except MlflowException:  # another worker made it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start(self, job: FineTuneJobRow, *, run_id: str | None, now: datetime) -> OpenRun | None:
        from mlflow.entities import Param, RunTag

        if run_id is not None:
            self.client.get_run(run_id)  # raises when the server lost it
            history = self.client.get_metric_history(run_id, "train_loss")
            return OpenRun(run_id, max((m.step for m in history), default=0))
        tags = {
            "neocloud.job_id": job.id,
            "neocloud.org_id": job.org_id,
            "neocloud.base_model": job.model,
        }
        run = self.client.create_run(
            self.experiment_id(job.org_id), start_time=_ms(now), tags=tags, run_name=job.id
        )
        params = [Param(k, v) for k, v in run_params(job).items()]
        self.client.log_batch(run.info.run_id, params=params, tags=[RunTag("source", "neocloud")])
        return OpenRun(run.info.run_id, 0)

    def log_metrics(self, run_id: str, points: Sequence[Point]) -> None:
        from mlflow.entities import Metric

        metrics = []
        for p in points:
            m, at = p.metrics, _ms(p.at)
            values = (m.train_loss, m.valid_loss, m.train_mean_token_accuracy)
            for key, value in zip(METRICS, values, strict=True):
                if value is not None:
                    metrics.append(Metric(key, value, at, m.step))
            metrics.append(Metric("epoch", m.epoch, at, m.step))
        for start in range(0, len(metrics), LOG_BATCH_MAX):
            self.client.log_batch(run_id, metrics=metrics[start : start + LOG_BATCH_MAX])

    def finish(
        self, run_id: str, status: JobStatus, *, adapter: Path | None, now: datetime
    ) -> None:
        if adapter is not None:
            self.client.log_artifacts(run_id, str(adapter), artifact_path="adapter")
        self.client.set_terminated(run_id, status=RUN_STATUS[status], end_time=_ms(now))


class JobTracking:
    """One claimed job's run, for the worker: never raises, never waits past the tracker's
    own timeouts. Steps are sent at most every ``flush_s`` seconds, and at each epoch's last
    step (before its checkpoint: a restart replays from there, so no step is lost to it).
    ``retry_s``: seconds between tries while the tracker fails; ``max_pending``: step points
    kept meanwhile (the oldest dropped past it)."""

    def __init__(
        self,
        tracker: Tracker,
        *,
        db: Database,
        clock: Clock,
        job: FineTuneJobRow,
        lease: service.Lease,
        flush_s: float = 1.0,
        retry_s: float = 60.0,
        max_pending: int = 10_000,
    ) -> None:
        self.tracker, self.db, self.clock, self.job, self.lease = tracker, db, clock, job, lease
        self.flush_s, self.retry_s, self.max_pending = flush_s, retry_s, max_pending
        self.n_epochs = service.hyperparameters_of(job).n_epochs
        self.flushed_at: datetime | None = None
        self.run: OpenRun | None = None
        self.off = False  # the tracker keeps no run (NoTracker)
        self.pending: list[Point] = []
        self.failing_since: datetime | None = None
        self.ended = False

    def start(self) -> None:
        """Open (or reopen, after a restart) the job's run."""
        self._open()

    def step(self, m: StepMetrics) -> None:
        """Log step ``m`` (buffered while the tracker fails)."""
        if self.off or self.ended:
            return
        if self.run is not None and m.step <= self.run.last_step:
            return  # the run has this step from before a restart
        now = self.clock.now()
        self.pending.append(Point(m, now))
        del self.pending[: -self.max_pending]
        epoch_end = m.step == m.epoch * (m.total_steps // self.n_epochs)
        since = self.flushed_at
        if epoch_end or since is None or (now - since).total_seconds() >= self.flush_s:
            self._flush()

    def end(self, status: JobStatus, adapter: Path | None = None) -> None:
        """End the run as ``status`` (a final job state), uploading ``adapter`` when given."""
        if self.off or self.ended:
            return
        self.ended = True  # and one last try, whatever the rest (see _call)
        if not self._flush():
            return
        run = self.run
        assert run is not None
        self._call(
            lambda: self.tracker.finish(run.run_id, status, adapter=adapter, now=self._now())
        )

    def lost(self) -> None:
        """The worker lost the job: end the run as killed when it was cancelled; when another
        worker took it over, that worker goes on with the run."""
        if self.off or self.ended or self.run is None:
            return
        if job_status(db=self.db, job_id=self.job.id) == JobStatus.CANCELLED:
            self.end(JobStatus.CANCELLED)

    # -- guarded calls ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return self.clock.now()

    def _open(self) -> bool:
        if self.run is not None:
            return True
        ok, opened = self._call(
            lambda: self.tracker.start(self.job, run_id=self.job.mlflow_run_id, now=self._now())
        )
        if not ok:
            return False
        if opened is None:
            self.off = True
            return False
        self.run = opened
        if opened.run_id != self.job.mlflow_run_id:
            set_run_id(db=self.db, lease=self.lease, run_id=opened.run_id)
            self.job.mlflow_run_id = opened.run_id
        return True

    def _flush(self) -> bool:
        """Open the run if needed and send the pending points; False while the tracker fails."""
        if not self._open():
            return False
        run = self.run
        assert run is not None
        points = [p for p in self.pending if p.metrics.step > run.last_step]
        if points and not self._call(lambda: self.tracker.log_metrics(run.run_id, points))[0]:
            return False
        self.pending.clear()
        self.flushed_at = self.clock.now()
        return True

    def _call(self, fn: Callable[[], T]) -> tuple[bool, T | None]:
        """``(True, fn())``; ``(False, None)`` (and a warning event, once per outage) when it
        raises or while the tracker rests after a failure."""
        now = self.clock.now()
        since = self.failing_since
        resting = since is not None and (now - since).total_seconds() < self.retry_s
        if resting and not self.ended:
            return False, None
        try:
            result = fn()
        except Exception as exc:  # a tracker's failure, whatever it is, never fails the job
            log.warning("tracking of fine-tuning job %s failed: %s", self.job.id, exc)
            if since is None:
                text = f"Tracking failed, the job goes on without it: {_short(exc)}"
                add_event(db=self.db, clock=self.clock, job_id=self.job.id, message=text)
            self.failing_since = now
            return False, None
        if since is not None:
            self.failing_since = None
            add_event(
                db=self.db,
                clock=self.clock,
                job_id=self.job.id,
                message="Tracking resumed",
                level="info",
            )
        return True, result


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -- the job row's side ---------------------------------------------------------------------------


def set_run_id(*, db: Database, lease: service.Lease, run_id: str) -> None:
    """Store the job's run id, under the worker's lease (a worker that lost it writes nothing)."""
    with db.transaction() as s:
        s.execute(
            sa.update(FineTuneJobRow)
            .where(FineTuneJobRow.id == lease.job_id, FineTuneJobRow.lease_token == lease.token)
            .values(mlflow_run_id=run_id)
        )


def add_event(
    *, db: Database, clock: Clock, job_id: str, message: str, level: str = "warn"
) -> None:
    """An event on the job about its tracking (a ``warn`` one by default)."""
    with db.transaction() as s:
        service.add_event(s, job_id, clock.now(), message, level=level)


def job_status(*, db: Database, job_id: str) -> JobStatus | None:
    with db.transaction() as s:
        status = s.scalar(sa.select(FineTuneJobRow.status).where(FineTuneJobRow.id == job_id))
    return None if status is None else JobStatus(status)


def tracker_for(settings: Settings) -> Tracker:
    """The MLflow tracker when ``mlflow_tracking_uri`` is set (and the ``mlflow`` client is
    installed: else a warning in the log and no tracking); tracking off otherwise."""
    if not settings.mlflow_tracking_uri:
        return NoTracker()
    try:
        return MlflowTracker(
            settings.mlflow_tracking_uri,
            experiment_prefix=settings.mlflow_experiment_prefix,
            timeout_s=settings.mlflow_timeout_s,
        )
    except ImportError:
        log.warning(
            "NEOCLOUD_MLFLOW_TRACKING_URI is set but the mlflow client is missing "
            "(pip install 'neocloud[mlflow]'): fine-tuning jobs are not tracked"
        )
        return NoTracker()
