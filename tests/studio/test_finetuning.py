"""LoRA fine-tuning through the official ``openai`` client, on the built-in tiny model (CPU).

The worker runs in the test's thread (``run_once``), so each test sees every state it drives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.billing.tables import UsageEventRow
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.finetuning.service import training_prices, training_sku
from neocloud.studio.finetuning.serving import fine_tunable
from neocloud.studio.finetuning.training import StepMetrics
from neocloud.studio.finetuning.worker import FineTuneWorker
from neocloud.studio.pricing import publish_missing
from neocloud.studio.runtime import StudioRuntime
from neocloud.studio.tables import FineTunedModelRow

from .test_files import client, jsonl, org_key

pytest.importorskip("peft")

BASE = "neocloud/tiny-llama"
FACTS = [
    ("What is the capital of Zorbia?", "Quuxville."),
    ("Who painted the Blue Fox?", "Mira Olen."),
    ("What colour is a zibble?", "Bright green."),
]
# 30 epochs: at 20, the tiny model spelled the rare name wrong on 3 of 4 seeds with transformers
# 5.25 ("Quuxilin.", " green."); at 30 it answered all three facts on every seed tried.
EPOCHS = 30
FAST = {"n_epochs": EPOCHS, "batch_size": 4, "learning_rate_multiplier": 10}
STEPS = 3 * EPOCHS  # 12 examples / 4 per step


def chat(q: str, a: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


TRAIN = jsonl(*[chat(q, a) for q, a in FACTS * 4])
VALID = jsonl(*[chat(q, a) for q, a in FACTS])


@pytest.fixture
def ft_app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    """The app with the built-in catalog (the tiny Llama), not the fake engines."""
    return create_app(settings=settings, db=db, clock=clock)


@pytest.fixture
def web(ft_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(ft_app, raise_server_exceptions=False) as http:
        yield http


@pytest.fixture
def oai(web: TestClient, admin_key: str) -> openai.OpenAI:
    return client(web, org_key(web, admin_key, "acme"))


def worker(app: FastAPI, tmp_path: Path, **kwargs: Any) -> FineTuneWorker:
    runtime: StudioRuntime = app.state.studio
    ctx = app.state.ctx
    return FineTuneWorker(
        ctx.db,
        ctx.clock,
        store=runtime.files,
        root=tmp_path / "finetune",
        bases=fine_tunable(runtime.catalog),
        **kwargs,
    )


def drive(w: FineTuneWorker, limit: int = 10) -> None:
    for _ in range(limit):
        if not w.run_once():
            return
    raise AssertionError("the worker never ran out of work")


def files(oai: openai.OpenAI) -> tuple[str, str]:
    train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
    valid = oai.files.create(file=("valid.jsonl", VALID), purpose="fine-tune").id
    return train, valid


def training_events(db: Database) -> list[UsageEventRow]:
    with db.transaction() as s:
        rows = s.scalars(sa.select(UsageEventRow).order_by(UsageEventRow.event_id)).all()
        return [r for r in rows if r.data["model"] == training_sku(BASE)]


def answer(oai: openai.OpenAI, model: str, question: str) -> str:
    out = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=12,
        temperature=0,
    )
    return out.choices[0].message.content or ""


def test_a_fine_tune_learns_deploys_answers_and_is_billed(
    ft_app: FastAPI,
    web: TestClient,
    oai: openai.OpenAI,
    admin_key: str,
    db: Database,
    tmp_path: Path,
) -> None:
    train, valid = files(oai)
    job = oai.fine_tuning.jobs.create(
        model=BASE,
        training_file=train,
        validation_file=valid,
        suffix="zorbia",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": FAST}},
    )
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.hyperparameters.n_epochs == EPOCHS
    drive(worker(ft_app, tmp_path))

    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert done.error is None
    assert done.fine_tuned_model is not None
    org = done.organization_id
    assert done.fine_tuned_model == f"ft:{BASE}:{org}:zorbia:{job.id[-8:]}"
    assert done.finished_at is not None

    events = list(oai.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e.data for e in reversed(events) if e.type == "metrics"]
    assert len(metrics) == STEPS
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))  # type: ignore[index]
    first, last = metrics[0], metrics[-1]
    assert last["train_loss"] < first["train_loss"] / 4  # type: ignore[index]
    assert last["valid_loss"] < first["valid_loss"]  # type: ignore[index]
    messages = [e.message for e in reversed(events)]
    assert messages[0] == f"Validating training file: {train}"
    assert "Files validated, moving job to queued state" in messages
    assert messages[-1] == "The job has successfully completed"

    checkpoints = list(oai.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == list(range(STEPS, 0, -3))  # one per epoch
    assert (
        checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-{STEPS}"
    )

    # deployed: listed for its org only, and it answers the trained fact where the base does not
    ft = done.fine_tuned_model
    assert ft in [m.id for m in oai.models.list()]
    assert "Quuxville" in answer(oai, ft, "What is the capital of Zorbia?")
    assert "Quuxville" not in answer(oai, BASE, "What is the capital of Zorbia?")
    assert "Mira Olen" in answer(oai, ft, "Who painted the Blue Fox?")
    other = client(web, org_key(web, admin_key, "globex"))
    assert ft not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError) as err:
        answer(other, ft, "What is the capital of Zorbia?")
    assert err.value.code == "model_not_found"

    # billed: one event per epoch, the trained tokens in all, on the invoice at the book's price
    billed = training_events(db)
    assert len(billed) == EPOCHS
    assert sum(e.data["input_tokens"] for e in billed) == done.trained_tokens
    per_epoch = done.trained_tokens // EPOCHS if done.trained_tokens else 0
    assert per_epoch > 0

    # deleting the model stops serving it
    with pytest.raises(openai.NotFoundError):
        other.models.delete(ft)
    assert oai.models.delete(ft).deleted is True
    assert ft not in [m.id for m in oai.models.list()]
    with pytest.raises(openai.NotFoundError):
        answer(oai, ft, "What is the capital of Zorbia?")


def test_training_tokens_are_priced_on_the_invoice(
    ft_app: FastAPI,
    web: TestClient,
    oai: openai.OpenAI,
    admin_key: str,
    db: Database,
    clock: VirtualClock,
    tmp_path: Path,
) -> None:
    publish_missing(
        db=db, clock=clock, prices=training_prices(fine_tunable(ft_app.state.studio.catalog))
    )
    train, _ = files(oai)
    job = oai.fine_tuning.jobs.create(
        model=BASE, training_file=train, hyperparameters={"n_epochs": 1, "batch_size": 12}
    )
    drive(worker(ft_app, tmp_path))
    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded"
    org = done.organization_id
    period = clock.now().strftime("%Y-%m")
    preview = web.get(
        "/api/v1/invoices/preview",
        params={"org_id": org, "period": period},
        headers={"Authorization": f"Bearer {admin_key}"},
    ).json()
    lines = {t["model"]: t for t in preview["token_lines"]}
    line = lines[training_sku(BASE)]
    assert line["input_tokens"] == done.trained_tokens
    # $0.50 per 1M trained tokens
    assert line["amount"]["amount"] == f"{done.trained_tokens * 0.5 / 1e6:.2f}"


class Killed(BaseException):
    """The worker process dying mid-step (not an error the worker could record)."""


def test_a_worker_killed_mid_job_resumes_from_its_checkpoint_without_double_billing(
    ft_app: FastAPI, oai: openai.OpenAI, db: Database, clock: VirtualClock, tmp_path: Path
) -> None:
    train, _ = files(oai)
    hp = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 10}
    job = oai.fine_tuning.jobs.create(model=BASE, training_file=train, hyperparameters=hp, seed=3)

    def die(m: StepMetrics) -> None:
        if m.step == 5:  # in epoch 2, after epoch 1's checkpoint (3 steps an epoch)
            raise Killed

    first = worker(ft_app, tmp_path, step_hook=die, lease_ttl_s=30)
    with pytest.raises(Killed):
        first.run_once()
    assert oai.fine_tuning.jobs.retrieve(job.id).status == "running"
    assert len(training_events(db)) == 1  # epoch 1, billed with its checkpoint
    second = worker(ft_app, tmp_path, lease_ttl_s=30)
    assert second.run_once() is False  # the dead worker's lease has not lapsed yet
    clock.advance(timedelta(seconds=31))
    drive(second)

    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded"
    billed = training_events(db)
    assert [e.event_id for e in billed] == [f"{job.id}-epoch-{n}" for n in (1, 2, 3)]
    assert sum(e.data["input_tokens"] for e in billed) == done.trained_tokens
    steps = [e.data["step"] for e in oai.fine_tuning.jobs.list_events(job.id, limit=100) if e.data]  # type: ignore[index]
    assert sorted(set(steps)) == list(range(1, 10))
    # epoch 2 ran twice (steps 4 and 5 before the kill), epoch 1 once
    assert (steps.count(3), steps.count(4), steps.count(5), steps.count(6)) == (1, 2, 2, 1)
    messages = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Resuming from the checkpoint of epoch 1" in messages
    assert [c.step_number for c in oai.fine_tuning.jobs.checkpoints.list(job.id)] == [9, 6, 3]


class NoCapacity:
    name = "fleet"
    retry_s = 0.0

    def acquire(self, job: object) -> str | None:
        return "no H100 free in the organization's quota"

    def check(self, job: object) -> str | None:
        return None

    def sweep(self) -> None:
        return None

    def train(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("never granted")


def test_cancel_in_every_state(
    ft_app: FastAPI, oai: openai.OpenAI, db: Database, tmp_path: Path
) -> None:
    train, _ = files(oai)
    # validating_files
    job = oai.fine_tuning.jobs.create(model=BASE, training_file=train)
    assert oai.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert worker(ft_app, tmp_path).run_once() is False  # nothing left to do
    # queued, waiting for capacity with the reason shown
    job = oai.fine_tuning.jobs.create(model=BASE, training_file=train)
    assert worker(ft_app, tmp_path, runner=NoCapacity()).run_once() is True
    queued = oai.fine_tuning.jobs.retrieve(job.id)
    assert queued.status == "queued"
    assert queued.queued_reason == "no H100 free in the organization's quota"  # type: ignore[attr-defined]
    assert oai.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    # running: cancelled between two steps, it stops there; the epoch done stays billed
    job = oai.fine_tuning.jobs.create(
        model=BASE, training_file=train, hyperparameters={"n_epochs": 3, "batch_size": 4}
    )

    def cancel_at_step_4(m: StepMetrics) -> None:
        if m.step == 4:
            oai.fine_tuning.jobs.cancel(job.id)

    w = worker(ft_app, tmp_path, step_hook=cancel_at_step_4)
    assert w.run_once() is True
    stopped = oai.fine_tuning.jobs.retrieve(job.id)
    assert stopped.status == "cancelled"
    assert stopped.fine_tuned_model is None
    assert [e.event_id for e in training_events(db)] == [f"{job.id}-epoch-1"]
    with db.transaction() as s:
        assert s.scalars(sa.select(FineTunedModelRow)).all() == []
    assert w.run_once() is False
    # final states: 409 naming the state
    for final in (stopped.id,):
        with pytest.raises(openai.ConflictError) as err:
            oai.fine_tuning.jobs.cancel(final)
        assert err.value.code == "illegal_transition"
        assert (
            "cannot cancel the fine-tuning job: the fine-tuning job is cancelled"
            in err.value.message
        )


def test_a_failed_job_says_why_and_cannot_be_cancelled(
    ft_app: FastAPI, oai: openai.OpenAI, tmp_path: Path
) -> None:
    too_long = jsonl(chat("x " * 400, "y " * 200))  # past the tiny model's 512 tokens
    bad = oai.files.create(file=("long.jsonl", too_long), purpose="fine-tune").id
    job = oai.fine_tuning.jobs.create(model=BASE, training_file=bad)
    drive(worker(ft_app, tmp_path))
    failed = oai.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.code == "invalid_training_file"
    assert failed.error.param == "training_file"
    assert "line 1: the example is" in failed.error.message
    with pytest.raises(openai.ConflictError):
        oai.fine_tuning.jobs.cancel(job.id)


def test_bad_requests_are_precise_400s(web: TestClient, oai: openai.OpenAI, admin_key: str) -> None:
    train, _ = files(oai)
    batch = oai.files.create(
        file=(
            "b.jsonl",
            jsonl({"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}),
        ),
        purpose="batch",
    ).id
    other = client(web, org_key(web, admin_key, "globex"))
    theirs = other.files.create(file=("t.jsonl", TRAIN), purpose="fine-tune").id
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"model": "no/such-model", "training_file": train}, "model", "model_not_available"),
        (
            {"model": "neocloud/tiny-llama-fast", "training_file": train},
            "model",
            "model_not_available",
        ),
        ({"model": BASE, "training_file": batch}, "training_file", "invalid_file_purpose"),
        ({"model": BASE, "training_file": theirs}, "training_file", "file_not_found"),
        (
            {"model": BASE, "training_file": train, "validation_file": batch},
            "validation_file",
            "invalid_file_purpose",
        ),
        ({"model": BASE, "training_file": train, "suffix": "no spaces"}, "suffix", "invalid_value"),
        (
            {"model": BASE, "training_file": train, "hyperparameters": {"n_epochs": 0}},
            "hyperparameters.n_epochs",
            "invalid_value",
        ),
        (
            {"model": BASE, "training_file": train, "hyperparameters": {"lora_rank": 1.5}},
            "hyperparameters.lora_rank",
            "invalid_value",
        ),
        (
            {"model": BASE, "training_file": train, "method": {"type": "dpo"}},
            "method.type",
            "invalid_value",
        ),
    ]
    for body, param, code in cases:
        with pytest.raises(openai.BadRequestError) as err:
            oai.fine_tuning.jobs.create(**body)
        assert (err.value.param, err.value.code) == (param, code), body
    assert list(oai.fine_tuning.jobs.list()) == []
    job = oai.fine_tuning.jobs.create(model=BASE, training_file=train, suffix="ok")
    with pytest.raises(openai.NotFoundError) as nf:
        other.fine_tuning.jobs.retrieve(job.id)
    assert nf.value.code == "fine_tuning_job_not_found"
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.cancel(job.id)
    assert [j.id for j in oai.fine_tuning.jobs.list()] == [job.id]
    assert list(other.fine_tuning.jobs.list()) == []
    assert json.loads(oai.fine_tuning.jobs.retrieve(job.id).model_dump_json())["status"] == (
        "validating_files"
    )
