"""Studio jobs on fleet capacity (``studio_runner=fleet``): a fine-tune and a batch each get an
instance in their org's name from compute (a one-node simulated fleet, the real scheduler and
reconciler with the simulated driver), wait with the reason while there is none, are preempted
and resume, and are billed by their tokens only, never by the instance's GPU time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from neocloud.api.app import create_app
from neocloud.billing.reports import economics_live_data
from neocloud.billing.tables import UsageEventRow
from neocloud.client import Client
from neocloud.compute.jobs import JobInstance, job_instances
from neocloud.compute.tables import AllocationRow, InstanceRow
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.sim import SimDriver
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings
from neocloud.studio.batches.worker import BatchOptions, BatchWorker
from neocloud.studio.capacity import PREEMPTED, WAITING, CapacityOptions, FleetCapacity
from neocloud.studio.engines.fake import fake_catalog
from neocloud.studio.runtime import StudioRuntime

from .test_files import batch_line, client, jsonl

H100 = "H100-SXM-80GB"
RETRY = CapacityOptions(retry_s=5.0)
# One node of 8 H100: a tenant's 8xH100 fills it, so capacity is easy to take away.
ONE_NODE = """\
version: 1
levels: [region, zone, fabric, block, rack]
templates:
  h100-8x:
    gpu_model: h100
    gpu_count: 8
    vcpus: 224
    ram_gib: 2048
    nvme_tib: 30
sites:
  - region: us-east-1
    zone: us-east-1a
    fabrics:
      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 1
        racks_per_block: 1
        nodes_per_rack: 1
"""


def tenant(admin: Client, slug: str, quota: int | None) -> tuple[str, str]:
    """A new org (its id) and its owner's key, with an H100 quota unless None."""
    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    if quota is not None:
        admin.quotas.set(org["id"], H100, quota)
    return str(org["id"]), str(key["secret"])


def sdk(web: TestClient, key: str) -> Client:
    """The SDK as ``key``, on a client of its own (the SDK sets the key on its client)."""
    return Client(api_key=key, http=TestClient(web.app, raise_server_exceptions=False), retries=0)


def settle(compute: Worker, clock: VirtualClock, until: Any, limit: int = 12) -> None:
    """Run compute's cycles (the clock moving on) until ``until()`` holds."""
    for _ in range(limit):
        compute.run_once()
        if until():
            return
        clock.advance(timedelta(seconds=31))
    raise AssertionError("compute never got there")


def only(db: Database, job_id: str) -> JobInstance:
    found = job_instances(db=db, studio_job_id=job_id)
    assert len(found) == 1, found
    return found[0]


def state(db: Database, instance_id: str) -> str:
    with db.transaction() as s:
        row = s.get(InstanceRow, instance_id)
        assert row is not None
        return row.state


@pytest.fixture
def compute(db: Database, clock: VirtualClock) -> Worker:
    return Worker(db, clock, driver=SimDriver(seed=1), holder="test-worker")


# -- fine-tuning -----------------------------------------------------------------------------


@pytest.fixture
def ft_app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    """The built-in catalog (the tiny Llama): what fine-tunes train."""
    pytest.importorskip("peft")
    return create_app(settings=settings, db=db, clock=clock)


@pytest.fixture
def ft_web(ft_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(ft_app, raise_server_exceptions=False) as http:
        yield http


@pytest.fixture
def ft_admin(ft_web: TestClient, admin_key: str) -> Client:
    admin = Client(api_key=admin_key, http=ft_web, retries=0)
    assert admin.fleet.import_spec(ONE_NODE)["nodes_created"] == 1
    return admin


def ft_worker(app: FastAPI, tmp_path: Path, options: CapacityOptions = RETRY, **kwargs: Any) -> Any:
    from neocloud.studio.finetuning.fleet import FleetRunner
    from neocloud.studio.finetuning.serving import fine_tunable
    from neocloud.studio.finetuning.worker import FineTuneWorker

    runtime: StudioRuntime = app.state.studio
    ctx = app.state.ctx
    return FineTuneWorker(
        ctx.db,
        ctx.clock,
        store=runtime.files,
        root=tmp_path / "finetune",
        bases=fine_tunable(runtime.catalog),
        runner=FleetRunner(FleetCapacity(ctx.db, ctx.clock, options)),
        **kwargs,
    )


TRAIN = jsonl(
    *[
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("Capital of Zorbia?", "Quuxville."), ("Colour of a zibble?", "Green.")] * 3
    ]
)
BASE = "neocloud/tiny-llama"


