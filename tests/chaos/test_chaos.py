"""Chaos: tenants create and terminate instances and clusters (idempotency keys, replays) and
the operator meters usage (each batch sent twice) against two API replicas, while the leader
worker and the API replicas are SIGKILLed again and again and restarted. Afterwards the
invariant checker (``invariants.py``) must find nothing.

The suite runs a short version (``NEOCLOUD_CHAOS_S``, default 30 s of load); ``make chaos``
runs it for 10 minutes. Prints operations done, kills survived and violations."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from neocloud.client import Client
from neocloud.db.engine import Database

from .harness import (
    Platform,
    Proc,
    fake_upstream,
    fleet_spec,
    platform,
    scheduler_holder_pid,
)
from .invariants import INSTANCE_TRANSIENT, Record, check
from .workload import make_tenant, studio_loop, tenant_loop, usage_loop

LOAD_S = float(os.environ.get("NEOCLOUD_CHAOS_S", "30"))
KILL_EVERY_S = float(os.environ.get("NEOCLOUD_CHAOS_KILL_EVERY_S", "5"))
SETTLE_S = 40.0  # after the load: the last in-flight steps finish
TRANSIENT_TIMEOUT = timedelta(seconds=30)


class Killer:
    """Every ``KILL_EVERY_S``: SIGKILL the leader worker, or one API replica, and restart it."""

    def __init__(self, plat: Platform, db: Database, seed: int) -> None:
        self.plat, self.db, self.rng = plat, db, random.Random(seed)
        self.stop = threading.Event()
        self.by_kind: dict[str, int] = {"worker": 0, "api": 0}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            turn = 0
            while not self.stop.wait(KILL_EVERY_S):
                turn += 1
                victim: Proc | None
                if turn % 2:
                    pid = scheduler_holder_pid(self.db)
                    victim = next(
                        (w for w in self.plat.workers() if w.alive() and w.pid == pid), None
                    )
                else:
                    victim = self.rng.choice(self.plat.apis())
                if victim is None or not victim.alive():
                    continue
                self.plat.kill(victim)
                self.by_kind[victim.kind] += 1
                time.sleep(self.rng.uniform(0.2, 1.0))
                self.plat.start(victim)  # not waited for: it may be killed again while starting
        except BaseException as exc:  # reported by the test
            self.failure = exc


def _settle(db: Database, deadline_s: float) -> None:
    import sqlalchemy as sa

    from neocloud.compute.tables import InstanceRow

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with db.transaction() as s:
            busy = s.scalar(
                sa.select(sa.func.count())
                .select_from(InstanceRow)
                .where(InstanceRow.state.in_(INSTANCE_TRANSIENT))
            )
        if not busy:
            return
        time.sleep(0.5)


@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_chaos_with_sigkills_keeps_every_invariant(db: Database, tmp_path: Path) -> None:
    url = db.engine.url.render_as_string(hide_password=False)
    fleet = fleet_spec(nodes_per_rack=3)  # 12 nodes, 96 GPUs
    with fake_upstream(tmp_path) as upstream, platform(url, tmp_path, fleet) as plat:
        apis = [plat.add_api("api0"), plat.add_api("api1")]
        workers = [plat.add_worker("w0"), plat.add_worker("w1")]
        for proc in [*apis, *workers]:
            plat.start(proc)
        for proc in [*apis, *workers]:
            plat.wait_ready(proc)
        admin = Client(apis[0].url or "", plat.admin_key, retries=3)
        tenants = [make_tenant(admin, f"t{n}", quota=64) for n in range(3)]
        admin.studio.models.add(
            "chaos/fake", upstream_urls=[upstream], upstream_model="fake",
            input_price_per_m="1", output_price_per_m="2",
        )  # fmt: skip
        admin.close()

        record, stop = Record(), threading.Event()
        threads = [
            threading.Thread(target=tenant_loop, args=(plat, t, record, stop, 100 + n))
            for n, t in enumerate(tenants)
        ]
        threads.append(
            threading.Thread(
                target=usage_loop, args=(plat, plat.admin_key, tenants, record, stop, 7)
            )
        )
        threads += [
            threading.Thread(
                target=studio_loop, args=(plat, t, record, stop, 300 + n, "chaos/fake")
            )
            for n, t in enumerate(tenants[:2])
        ]
        killer = Killer(plat, db, seed=3)
        started = time.monotonic()
        for t in threads:
            t.start()
        killer.thread.start()
        time.sleep(LOAD_S)
        killer.stop.set()
        killer.thread.join(timeout=120)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        load_s = time.monotonic() - started
        assert killer.failure is None, killer.failure
        for proc in plat.procs:  # everyone back up for the checks through the API
            if not proc.alive():
                plat.start(proc)
            plat.wait_ready(proc)
        _settle(db, SETTLE_S)
        plat.wait_spools_flushed()  # restarted replicas write what they took over (1 s cycle)
        recovered = sum(
            int(m)
            for api in apis
            for m in re.findall(rb"recovered (\d+) unflushed", api.log_path.read_bytes())
        )
        admin = Client(apis[0].url or "", plat.admin_key, retries=3)
        violations = check(
            db=db,
            admin=admin,
            record=record,
            now=datetime.now(UTC),
            period=datetime.now(UTC).strftime("%Y-%m"),
            transient_timeout=TRANSIENT_TIMEOUT,
        )
        admin.close()

    ops = sum(record.operations.values())
    print(
        f"\nchaos: {load_s:.0f} s of load; {ops} operations {dict(record.operations)}; "
        f"{len(record.replays)} idempotent replays; {len(record.usage_sent)} usage events "
        f"(each sent twice); {sum(record.studio_answered.values())} studio requests answered "
        f"({recovered} billed from a killed replica's spool); "
        f"kills survived: {plat.kills} {killer.by_kind}; client-side "
        f"retries/answers {dict(record.errors)}; violations: {len(violations)}"
    )
    for v in violations[:40]:
        print("  violation:", v)
    assert ops > 50
    assert killer.by_kind["worker"] >= 2
    assert killer.by_kind["api"] >= 1
    assert violations == []
