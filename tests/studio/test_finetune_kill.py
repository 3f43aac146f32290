"""A fine-tuning worker process killed with SIGKILL mid-job: the next worker resumes from the
last epoch's checkpoint once the dead one's lease lapses, and no epoch is billed twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.db.engine import Database
from neocloud.kernel.clock import SystemClock, VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.filestore import LocalFileStore
from neocloud.studio.finetuning.serving import fine_tunable
from neocloud.studio.finetuning.worker import FineTuneWorker
from neocloud.studio.tables import FineTuneEventRow

from .test_files import client, org_key
from .test_finetuning import BASE, TRAIN, training_events

WORKER = Path(__file__).with_name("finetune_worker_proc.py")
SRC = Path(__file__).resolve().parents[2] / "src"
TTL_S = 3.0


def _steps(db: Database, job_id: str) -> list[int]:
    with db.transaction() as s:
        rows = s.scalars(
            sa.select(FineTuneEventRow.data).where(
                FineTuneEventRow.job_id == job_id, FineTuneEventRow.type == "metrics"
            )
        ).all()
    return [int(d["step"]) for d in rows if d]


def test_a_killed_worker_process_is_resumed_without_double_billing(
    settings: Settings, db: Database, clock: VirtualClock, admin_key: str, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    app = create_app(settings=settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as web:
        oai = client(web, org_key(web, admin_key, "acme"))
        train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
        hp = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 10}
        job = oai.fine_tuning.jobs.create(model=BASE, training_file=train, hyperparameters=hp)

        url = db.engine.url.render_as_string(hide_password=False)
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        log = (tmp_path / "worker.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, str(settings.data_dir), str(TTL_S), "0.5"],
            stdout=log,
            stderr=log,
            env=env,
        )
        try:
            deadline = time.monotonic() + 120
            while max(_steps(db, job.id), default=0) < 5:  # in epoch 2 (3 steps an epoch)
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, "the worker did not reach step 5"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=20)
            log.close()

        killed_at = max(_steps(db, job.id))
        assert oai.fine_tuning.jobs.retrieve(job.id).status == "running"
        assert [e.event_id for e in training_events(db)] == [f"{job.id}-epoch-1"]
        runtime = app.state.studio
        second = FineTuneWorker(
            db,
            SystemClock(),
            store=LocalFileStore(settings.data_dir / "studio-files"),
            root=settings.data_dir / "studio-finetune",
            bases=fine_tunable(runtime.catalog),
            lease_ttl_s=TTL_S,
        )
        assert second.run_once() is False  # the dead worker's lease holds for TTL_S
        time.sleep(TTL_S + 0.5)
        assert second.run_once() is True

        done = oai.fine_tuning.jobs.retrieve(job.id)
        assert done.status == "succeeded", done.error
        billed = training_events(db)
        assert [e.event_id for e in billed] == [f"{job.id}-epoch-{n}" for n in (1, 2, 3)]
        assert sum(e.data["input_tokens"] for e in billed) == done.trained_tokens
        steps = _steps(db, job.id)
        assert sorted(set(steps)) == list(range(1, 10))
        assert steps.count(3) == 1  # epoch 1 was not trained again
        assert steps.count(killed_at) == 2  # epoch 2 was, from its start
        messages = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=100)]
        assert "Resuming from the checkpoint of epoch 1" in messages
        ft = done.fine_tuned_model
        assert ft is not None
        assert ft in [m.id for m in oai.models.list()]