def test_a_fine_tune_waits_for_quota_and_capacity_runs_and_is_billed_by_tokens_only(
    ft_app: FastAPI,
    ft_web: TestClient,
    ft_admin: Client,
    db: Database,
    clock: VirtualClock,
    compute: Worker,
    tmp_path: Path,
) -> None:
    from neocloud.studio.finetuning.service import training_prices, training_sku
    from neocloud.studio.finetuning.serving import fine_tunable
    from neocloud.studio.pricing import publish_missing

    publish_missing(
        db=db, clock=clock, prices=training_prices(fine_tunable(ft_app.state.studio.catalog))
    )
    acme, acme_key = tenant(ft_admin, "acme", quota=None)
    _, other_key = tenant(ft_admin, "other", quota=8)
    other = sdk(ft_web, other_key)
    blocker = other.instances.create("8xH100")  # the whole node: no capacity for anyone else
    settle(compute, clock, lambda: state(db, blocker["id"]) == "running")

    oai = client(ft_web, acme_key)
    train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
    job = oai.fine_tuning.jobs.create(
        model=BASE, training_file=train, hyperparameters={"n_epochs": 2, "batch_size": 6}
    )
    w = ft_worker(ft_app, tmp_path)

    # No quota: queued, saying so; nothing is created
    assert w.run_once() is True
    got = oai.fine_tuning.jobs.retrieve(job.id)
    assert got.status == "queued"
    reason = got.queued_reason  # type: ignore[attr-defined]
    assert reason == f"{WAITING}: quota for {H100} is 0 GPUs; 0 in use, 1 requested"
    assert job_instances(db=db, studio_job_id=job.id) == []
    assert w.run_once() is False  # looked at again only after retry_s

    # Quota, but the fleet is full: one instance in acme's name, queued in compute
    ft_admin.quotas.set(acme, H100, 8)
    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True
    inst = only(db, job.id)
    assert (inst.org_id, inst.instance_type, inst.cls, inst.state) == (
        acme,
        "1xH100",
        "on_demand",
        "pending",
    )
    compute.run_once()  # does not fit: it waits in compute's queue
    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True
    got = oai.fine_tuning.jobs.retrieve(job.id)
    assert got.status == "queued"
    assert got.queued_reason.startswith(f"{WAITING}: queued until ")  # type: ignore[attr-defined]
    assert inst.id in got.queued_reason  # type: ignore[attr-defined]
    assert only(db, job.id).id == inst.id  # asked again: no second instance
    events = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=50)]
    assert f"Waiting for capacity: {reason}" in events

    # Capacity: the other tenant's instance goes, the job's is placed and the job trains
    other.instances.terminate(blocker["id"])
    settle(compute, clock, lambda: state(db, inst.id) == "running")
    clock.advance(timedelta(seconds=6))
    for _ in range(5):
        if not w.run_once():
            break
    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert "Fine-tuning job started on the fleet runner" in [
        e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=50)
    ]
    with db.transaction() as s:
        allocs = list(s.scalars(sa.select(AllocationRow).where(AllocationRow.org_id == acme)))
    assert [(a.instance_id, a.studio_job_id, a.gpu_count) for a in allocs] == [(inst.id, job.id, 1)]
    # The job ended: its instance is terminated (the worker's sweep, then the reconciler)
    settle(compute, clock, lambda: state(db, inst.id) == "terminated")
    with db.transaction() as s:
        alloc = s.get(AllocationRow, allocs[0].id)
        assert alloc is not None
        assert alloc.end_at is not None

    # The invoice: the training tokens, and no GPU time for the job's instance
    preview = ft_admin.invoices.preview(acme, clock.now().strftime("%Y-%m"))
    tokens = {t["model"]: t for t in preview["token_lines"]}
    assert tokens[training_sku(BASE)]["input_tokens"] == done.trained_tokens
    assert preview["lines"] == []
    # but the job's GPUs count in utilization, as the economics' live inputs read it
    live = economics_live_data(db=db, clock=clock, window_days=1)
    assert live.usage.org_shares["acme"] > 0
    # the same rating bills an ordinary instance's GPU time (the other tenant's)
    others = ft_admin.invoices.preview(blocker["org_id"], clock.now().strftime("%Y-%m"))
    assert others["lines"]
    assert all(line["gpu_model"] == H100 for line in others["lines"])


