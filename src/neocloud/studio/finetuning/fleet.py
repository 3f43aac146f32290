"""The ``fleet`` runner of fine-tuning jobs (``studio_runner=fleet``): capacity from compute.

A job gets an instance (``studio_job_instance_type``, on-demand by default:
``studio_finetune_class``) in its org's name before it trains (``studio/capacity.py``); while it
has none it stays ``queued`` with ``queued_reason`` saying why. Training runs in the worker's
process once the instance is running; after each step the runner checks the instance still is,
and a preempted one sends the job back to ``queued`` ("preempted; resumes from the last
checkpoint"), to resume from its last per-epoch checkpoint on a new instance. The instance of a
job that ended is terminated by the next cycle's ``sweep``.
"""

from __future__ import annotations

from neocloud.studio.capacity import FleetCapacity
from neocloud.studio.finetuning.worker import LocalRunner
from neocloud.studio.tables import FineTuneJobRow


class FleetRunner(LocalRunner):
    """Trains in the worker's process (``LocalRunner.train``) on capacity compute gave the
    job; ``NodeRunner`` (node.py) trains on that capacity's node."""

    name = "fleet"

    def __init__(self, capacity: FleetCapacity) -> None:
        self.capacity = capacity
        self.retry_s = capacity.retry_s

    def acquire(self, job: FineTuneJobRow) -> str | None:
        return self.capacity.acquire_finetune(job)

    def check(self, job: FineTuneJobRow) -> str | None:
        return self.capacity.check(job.id)

    def sweep(self) -> None:
        self.capacity.sweep()
