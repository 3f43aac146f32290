"""A fine-tuning worker in a process of its own, for the test that kills one with SIGKILL.

Usage: finetune_worker_proc.py DATABASE_URL DATA_DIR LEASE_TTL_S STEP_SLEEP_S
Runs jobs until there are none (each step sleeps STEP_SLEEP_S, so a test can kill it mid-job).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from neocloud.db.engine import Database
from neocloud.kernel.clock import SystemClock
from neocloud.studio.filestore import LocalFileStore
from neocloud.studio.finetuning.serving import fine_tunable
from neocloud.studio.finetuning.training import StepMetrics
from neocloud.studio.finetuning.worker import FineTuneWorker
from neocloud.studio.runtime import builtin_catalog


def main() -> None:
    url, data_dir, ttl, pause = (
        sys.argv[1],
        Path(sys.argv[2]),
        float(sys.argv[3]),
        float(sys.argv[4]),
    )
    db = Database.from_url(url)

    def slow(_: StepMetrics) -> None:
        time.sleep(pause)

    worker = FineTuneWorker(
        db,
        SystemClock(),
        store=LocalFileStore(data_dir / "studio-files"),
        root=data_dir / "studio-finetune",
        bases=fine_tunable(builtin_catalog()),
        lease_ttl_s=ttl,
        step_hook=slow,
    )
    while worker.run_once():
        pass
    db.dispose()


if __name__ == "__main__":
    main()