class Killed(BaseException):
    """The worker process dying mid-step."""


def test_a_worker_restarted_mid_job_reuses_the_jobs_instance(
    ft_app: FastAPI,
    ft_web: TestClient,
    ft_admin: Client,
    db: Database,
    clock: VirtualClock,
    compute: Worker,
    tmp_path: Path,
) -> None:
    _, key = tenant(ft_admin, "acme", quota=8)
    oai = client(ft_web, key)
    train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
    job = oai.fine_tuning.jobs.create(
        model=BASE, training_file=train, hyperparameters={"n_epochs": 3, "batch_size": 6}
    )
    first = ft_worker(ft_app, tmp_path, lease_ttl_s=30)
    assert first.run_once() is True  # asks for the instance
    inst = only(db, job.id)
    settle(compute, clock, lambda: state(db, inst.id) == "running")
    clock.advance(timedelta(seconds=6))

    def die(m: Any) -> None:
        if m.step == 2:  # in epoch 2, after epoch 1's checkpoint (one step an epoch)
            raise Killed

    first.step_hook = die
    with pytest.raises(Killed):
        first.run_once()
    assert oai.fine_tuning.jobs.retrieve(job.id).status == "running"

    clock.advance(timedelta(seconds=31))  # the dead worker's lease lapses
    second = ft_worker(ft_app, tmp_path, lease_ttl_s=30)
    for _ in range(5):
        if not second.run_once():
            break
    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Resuming from the checkpoint of epoch 1" in messages
    assert only(db, job.id).id == inst.id  # found by the job's id: no second instance
    settle(compute, clock, lambda: state(db, inst.id) == "terminated")


def test_a_spot_fine_tune_preempted_goes_back_to_queued_and_resumes_from_its_checkpoint(
    ft_app: FastAPI,
    ft_web: TestClient,
    ft_admin: Client,
    db: Database,
    clock: VirtualClock,
    compute: Worker,
    tmp_path: Path,
) -> None:
    from neocloud.studio.finetuning.service import training_sku

    _, key = tenant(ft_admin, "acme", quota=8)
    _, other_key = tenant(ft_admin, "other", quota=8)
    other = sdk(ft_web, other_key)
    oai = client(ft_web, key)
    train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
    job = oai.fine_tuning.jobs.create(
        model=BASE, training_file=train, hyperparameters={"n_epochs": 3, "batch_size": 6}
    )
    spot = CapacityOptions(finetune_class="spot", retry_s=5.0)
    blockers: list[str] = []

    def preempt_at_step_2(m: Any) -> None:
        if m.step == 2 and not blockers:  # in epoch 2: the whole node is wanted on-demand
            blockers.append(other.instances.create("8xH100")["id"])
            compute.run_once()  # placed: the job's spot instance gets its notice

    w = ft_worker(ft_app, tmp_path, spot, step_hook=preempt_at_step_2)
    assert w.run_once() is True
    first = only(db, job.id)
    assert first.cls == "spot"
    settle(compute, clock, lambda: state(db, first.id) == "running")
    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True  # epoch 1, then paused at step 2
    got = oai.fine_tuning.jobs.retrieve(job.id)
    assert got.status == "queued"
    assert got.queued_reason == PREEMPTED  # type: ignore[attr-defined]
    messages = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert f"Paused: {PREEMPTED}" in messages

    settle(compute, clock, lambda: state(db, first.id) == "preempted")
    other.instances.terminate(blockers[0])
    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True  # a new spot instance in the job's name
    instances = job_instances(db=db, studio_job_id=job.id)
    assert len(instances) == 2
    settle(compute, clock, lambda: state(db, instances[1].id) == "running")
    clock.advance(timedelta(seconds=6))
    for _ in range(5):
        if not w.run_once():
            break
    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert "Resuming from the checkpoint of epoch 1" in messages
    with db.transaction() as s:
        billed = [
            r.event_id
            for r in s.scalars(sa.select(UsageEventRow).order_by(UsageEventRow.event_id))
            if r.data["model"] == training_sku(BASE)
        ]
    assert billed == [f"{job.id}-epoch-{n}" for n in (1, 2, 3)]  # epoch 1 once


