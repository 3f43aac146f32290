"""Fleet capacity for studio jobs (the ``fleet`` runner's half that talks to compute).

Before a job runs, ``acquire`` asks compute for an instance in the job's org's name
(``compute.jobs``: one live instance per job, found by the job's id before one is created) and
answers None once that instance is ``running`` with no stop asked for, else why the job waits:

- ``waiting for capacity: quota for H100-SXM-80GB is 0 GPUs; …`` (the org's quota has no room;
  nothing is created, the next try asks again),
- ``waiting for capacity: queued until …: …`` (the instance waits in compute's queue),
- ``waiting for capacity: instance … is provisioning``,
- ``preempted; resumes from the last checkpoint`` (a spot instance got its stop notice, or was
  preempted: the job pauses at its next step or chunk and asks again; a new instance is
  requested once the old one has ended).

``sweep`` terminates the live instances of jobs that have ended (succeeded, failed, cancelled,
completed, expired): the workers run it every cycle, so an instance outlives its job by at most
a cycle, also when the worker that ran the job died (the next one's sweep finds it by job id).

Under ``fleet`` the work runs in the worker's process once the instance is running; under
``node`` it runs on the instance's node (``studio/finetuning/node.py``,
``studio/batches/node.py``; docs/studio-jobs.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from neocloud.compute.domain import InstanceState
from neocloud.compute.jobs import (
    JobInstance,
    end_job_instances,
    job_instance,
    live_job_instances,
    request_job_instance,
)
from neocloud.db.engine import Database
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import QuotaExceeded
from neocloud.kernel.settings import Settings
from neocloud.studio.batches.domain import DONE as BATCH_DONE
from neocloud.studio.finetuning.domain import FINAL as FINETUNE_FINAL
from neocloud.studio.tables import FineTuneJobRow, StudioBatchRow

PREEMPTED = "preempted; resumes from the last checkpoint"
WAITING = "waiting for capacity"


@dataclass(frozen=True, slots=True)
class CapacityOptions:
    """What a job asks compute for (``studio_job_*`` settings)."""

    instance_type: str = "1xH100"  # the smallest slice the fleet sells: one H100
    finetune_class: str = "on_demand"
    batch_class: str = "spot"
    max_wait_s: int = 24 * 3600  # how long one instance waits in compute's queue
    retry_s: float = 5.0  # how soon a waiting job is looked at again

    @classmethod
    def from_settings(cls, settings: Settings) -> CapacityOptions:
        return cls(
            instance_type=settings.studio_job_instance_type,
            finetune_class=settings.studio_finetune_class,
            batch_class=settings.studio_batch_class,
            max_wait_s=settings.studio_job_max_wait_s,
            retry_s=settings.studio_job_retry_s,
        )


def why_not(inst: JobInstance) -> str:
    """Why a job cannot run on ``inst`` now (``inst`` is not usable)."""
    if inst.preempted:
        return PREEMPTED
    state = InstanceState(inst.state)
    if state is InstanceState.PENDING:
        queued = inst.state_message or f"{inst.instance_type} ({inst.cls}) requested"
        return f"{WAITING}: {queued} (instance {inst.id})"
    if state is InstanceState.PROVISIONING:
        return f"{WAITING}: instance {inst.id} ({inst.instance_type}) is provisioning"
    if inst.live:  # running with a stop asked for, or stopping
        return f"{WAITING}: instance {inst.id} is stopping ({inst.stop_reason or 'stop'})"
    ended = inst.state_message or inst.state_reason or inst.state
    return f"{WAITING}: instance {inst.id} ended ({ended})"


class FleetCapacity:
    """A job's capacity from compute, in its org's name (see the module's doc)."""

    def __init__(self, db: Database, clock: Clock, options: CapacityOptions | None = None) -> None:
        self.db, self.clock = db, clock
        self.options = options or CapacityOptions()

    @property
    def retry_s(self) -> float:
        return self.options.retry_s

    def acquire(self, *, job_id: str, org_id: str, key_id: str, cls: str) -> str | None:
        """None when the job's instance is running (created if the job has no live one);
        else why the job waits."""
        found = job_instance(db=self.db, studio_job_id=job_id)
        if found is not None and found.live:
            return None if found.usable else why_not(found)
        try:
            inst = request_job_instance(
                db=self.db,
                clock=self.clock,
                org_id=org_id,
                key_id=key_id,
                studio_job_id=job_id,
                instance_type=self.options.instance_type,
                cls=cls,
                max_wait_s=self.options.max_wait_s,
            )
        except QuotaExceeded as exc:
            return f"{WAITING}: {exc.message}"
        return None if inst.usable else why_not(inst)

    def acquire_finetune(self, job: FineTuneJobRow) -> str | None:
        return self.acquire(
            job_id=job.id,
            org_id=job.org_id,
            key_id=job.created_by,
            cls=self.options.finetune_class,
        )

    def acquire_batch(self, row: StudioBatchRow) -> str | None:
        return self.acquire(
            job_id=row.id, org_id=row.org_id, key_id=row.key_id, cls=self.options.batch_class
        )

    def check(self, job_id: str) -> str | None:
        """At a step boundary: None while the job's instance is still usable (read only)."""
        found = job_instance(db=self.db, studio_job_id=job_id)
        if found is None:
            return f"{WAITING}: the job has no instance"
        return None if found.usable else why_not(found)

    def sweep(self) -> list[str]:
        """Terminate the live instances of jobs that have ended; answers the instances."""
        live = live_job_instances(db=self.db)
        if not live:
            return []
        ended: list[str] = []
        for job_id in sorted(self._done(set(live.values()))):
            ended += end_job_instances(db=self.db, clock=self.clock, studio_job_id=job_id)
        return ended

    def _done(self, job_ids: set[str]) -> set[str]:
        """Of ``job_ids``, those that ended (or no longer exist)."""
        ids = sorted(job_ids)
        with self.db.transaction() as s:
            tuning = dict(
                s.execute(
                    sa.select(FineTuneJobRow.id, FineTuneJobRow.status).where(
                        FineTuneJobRow.id.in_(ids)
                    )
                ).all()
            )
            batches = dict(
                s.execute(
                    sa.select(StudioBatchRow.id, StudioBatchRow.status).where(
                        StudioBatchRow.id.in_(ids)
                    )
                ).all()
            )
        final = {s.value for s in FINETUNE_FINAL} | {s.value for s in BATCH_DONE}
        status = {**tuning, **batches}
        return {j for j in job_ids if j not in status or status[j] in final}


def capacity_from_settings(db: Database, clock: Clock, settings: Settings) -> FleetCapacity | None:
    """Fleet capacity when ``studio_runner`` is ``fleet`` or ``node``; None for ``local``."""
    if settings.studio_runner == "local":
        return None
    return FleetCapacity(db, clock, CapacityOptions.from_settings(settings))
