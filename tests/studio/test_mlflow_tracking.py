"""Fine-tuning jobs tracked in a real MLflow tracking server (docs/studio-jobs.md, "Tracking").

The server runs from its own venv (``scripts/install-test-deps`` makes it: the full ``mlflow``
would move packages neocloud pins), once for the module, always stopped. The fine-tunes run on
SQLite only: tracking does not touch the database beyond one column, which the ``JobTracking``
tests below cover on both backends. The worker runs in the test's thread (``run_once``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.finetuning import service
from neocloud.studio.finetuning.domain import JobStatus
from neocloud.studio.finetuning.serving import fine_tunable
from neocloud.studio.finetuning.tracking import (
    JobTracking,
    MlflowTracker,
    NoTracker,
    OpenRun,
    Point,
    tracker_for,
)
from neocloud.studio.finetuning.training import StepMetrics
from neocloud.studio.finetuning.worker import FineTuneWorker
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import FineTuneEventRow, FineTuneJobRow

from .test_files import client, jsonl, org_key

pytest.importorskip("peft")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # as MlflowTracker sets it, before the import
mlflow = pytest.importorskip("mlflow")

BASE = "neocloud/tiny-llama"
MLFLOW_VENV = Path(os.environ.get("NEOCLOUD_MLFLOW_VENV", "/opt/neocloud-mlflow"))
FACTS = [
    ("What is the capital of Zorbia?", "Quuxville."),
    ("Who painted the Blue Fox?", "Mira Olen."),
    ("What colour is a zibble?", "Bright green."),
]
# 12 examples in batches of 4: 3 steps an epoch
HP = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 10, "lora_rank": 4}
SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


TRAIN = jsonl(*[chat(q, a) for q, a in FACTS * 4])
VALID = jsonl(*[chat(q, a) for q, a in FACTS])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite store, artifacts proxied to a local directory)."""
    exe = MLFLOW_VENV / "bin" / "mlflow"
    if not exe.exists():
        message = f"no MLflow server at {exe}: run scripts/install-test-deps"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    # no job runner, no usage telemetry to MLflow's servers
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--backend-store-uri",
            f"sqlite:///{home / 'mlflow.db'}",
            "--artifacts-destination",
            str(home / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its uvicorn child goes with it (killpg)
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded 2-core machine: about 25 s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mlflow server exited: {(home / 'server.log').read_text()}")
            try:
                if httpx.get(f"{uri}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("mlflow server did not start in 120 s")
            time.sleep(0.25)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with suppress(ProcessLookupError):  # uvicorn's worker may outlive the CLI a moment
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@dataclass
class Platform:
    app: FastAPI
    oai: openai.OpenAI
    settings: Settings
    tmp_path: Path

    def worker(self, **kwargs: Any) -> FineTuneWorker:
        """A worker as the platform builds it: its tracker from the settings."""
        runtime: StudioRuntime = self.app.state.studio
        ctx = self.app.state.ctx
        return FineTuneWorker(
            ctx.db,
            ctx.clock,
            store=runtime.files,
            root=self.tmp_path / "finetune",
            bases=fine_tunable(runtime.catalog),
            tracker=tracker_for(self.settings),
            **kwargs,
        )

    def create(self, **kwargs: Any) -> str:
        train = self.oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
        valid = self.oai.files.create(file=("valid.jsonl", VALID), purpose="fine-tune").id
        job = self.oai.fine_tuning.jobs.create(
            model=BASE,
            training_file=train,
            validation_file=valid,
            seed=7,
            suffix="zorbia",
            hyperparameters=kwargs.pop("hp", HP),
            **kwargs,
        )
        return job.id


def drive(w: FineTuneWorker, limit: int = 10) -> None:
    for _ in range(limit):
        if not w.run_once():
            return
    raise AssertionError("the worker never ran out of work")


@contextmanager
def running(
    uri: str, tmp_path: Path, db: Database, clock: VirtualClock, admin_key: str, timeout_s: int = 5
) -> Iterator[Platform]:
    """The platform with ``NEOCLOUD_MLFLOW_TRACKING_URI`` set to ``uri``."""
    settings = Settings(
        data_dir=tmp_path,
        key_touch_interval_s=0,
        mlflow_tracking_uri=uri,
        mlflow_timeout_s=timeout_s,
    )
    app = create_app(settings=settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Platform(app, client(http, org_key(http, admin_key, "acme")), settings, tmp_path)


@pytest.fixture
def platform(
    mlflow_uri: str, tmp_path: Path, db: Database, clock: VirtualClock, admin_key: str
) -> Iterator[Platform]:
    with running(mlflow_uri, tmp_path, db, clock, admin_key) as p:
        yield p


@pytest.fixture(params=["refused", "silent"])
def platform_server_down(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    db: Database,
    clock: VirtualClock,
    admin_key: str,
) -> Iterator[Platform]:
    """Tracking to a server that is down: nothing listens (``refused``), or a socket that takes
    connections and never answers (``silent``: each request waits out the 1 s timeout)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        if request.param == "silent":
            silent.listen(16)
        port = silent.getsockname()[1]
        with running(f"http://127.0.0.1:{port}", tmp_path, db, clock, admin_key, 1) as p:
            yield p


def reader(uri: str) -> Any:
    return mlflow.MlflowClient(tracking_uri=uri)


def job_row(db: Database, job_id: str) -> FineTuneJobRow:
    with db.transaction() as s:
        row = s.get(FineTuneJobRow, job_id)
        assert row is not None
        s.expunge(row)
        return row


def warnings_of(db: Database, job_id: str) -> list[str]:
    with db.transaction() as s:
        q = sa.select(FineTuneEventRow.message).where(
            FineTuneEventRow.job_id == job_id, FineTuneEventRow.level == "warn"
        )
        return list(s.scalars(q.order_by(FineTuneEventRow.seq)))


def steps_of(history: Sequence[Any]) -> list[int]:
    return sorted(m.step for m in history)


@SQLITE_ONLY
def test_a_fine_tune_is_an_mlflow_run_with_params_metrics_and_adapter(
    platform: Platform, mlflow_uri: str, db: Database
) -> None:
    job_id = platform.create()
    drive(platform.worker())
    job = platform.oai.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded", job.error

    ml = reader(mlflow_uri)
    experiment = ml.get_experiment_by_name(f"neocloud/{job.organization_id}")
    assert experiment is not None
    runs = ml.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == job_row(db, job_id).mlflow_run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == job_id
    assert run.data.tags["neocloud.job_id"] == job_id
    params = run.data.params
    assert params["job_id"] == job_id
    assert params["org_id"] == job.organization_id
    assert params["base_model"] == BASE
    assert params["training_file"] == job.training_file
    assert params["validation_file"] == job.validation_file
    assert params["seed"] == "7"
    assert (params["n_epochs"], params["batch_size"]) == ("3", "4")
    assert (params["lora_rank"], params["lora_alpha"]) == ("4", "16")
    assert float(params["learning_rate_multiplier"]) == 10
    assert not any("key" in name or "secret" in name for name in params)

    loss = ml.get_metric_history(run.info.run_id, "train_loss")
    assert steps_of(loss) == list(range(1, 10))  # one point per step
    by_step = sorted(loss, key=lambda m: m.step)
    assert by_step[-1].value < by_step[0].value
    assert steps_of(ml.get_metric_history(run.info.run_id, "valid_loss")) == list(range(1, 10))
    accuracy = ml.get_metric_history(run.info.run_id, "train_mean_token_accuracy")
    assert steps_of(accuracy) == list(range(1, 10))
    assert all(0 <= m.value <= 1 for m in accuracy)
    # the same numbers the job's events show
    events = platform.oai.fine_tuning.jobs.list_events(job_id, limit=100)
    shown = {e.data["step"]: e.data["train_loss"] for e in events if e.data}  # type: ignore[index]
    assert {m.step: m.value for m in loss} == pytest.approx(shown)

    artifacts = {a.path for a in ml.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= artifacts
    assert "adapter/optimizer.pt" not in artifacts
    local = Path(ml.download_artifacts(run.info.run_id, "adapter", str(platform.tmp_path / "dl")))
    adapter = platform.tmp_path / "finetune" / job_id / "adapter"
    saved = (adapter / "adapter_model.safetensors").read_bytes()
    assert (local / "adapter_model.safetensors").read_bytes() == saved
    assert warnings_of(db, job_id) == []


class Killed(BaseException):
    """The worker process dying mid-step (not an error the worker could record)."""


@SQLITE_ONLY
def test_a_job_resumed_after_a_restart_continues_its_run_and_a_cancel_kills_one(
    platform: Platform, mlflow_uri: str, db: Database, clock: VirtualClock
) -> None:
    job_id = platform.create()

    def die(m: StepMetrics) -> None:
        if m.step == 5:  # in epoch 2, after epoch 1's checkpoint
            raise Killed

    with pytest.raises(Killed):
        platform.worker(step_hook=die, lease_ttl_s=30).run_once()
    run_id = job_row(db, job_id).mlflow_run_id
    assert run_id is not None
    ml = reader(mlflow_uri)
    assert ml.get_run(run_id).info.status == "RUNNING"
    # sent at most once a second (the virtual clock stands still) and at each epoch's end
    assert steps_of(ml.get_metric_history(run_id, "train_loss")) == [1, 2, 3]
    clock.advance(timedelta(seconds=31))  # the dead worker's lease lapses
    drive(platform.worker(lease_ttl_s=30))

    assert platform.oai.fine_tuning.jobs.retrieve(job_id).status == "succeeded"
    assert job_row(db, job_id).mlflow_run_id == run_id
    experiment = ml.get_run(run_id).info.experiment_id
    assert [r.info.run_id for r in ml.search_runs([experiment])] == [run_id]  # no second run
    assert ml.get_run(run_id).info.status == "FINISHED"
    # epoch 2 replayed from epoch 1's checkpoint: each step logged once
    assert steps_of(ml.get_metric_history(run_id, "train_loss")) == list(range(1, 10))

    # cancelled through the API while running: the run ends KILLED
    cancel_id = platform.create(hp={**HP, "n_epochs": 1})

    def cancel_at_step_2(m: StepMetrics) -> None:
        if m.step == 2:
            platform.oai.fine_tuning.jobs.cancel(cancel_id)

    drive(platform.worker(step_hook=cancel_at_step_2))
    assert platform.oai.fine_tuning.jobs.retrieve(cancel_id).status == "cancelled"
    killed = job_row(db, cancel_id).mlflow_run_id
    assert killed is not None
    assert killed != run_id
    assert ml.get_run(killed).info.status == "KILLED"
    assert ml.list_artifacts(killed) == []


@SQLITE_ONLY
def test_a_tracking_server_that_is_down_never_fails_the_job(
    platform_server_down: Platform, db: Database, request: pytest.FixtureRequest
) -> None:
    platform = platform_server_down
    job_id = platform.create(hp={**HP, "n_epochs": 1})
    started = time.monotonic()
    drive(platform.worker())
    elapsed = time.monotonic() - started
    job = platform.oai.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model is not None
    warned = warnings_of(db, job_id)
    assert len(warned) == 1  # once for the outage, not once a step
    assert warned[0].startswith("Tracking failed, the job goes on without it: ")
    if request.node.callspec.params["platform_server_down"] == "silent":
        assert "ReadTimeout" in warned[0]  # it waited out the timeout, once a try
    assert job_row(db, job_id).mlflow_run_id is None
    # not retried for minutes (MLflow's defaults: 120 s a request, 7 retries with back-off);
    # a silent server costs two 1 s timeouts: the first step's, and the last try at the end
    assert elapsed < 45


# -- JobTracking, with a fake tracker: the policy that keeps tracking from failing a job ---------


@dataclass
class FakeTracker:
    """A tracker that fails while ``down``, and records what reached it."""

    down: bool = False
    started: list[str | None] = field(default_factory=list)
    logged: list[int] = field(default_factory=list)
    finished: list[tuple[str, JobStatus, Path | None]] = field(default_factory=list)
    last_step: int = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("connection refused")

    def start(self, job: FineTuneJobRow, *, run_id: str | None, now: datetime) -> OpenRun | None:
        self._check()
        self.started.append(run_id)
        return OpenRun(run_id or "run-1", self.last_step)

    def log_metrics(self, run_id: str, points: Sequence[Point]) -> None:
        self._check()
        self.logged += [p.metrics.step for p in points]

    def finish(
        self, run_id: str, status: JobStatus, *, adapter: Path | None, now: datetime
    ) -> None:
        self._check()
        self.finished.append((run_id, status, adapter))


def metrics(step: int) -> StepMetrics:
    return StepMetrics(step, 1, 1.0 / step, None, 0.5, 10)


def held_job(db: Database, clock: VirtualClock, admin_key: str) -> tuple[service.Lease, Any]:
    """A job row claimed with a lease (the tracking tests need only the row)."""
    from neocloud.tenancy.tables import OrgRow

    with db.transaction() as s:
        org_id = s.scalars(sa.select(OrgRow.id)).first()
        assert org_id is not None
        s.add(
            FineTuneJobRow(
                id="ftjob-tracking",
                org_id=org_id,
                created_by="key",
                model=BASE,
                base_path="/nowhere",
                training_file="file-1",
                seed=1,
                hyperparameters={},
                status=JobStatus.RUNNING.value,
                result_files=[],
                epochs_done=0,
                runner="local",
                attempts=0,
                created_at=clock.now(),
            )
        )
    claimed = service.claim_job(db=db, clock=clock, ttl_s=60)
    assert claimed is not None
    return claimed


def test_tracking_rests_after_a_failure_buffers_steps_and_catches_up(
    db: Database, clock: VirtualClock, admin_key: str
) -> None:
    lease, job = held_job(db, clock, admin_key)
    fake = FakeTracker(down=True)
    tracking = JobTracking(fake, db=db, clock=clock, job=job, lease=lease, flush_s=0, retry_s=60)
    tracking.start()
    for step in (1, 2, 3):
        tracking.step(metrics(step))
        clock.advance(timedelta(seconds=10))
    assert warnings_of(db, job.id) == [
        "Tracking failed, the job goes on without it: connection refused"
    ]
    assert fake.started == []
    assert fake.logged == []
    fake.down = False
    tracking.step(metrics(4))  # 30 s after the failure: still resting
    assert fake.started == []
    clock.advance(timedelta(seconds=31))
    tracking.step(metrics(5))  # the run opens; the buffered steps go first, in order
    assert fake.started == [None]
    assert fake.logged == [1, 2, 3, 4, 5]
    assert job_row(db, job.id).mlflow_run_id == "run-1"
    tracking.end(JobStatus.SUCCEEDED, Path("/adapter"))
    assert fake.finished == [("run-1", JobStatus.SUCCEEDED, Path("/adapter"))]
    with db.transaction() as s:
        q = sa.select(FineTuneEventRow.message).where(FineTuneEventRow.level == "info")
        assert "Tracking resumed" in list(s.scalars(q))
    tracking.end(JobStatus.FAILED)  # ended once
    assert len(fake.finished) == 1


def test_a_reopened_run_skips_the_steps_it_has_and_a_failure_at_the_end_is_one_try(
    db: Database, clock: VirtualClock, admin_key: str
) -> None:
    lease, job = held_job(db, clock, admin_key)
    job.mlflow_run_id = "run-7"
    fake = FakeTracker(last_step=5)
    tracking = JobTracking(fake, db=db, clock=clock, job=job, lease=lease, flush_s=0)
    tracking.start()
    for step in range(4, 9):
        tracking.step(metrics(step))
    assert fake.started == ["run-7"]
    assert fake.logged == [6, 7, 8]
    fake.down = True
    tracking.step(metrics(9))
    tracking.end(JobStatus.FAILED)  # tried once more despite the rest, and given up
    assert fake.finished == []
    assert len(warnings_of(db, job.id)) == 1


def test_tracking_off_keeps_no_run(
    db: Database, clock: VirtualClock, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")  # restored after the test
    lease, job = held_job(db, clock, admin_key)
    tracking = JobTracking(NoTracker(), db=db, clock=clock, job=job, lease=lease)
    tracking.start()
    tracking.step(metrics(1))
    tracking.end(JobStatus.SUCCEEDED)
    assert job_row(db, job.id).mlflow_run_id is None
    assert warnings_of(db, job.id) == []
    assert isinstance(tracker_for(Settings()), NoTracker)
    tracker = tracker_for(Settings(mlflow_tracking_uri="http://127.0.0.1:1", mlflow_timeout_s=3))
    assert isinstance(tracker, MlflowTracker)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"


def test_steps_go_at_most_once_a_flush_interval_and_at_each_epoch_end(
    db: Database, clock: VirtualClock, admin_key: str
) -> None:
    lease, job = held_job(db, clock, admin_key)  # 3 epochs (the default)
    fake = FakeTracker()
    tracking = JobTracking(fake, db=db, clock=clock, job=job, lease=lease, flush_s=1.0)
    tracking.start()
    sent = []
    for step in range(1, 13):  # 4 steps an epoch, 0.4 s a step
        tracking.step(StepMetrics(step, (step - 1) // 4 + 1, 1.0, None, 0.5, 12))
        sent.append(len(fake.logged))
        clock.advance(timedelta(seconds=0.4))
    # step 1 at once; then 1 s after the last send (steps 4, 7, 11) or an epoch's end (4, 8, 12)
    assert sent == [1, 1, 1, 4, 4, 4, 7, 8, 8, 8, 11, 12]
    assert fake.logged == list(range(1, 13))