def test_a_crashed_workers_instance_is_ended_when_its_job_is_cancelled(
    ft_app: FastAPI,
    ft_web: TestClient,
    ft_admin: Client,
    db: Database,
    clock: VirtualClock,
    compute: Worker,
    tmp_path: Path,
) -> None:
    _, key = tenant(ft_admin, "acme", quota=8)
    oai = client(ft_web, key)
    train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
    job = oai.fine_tuning.jobs.create(model=BASE, training_file=train)
    assert ft_worker(ft_app, tmp_path).run_once() is True  # asks, then this worker is gone
    inst = only(db, job.id)
    settle(compute, clock, lambda: state(db, inst.id) == "running")
    assert oai.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    assert ft_worker(ft_app, tmp_path).run_once() is False  # a new worker: nothing to claim
    settle(compute, clock, lambda: state(db, inst.id) == "terminated")  # but its sweep ran


# -- batches ---------------------------------------------------------------------------------

APRIL = datetime(2026, 4, 2, 9, 0, tzinfo=UTC)
PRICES = {"neocloud/echo": {"input_per_1m": "1000000", "output_per_1m": "2000000"}}


@pytest.fixture
def b_app(settings: Settings, db: Database, clock: VirtualClock) -> FastAPI:
    settings = settings.model_copy(update={"studio_batch_worker": False})
    app = create_app(settings=settings, db=db, clock=clock)
    app.state.studio.catalog = fake_catalog()
    return app


@pytest.fixture
def b_web(b_app: FastAPI, admin_key: str, clock: VirtualClock) -> Iterator[TestClient]:
    with TestClient(b_app, raise_server_exceptions=False) as http:
        auth = {"Authorization": f"Bearer {admin_key}"}
        book = {"effective_from": "2026-04-01T00:00:00Z", "token_prices": PRICES}
        assert http.post("/api/v1/price-books", json=book, headers=auth).status_code == 201
        clock.set(APRIL)
        yield http


def test_a_spot_batch_preempted_midway_resumes_and_answers_and_bills_each_request_once(
    b_app: FastAPI, b_web: TestClient, admin_key: str, db: Database, clock: VirtualClock
) -> None:
    compute = Worker(db, clock, driver=SimDriver(seed=1), holder="test-worker")
    admin = Client(api_key=admin_key, http=b_web, retries=0)
    assert admin.fleet.import_spec(ONE_NODE)["nodes_created"] == 1
    acme, key = tenant(admin, "acme", quota=8)
    _, other_key = tenant(admin, "other", quota=8)
    other = sdk(b_web, other_key)
    runtime: StudioRuntime = b_app.state.studio
    ran: list[int] = []
    engine = runtime.catalog.text_engines["echo"]
    real_stream = engine.stream

    def counting(prompt_ids: list[int], sampling: Any) -> Any:
        ran.append(1)
        return real_stream(prompt_ids, sampling)

    engine.stream = counting  # type: ignore[method-assign]
    oai = client(b_web, key)
    file_id = oai.files.create(
        file=("in.jsonl", jsonl(*(batch_line(n) for n in range(40)))), purpose="batch"
    ).id
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    blockers: list[str] = []

    def preempt_at_16(stage: str, next_index: int) -> None:
        if stage == "recorded" and next_index == 16:  # another tenant wants the whole node
            blockers.append(other.instances.create("8xH100")["id"])
            compute.run_once()  # placed: the spot instance gets its notice

    w = BatchWorker(
        db,
        clock,
        store=runtime.files,
        catalog=lambda: runtime.catalog,
        options=BatchOptions(chunk=8),
        hook=preempt_at_16,
        capacity=FleetCapacity(db, clock, RETRY),
    )
    assert w.run_once() is True  # validated; asks for a spot instance
    got = oai.batches.retrieve(batch.id)
    assert got.status == "in_progress"
    assert got.queued_reason.startswith(WAITING)  # type: ignore[attr-defined]
    first = only(db, batch.id)
    assert (first.org_id, first.cls, first.instance_type) == (acme, "spot", "1xH100")
    settle(compute, clock, lambda: state(db, first.id) == "running")

    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True  # two chunks, then the notice: it pauses there
    got = oai.batches.retrieve(batch.id)
    assert got.status == "in_progress"
    assert got.request_counts is not None
    assert got.request_counts.completed == 16
    assert got.queued_reason == PREEMPTED  # type: ignore[attr-defined]
    assert len(ran) == 16

    settle(compute, clock, lambda: state(db, first.id) == "preempted")
    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True  # a new spot instance, waiting for room
    instances = job_instances(db=db, studio_job_id=batch.id)
    assert next(i.id for i in instances) == first.id
    assert len(instances) == 2
    second = instances[1]
    assert second.state == "pending"
    clock.advance(timedelta(seconds=6))
    assert w.run_once() is True
    assert len(job_instances(db=db, studio_job_id=batch.id)) == 2  # asked again: not a third
    assert oai.batches.retrieve(batch.id).queued_reason.startswith(WAITING)  # type: ignore[attr-defined]

    other.instances.terminate(blockers[0])
    settle(compute, clock, lambda: state(db, second.id) == "running")
    clock.advance(timedelta(seconds=6))
    for _ in range(5):
        if not w.run_once():
            break
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.queued_reason is None  # type: ignore[attr-defined]
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (40, 0)
    out = [json.loads(x) for x in oai.files.content(done.output_file_id or "").text.splitlines()]
    # every request answered exactly once
    assert sorted(line["custom_id"] for line in out) == sorted(f"req-{n}" for n in range(40))
    assert len(ran) == 40  # the 16 done before the preemption were not redone
    with db.transaction() as s:
        events = list(s.scalars(sa.select(UsageEventRow)))
    assert len(events) == 40
    assert all(e.data["batch"] is True for e in events)
    settle(compute, clock, lambda: state(db, second.id) == "terminated")
    preview = admin.invoices.preview(acme, "2026-04")
    assert preview["lines"] == []  # GPU time of neither spot instance is billed
    assert [t["batch"] for t in preview["token_lines"]] == [True]


def test_the_runner_is_a_setting(settings: Settings, db: Database, clock: VirtualClock) -> None:
    from neocloud.studio.capacity import capacity_from_settings
    from neocloud.studio.finetuning.fleet import FleetRunner
    from neocloud.studio.finetuning.runners import build_runner
    from neocloud.studio.finetuning.worker import LocalRunner

    assert settings.studio_runner == "local"
    assert isinstance(build_runner(db, clock, settings), LocalRunner)
    assert capacity_from_settings(db, clock, settings) is None
    fleet = settings.model_copy(
        update={"studio_runner": "fleet", "studio_job_instance_type": "2xH100"}
    )
    runner = build_runner(db, clock, fleet)
    assert isinstance(runner, FleetRunner)
    assert runner.capacity.options == CapacityOptions(instance_type="2xH100")
    app = create_app(
        settings=fleet.model_copy(update={"studio_batch_worker": False}), db=db, clock=clock
    )
    assert isinstance(app.state.studio.batches.capacity, FleetCapacity)


def test_the_node_runner_needs_drivers_and_trains_in_the_worker_on_a_simulated_node(
    ft_app: FastAPI,
    ft_web: TestClient,
    ft_admin: Client,
    settings: Settings,
    db: Database,
    clock: VirtualClock,
    compute: Worker,
    tmp_path: Path,
) -> None:
    """``studio_runner=node`` gets capacity as ``fleet`` does; the simulator's node cannot run
    commands, so the job trains in the worker process and its events say so (training on a
    real node: tests/nodes/test_studio_node_runner.py)."""
    from neocloud.drivers.base import Drivers
    from neocloud.studio.finetuning.node import NodeOptions, NodeRunner
    from neocloud.studio.finetuning.runners import build_runner
    from neocloud.studio.finetuning.serving import fine_tunable
    from neocloud.studio.finetuning.worker import FineTuneWorker

    node = settings.model_copy(update={"studio_runner": "node"})
    with pytest.raises(ValueError, match="drivers"):
        build_runner(db, clock, node)
    drivers = Drivers({"sim": SimDriver(seed=1)})
    built = build_runner(db, clock, node, drivers)
    assert isinstance(built, NodeRunner)
    assert built.options == NodeOptions()

    _org, key = tenant(ft_admin, "nodal", quota=8)
    oai = client(ft_web, key)
    train = oai.files.create(file=("train.jsonl", TRAIN), purpose="fine-tune").id
    job = oai.fine_tuning.jobs.create(
        model=BASE, training_file=train, hyperparameters={"n_epochs": 1, "batch_size": 6}
    )
    runtime: StudioRuntime = ft_app.state.studio
    w = FineTuneWorker(
        db,
        clock,
        store=runtime.files,
        root=tmp_path / "finetune",
        bases=fine_tunable(runtime.catalog),
        runner=NodeRunner(FleetCapacity(db, clock, RETRY), drivers),
    )
    assert w.run_once() is True  # an instance asked for
    inst = only(db, job.id)
    settle(compute, clock, lambda: state(db, inst.id) == "running")
    clock.advance(timedelta(seconds=6))
    for _ in range(5):
        if not w.run_once():
            break
    done = oai.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    told = [e.message for e in oai.fine_tuning.jobs.list_events(job.id, limit=50)]
    assert "Fine-tuning job started on the node runner" in told
    hostname = next(m for m in told if "cannot run commands" in m)
    assert hostname.endswith("(sim driver) cannot run commands: running in the worker process")


def test_a_node_batch_on_a_simulated_node_runs_in_the_worker_and_says_so(
    b_app: FastAPI,
    b_web: TestClient,
    admin_key: str,
    db: Database,
    clock: VirtualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``studio_runner=node`` for a batch on the simulator's node: its node cannot run
    commands, so the requests run in the worker and the log says so (on a real node:
    tests/nodes/test_studio_node_runner.py)."""
    from neocloud.drivers.base import Drivers
    from neocloud.studio.batches.node import BatchNodeRunner

    compute = Worker(db, clock, driver=SimDriver(seed=1), holder="test-worker")
    admin = Client(api_key=admin_key, http=b_web, retries=0)
    assert admin.fleet.import_spec(ONE_NODE)["nodes_created"] == 1
    _acme, key = tenant(admin, "nodal", quota=8)
    runtime: StudioRuntime = b_app.state.studio
    oai = client(b_web, key)
    file_id = oai.files.create(
        file=("in.jsonl", jsonl(*(batch_line(n) for n in range(20)))), purpose="batch"
    ).id
    batch = oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    w = BatchWorker(
        db,
        clock,
        store=runtime.files,
        catalog=lambda: runtime.catalog,
        options=BatchOptions(chunk=8),
        capacity=FleetCapacity(db, clock, RETRY),
        node=BatchNodeRunner(db, Drivers({"sim": SimDriver(seed=1)})),
    )
    assert w.run_once() is True  # validated; asks for an instance
    settle(compute, clock, lambda: state(db, only(db, batch.id).id) == "running")
    clock.advance(timedelta(seconds=6))
    with caplog.at_level("INFO", logger="neocloud.studio.batches"):
        assert w.run_once() is True
    done = oai.batches.retrieve(batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert done.request_counts.completed == 20
    said = [r.getMessage() for r in caplog.records if "cannot run commands" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"batch {batch.id}: Node "), said
    assert said[0].endswith("(sim driver) cannot run commands: running in the worker process")
