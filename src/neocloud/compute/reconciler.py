"""The reconciler: drives instances and nodes toward their desired state through a driver.

Each pass: claim due rows with a lease token → decide (pure, ``decide_instance``,
``decide_node``) → act through the driver → apply, only where the row's lease is still ours.

Instance path: ``provisioning`` (provision, wait for the driver's duration) → ``running``;
a stop request (terminate, preemption notice, reservation end, node failure) → ``stopping``
(deprovision) → ``terminated`` / ``preempted`` / ``failed``, and the allocation ends.
Node path: ``available → allocated → provisioning → in_use`` while it has started
allocations; with none left ``→ releasing → wiping → available`` (or ``cordoned`` under a hold).
"""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.clusters import MEMBER_HOLD_MAX_S, clusters_holding_members
from neocloud.compute.decisions import (
    CHAINED,
    CLUSTER_ACTIVE,
    IS,
    NS,
    STOP_OUTCOME,
    InstanceAction,
    NodeAction,
    NodeFacts,
    decide_cluster,
    decide_instance,
    decide_node,
)
from neocloud.compute.domain import Reason
from neocloud.compute.lifecycle import move_cluster, move_instance, record_event, request_stop
from neocloud.compute.nodes import move_node
from neocloud.compute.tables import (
    AllocationRow,
    ClusterRow,
    GpuClaimRow,
    ImageRow,
    InstanceRow,
    NodeWorkRow,
)
from neocloud.db import bulk
from neocloud.db.engine import Database
from neocloud.drivers.base import (
    DEFAULT_LOGIN_USER,
    Driver,
    Drivers,
    ImageRef,
    Login,
    NodeRef,
    ProvisionRequest,
    StepResult,
    UnknownDriver,
    WipeChecker,
    WipeProgress,
)
from neocloud.fleet.tables import BootSeedRow, NodeRow
from neocloud.kernel.clock import Clock

# Driver steps run side by side (a real server's steps take seconds each, a cluster's members
# are provisioned at once); the results are applied together afterwards.
DRIVER_THREADS = 16
# Instance steps after which the boot a seed served is over (running, stopping, stopped).
SEED_SPENT = frozenset(
    {InstanceAction.MARK_RUNNING, InstanceAction.DEPROVISION, InstanceAction.FINISH}
)


def node_ref(n: NodeRow) -> NodeRef:
    return NodeRef(
        n.id,
        n.hostname,
        n.gpu_model,
        n.gpu_count,
        n.driver or "sim",
        dict(n.driver_config or {}),
        n.driver_secret,
        n.bmc,
        n.role or "gpu",
    )


def workload_hostname(row: InstanceRow) -> str:
    """The hostname a tenant's machine takes: its name when that is a valid DNS label, else
    its id (``inst_…`` with the underscore made a hyphen)."""
    name = (row.name or "").lower()
    if re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        return name
    return row.id.replace("_", "-").lower()[:63]


def provision_request(
    row: InstanceRow, node: NodeRow, image: ImageRow | None = None
) -> ProvisionRequest:
    """What the driver needs to provision ``row`` on ``node``; ``image`` is the catalog's entry
    for the instance's image (whether it carries cloud-init), when there is one."""
    config = node.driver_config or {}
    user_data = row.user_data
    return ProvisionRequest(
        workload_id=row.id,
        gpu_indices=tuple(row.gpu_indices),
        hostname=workload_hostname(row),
        login=Login(
            row.login_user or DEFAULT_LOGIN_USER,
            tuple(row.ssh_keys or ()),
            sudo=bool(config.get("sudo", True)) and row.studio_job_id is None,
            service=row.studio_job_id is not None,  # a studio job's: nobody logs in
        ),
        image=None
        if row.image is None
        else ImageRef(row.image, cloud_init=image is not None and image.cloud_init),
        user_data=user_data,
    )


def run_steps(calls: list[Callable[[], StepResult] | None]) -> list[StepResult | None]:
    """Run driver steps side by side (``None``: no step, no result); a step that raises is a
    failed step with its message."""

    def safe(call: Callable[[], StepResult] | None) -> StepResult | None:
        if call is None:
            return None
        try:
            return call()
        except Exception as exc:  # a driver bug (or a timeout) must not stop the reconciler
            # The step broke off half-way: what it left on the node is unknown, so the node
            # goes to repair (as the ssh driver does for its own failures), never straight back
            # to ``available`` for the next tenant without a wipe.
            return StepResult(
                False, message=f"driver error: {type(exc).__name__}: {exc}", repair=True
            )

    if len(calls) <= 1:
        return [safe(c) for c in calls]
    with ThreadPoolExecutor(min(DRIVER_THREADS, len(calls))) as pool:
        return list(pool.map(safe, calls))


class Reconciler:
    def __init__(
        self, db: Database, clock: Clock, driver: Driver | Drivers, *, lease_ttl_s: float = 30.0
    ) -> None:
        self.db, self.clock = db, clock
        self.drivers = Drivers.of(driver)
        self.lease_ttl = timedelta(seconds=lease_ttl_s)

    def run_once(self, *, max_passes: int = 6) -> int:
        """Reconcile until nothing is due now (steps of zero duration chain in one call);
        returns how many changes were applied."""
        total = 0
        for _ in range(max_passes):
            changed = (
                self.reconcile_instances() + self.reconcile_nodes() + self.reconcile_clusters()
            )
            total += changed
            if not changed:
                break
        return total

    # -- instances --------------------------------------------------------------------------

    def _claim(self, now: datetime) -> tuple[str, list[InstanceRow]]:
        token = secrets.token_hex(16)
        due = sa.or_(
            sa.and_(
                InstanceRow.state == IS.PROVISIONING.value,
                sa.or_(InstanceRow.due_at.is_(None), InstanceRow.due_at <= now),
            ),
            sa.and_(
                InstanceRow.state.in_([IS.PROVISIONING.value, IS.RUNNING.value]),
                InstanceRow.stop_at <= now,
                sa.or_(  # a member with Slurm on it stops once Slurm is off (compute/slurm.py)
                    InstanceRow.cluster_id.is_(None),
                    InstanceRow.cluster_id.not_in(clusters_holding_members()),
                    InstanceRow.scheduler_released_at.is_not(None),  # drained, Slurm off it
                    InstanceRow.stop_at <= now - timedelta(seconds=MEMBER_HOLD_MAX_S),
                ),
            ),
            sa.and_(
                InstanceRow.state == IS.STOPPING.value,
                sa.or_(InstanceRow.due_at.is_(None), InstanceRow.due_at <= now),
            ),
            sa.and_(
                InstanceRow.state == IS.RUNNING.value,
                sa.or_(
                    InstanceRow.reboot_requested_at.is_not(None),
                    sa.and_(InstanceRow.step == "reboot", InstanceRow.due_at <= now),
                ),
            ),
        )
        free = sa.or_(InstanceRow.lease_expires_at.is_(None), InstanceRow.lease_expires_at <= now)
        with self.db.transaction() as s:
            ids = list(s.scalars(sa.select(InstanceRow.id).where(due, free).limit(500)))
            if not ids:
                return token, []
            s.execute(
                sa.update(InstanceRow)
                .where(InstanceRow.id.in_(ids), free)
                .values(lease_token=token, lease_expires_at=now + self.lease_ttl)
                .execution_options(synchronize_session=False)
            )
            rows = list(s.scalars(sa.select(InstanceRow).where(InstanceRow.lease_token == token)))
            nodes = {
                n.id: n
                for n in s.scalars(
                    sa.select(NodeRow).where(NodeRow.id.in_({r.node_id for r in rows}))
                )
            }
            names = {r.image for r in rows if r.image}
            images = (
                {i.name: i for i in s.scalars(sa.select(ImageRow).where(ImageRow.name.in_(names)))}
                if names
                else {}
            )
        self._nodes, self._images = nodes, images
        return token, rows

    def reconcile_instances(self) -> int:
        """Act on every claimed instance through the driver, then apply all results in one
        transaction (each only where our lease token still holds)."""
        now = self.clock.now()
        token, rows = self._claim(now)
        if not rows:
            return 0
        actions: list[tuple[str, InstanceAction]] = []
        calls: list[Callable[[], StepResult] | None] = []
        for row in rows:
            action = decide_instance(
                row.state,
                row.step,
                row.due_at,
                row.stop_at,
                now,
                row.reboot_requested_at is not None,
            )
            actions.append((row.id, action))
            node = self._nodes.get(row.node_id or "")
            calls.append(None if node is None else self._step(row, node, action))
        results = run_steps(calls)
        plans = [
            (rid, action, result) for (rid, action), result in zip(actions, results, strict=True)
        ]
        with self.db.transaction() as s, bulk.buffered(s):
            # only rows whose lease is still ours: another holder's result wins
            mine = {
                r.id: r
                for r in s.scalars(sa.select(InstanceRow).where(InstanceRow.lease_token == token))
            }
            return sum(
                self._apply_instance(s, mine[plan[0]], *plan[1:], now)
                for plan in plans
                if plan[0] in mine
            )

    def _step(
        self, row: InstanceRow, node: NodeRow, action: InstanceAction
    ) -> Callable[[], StepResult] | None:
        """The driver call an action needs on ``node``, if any."""
        ref = node_ref(node)
        if action is InstanceAction.PROVISION:
            request = provision_request(row, node, self._images.get(row.image or ""))
            return lambda: self.drivers.for_node(ref).provision(ref, request)
        if action is InstanceAction.DEPROVISION:
            workload, user = row.id, row.login_user or DEFAULT_LOGIN_USER
            return lambda: self.drivers.for_node(ref).deprovision(
                ref, workload_id=workload, login_user=user
            )
        if action is InstanceAction.REBOOT:
            workload = row.id
            return lambda: self.drivers.for_node(ref).reboot(ref, workload_id=workload)
        return None

    def _apply_instance(
        self,
        s: Session,
        row: InstanceRow,
        action: InstanceAction,
        step: StepResult | None,
        now: datetime,
    ) -> int:
        row.lease_token, row.lease_expires_at = None, None
        if action in SEED_SPENT and row.node_id is not None:
            # The boot a cloud-init seed was made for is over: its one-boot URL goes too.
            s.execute(
                sa.delete(BootSeedRow).where(
                    BootSeedRow.node_id == row.node_id, BootSeedRow.workload_id == row.id
                )
            )
        if step is not None and step.notes:
            for note in step.notes:
                record_event(
                    s,
                    subject_id=row.id,
                    org_id=row.org_id,
                    now=now,
                    kind=f"{action.value}_note",
                    message=note,
                    node_id=row.node_id,
                )
        if action is InstanceAction.PROVISION:
            if step is not None and not step.ok:
                # The tenant never got the machine: nothing of it is billed.
                end_allocation(s, row, now, billable=False)
                move_instance(
                    s,
                    row,
                    IS.FAILED,
                    now,
                    reason=Reason.PROVISION_FAILED.value,
                    message=step.message,
                )
                self._repair_if_asked(s, row, step, now)
                return 1
            if step is not None and step.access is not None:
                row.access = step.access.to_dict()
            duration = step.duration_s if step else 0.0
            if duration <= 0:  # done at once: no second pass needed
                row.step, row.due_at = None, None
                move_instance(s, row, IS.RUNNING, now)
                return 1
            row.step = "provision"
            row.due_at = now + timedelta(seconds=duration)
            row.updated_at = now
            return 1
        if action is InstanceAction.MARK_RUNNING:
            row.step, row.due_at = None, None
            move_instance(s, row, IS.RUNNING, now)
            return 1
        if action is InstanceAction.REBOOT:
            row.reboot_requested_at = None
            ok = step is None or step.ok
            record_event(
                s,
                subject_id=row.id,
                org_id=row.org_id,
                now=now,
                kind="reboot",
                message="rebooting" if ok else f"reboot failed: {step.message if step else ''}",
                node_id=row.node_id,
            )
            if ok:
                row.step = "reboot"
                row.due_at = now + timedelta(seconds=step.duration_s if step else 0.0)
            row.updated_at = now
            return 1
        if action is InstanceAction.REBOOTED:
            row.step, row.due_at, row.updated_at = None, None, now
            record_event(
                s,
                subject_id=row.id,
                org_id=row.org_id,
                now=now,
                kind="rebooted",
                message="back up after the reboot",
                node_id=row.node_id,
            )
            return 1
        if action is InstanceAction.DEPROVISION:
            if step is not None and not step.ok:
                # The tenant's login may still be on the node: the instance fails, billed up to
                # the stop it asked for, and the node goes to repair before anyone else lands.
                row.step, row.due_at = None, None
                end_allocation(s, row, min(now, row.stop_at or now))
                move_instance(
                    s,
                    row,
                    IS.FAILED,
                    now,
                    reason=Reason.DEPROVISION_FAILED.value,
                    message=step.message,
                )
                self._repair_if_asked(s, row, replace(step, repair=True), now)
                return 1
            row.step = "deprovision"
            row.due_at = now + timedelta(seconds=step.duration_s if step else 0.0)
            move_instance(s, row, IS.STOPPING, now, reason=row.stop_reason)
            return 1
        if action is InstanceAction.FINISH:
            target, reason = STOP_OUTCOME.get(
                row.stop_reason or Reason.USER.value, (IS.TERMINATED, Reason.USER)
            )
            row.step, row.due_at = None, None
            end_allocation(s, row, now)
            move_instance(s, row, target, now, reason=reason.value)
            return 1
        return 0

    def _repair_if_asked(
        self, s: Session, row: InstanceRow, step: StepResult, now: datetime
    ) -> None:
        """A failed step that left the node unfit for the next tenant sends it to repair."""
        if not step.repair or row.node_id is None:
            return
        node = s.get(NodeRow, row.node_id)
        if node is None:
            return
        send_to_repair(s, node, now, f"{step.message or 'a driver step failed'}")

    # -- clusters ---------------------------------------------------------------------------

    def reconcile_clusters(self) -> int:
        """A cluster's state follows its members (see ``decide_cluster``)."""
        now = self.clock.now()
        changed = 0
        with self.db.transaction() as s:
            rows = list(
                s.scalars(
                    sa.select(ClusterRow).where(
                        ClusterRow.state.in_([st.value for st in CLUSTER_ACTIVE])
                    )
                )
            )
            for c in rows:
                members = [
                    (st, why)
                    for st, why in s.execute(
                        sa.select(InstanceRow.state, InstanceRow.state_reason).where(
                            InstanceRow.cluster_id == c.id
                        )
                    )
                ]
                target, reason = decide_cluster(c.state, c.node_count, members, c.state_reason)
                if target is not None:
                    move_cluster(s, c, target, now, reason=reason)
                    changed += 1
        return changed

    # -- nodes ------------------------------------------------------------------------------

    def reconcile_nodes(self) -> int:
        now = self.clock.now()
        with self.db.transaction() as s:
            facts = self._node_facts(s, now)
        todo = {node_id: decide_node(f) for node_id, f in facts.items()}
        todo = {k: v for k, v in todo.items() if v is not NodeAction.NONE}
        if not todo:
            return 0
        wipes: dict[str, StepResult] = {}
        wiping = [k for k, v in todo.items() if v is NodeAction.WIPE]
        if wiping:
            with self.db.transaction() as s:
                refs = [
                    node_ref(n) for n in s.scalars(sa.select(NodeRow).where(NodeRow.id.in_(wiping)))
                ]
            done = run_steps([self._wipe_step(ref) for ref in refs])
            wipes = {r.id: result for r, result in zip(refs, done, strict=True) if result}
        checks = self._check_wipes([k for k, v in todo.items() if v is NodeAction.FREE], now)
        with self.db.transaction() as s, bulk.buffered(s):
            # Lock the nodes (in id order), then decide again on facts read under the lock.
            locked = {
                n.id: n
                for n in s.scalars(
                    sa.select(NodeRow)
                    .where(NodeRow.id.in_(sorted(todo)))
                    .order_by(NodeRow.id)
                    .with_for_update()
                )
            }
            fresh = self._node_facts(s, now, only=set(todo))
            changed = 0
            for node_id in sorted(todo):
                node, f = locked.get(node_id), fresh.get(node_id)
                if node is None or f is None or decide_node(f) is not todo[node_id]:
                    continue  # changed since we looked: decide again next pass
                if node_id in checks:
                    self._apply_wipe_check(s, node, checks[node_id], now)
                    changed += 1
                    continue
                self._apply_node(s, node, todo[node_id], wipes.get(node_id), now)
                changed += 1
                # busy moves chain in one pass: allocated -> provisioning -> in_use
                while (nxt := decide_node(replace(f, state=node.state))) in CHAINED:
                    self._apply_node(s, node, nxt, None, now)
                    changed += 1
            return changed

    def _wipe_step(self, ref: NodeRef) -> Callable[[], StepResult]:
        return lambda: self.drivers.for_node(ref).wipe(ref)

    def _check_wipes(self, node_ids: list[str], now: datetime) -> dict[str, WipeProgress]:
        """Ask the drivers whose wipe only started the work (a reimage, ``WipeChecker``)
        whether it is over, side by side; other nodes' wipes are over when due."""
        drivers = [*self.drivers.by_name.values(), self.drivers.only_driver]
        if not node_ids or not any(isinstance(d, WipeChecker) for d in drivers):
            return {}  # no driver here checks its wipes (the simulator): no query either
        with self.db.transaction() as s:
            rows = s.execute(
                sa.select(NodeRow, NodeWorkRow.started_at)
                .join(NodeWorkRow, NodeWorkRow.node_id == NodeRow.id)
                .where(NodeRow.id.in_(node_ids))
            ).all()
            refs = [(node_ref(n), started) for n, started in rows]
        calls: list[Callable[[], CheckedWipe]] = []
        for ref, started in refs:
            try:
                driver = self.drivers.for_node(ref)
            except UnknownDriver:
                continue  # its wipe failed already, with the reason
            if isinstance(driver, WipeChecker):
                elapsed = (now - started).total_seconds()
                calls.append(partial(check_wipe, driver, ref, elapsed))
        if not calls:
            return {}
        with ThreadPoolExecutor(min(DRIVER_THREADS, len(calls))) as pool:
            done = list(pool.map(lambda call: call(), calls))
        return {p.node_id: p.progress for p in done}

    def _apply_wipe_check(
        self, s: Session, node: NodeRow, checked: WipeProgress, now: datetime
    ) -> None:
        """Not over yet: look again later. Over: the node is available, or failed with why."""
        if not checked.done:
            work = s.get(NodeWorkRow, node.id)
            if work is not None:
                work.due_at = now + timedelta(seconds=max(checked.retry_s, 1.0))
            return
        s.execute(sa.delete(NodeWorkRow).where(NodeWorkRow.node_id == node.id))
        if checked.ok:
            move_node(s, node, NS.AVAILABLE, now, "; ".join(checked.notes)[:500] or "reimaged")
        else:
            move_node(s, node, NS.FAILED, now, (checked.message or "reimage failed")[:500])

    def _node_facts(
        self, s: Session, now: datetime, *, only: set[str] | None = None
    ) -> dict[str, NodeFacts]:
        started: dict[str, int] = defaultdict(int)
        for node_id, count in s.execute(
            sa.select(AllocationRow.node_id, sa.func.count())
            .where(
                AllocationRow.start_at <= now,
                sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > now),
            )
            .where(AllocationRow.node_id.in_(only) if only is not None else sa.true())
            .group_by(AllocationRow.node_id)
        ):
            started[node_id] = count
        prov: dict[str, int] = defaultdict(int)
        run: dict[str, int] = defaultdict(int)
        for inst_node, state, step in s.execute(
            sa.select(InstanceRow.node_id, InstanceRow.state, InstanceRow.step).where(
                InstanceRow.state.in_([IS.PROVISIONING.value, IS.RUNNING.value]),
                InstanceRow.node_id.in_(only) if only is not None else sa.true(),
            )
        ):
            if inst_node is None:
                continue
            if state == IS.RUNNING.value:
                run[inst_node] += 1
            elif step == "provision":
                prov[inst_node] += 1
        work = {w.node_id: w for w in s.scalars(sa.select(NodeWorkRow))}
        busy = [
            NS.ALLOCATED,
            NS.PROVISIONING,
            NS.IN_USE,
            NS.DRAINING,
            NS.RELEASING,
            NS.WIPING,
        ]
        stmt = sa.select(NodeRow.id, NodeRow.state).where(
            NodeRow.id.in_(only)
            if only is not None
            else sa.or_(
                NodeRow.state.in_([st.value for st in busy]),
                NodeRow.id.in_(list(started)),
            )
        )
        out = {}
        for node_id, state in s.execute(stmt):
            w = work.get(node_id)
            wipe_due = None if w is None else (w.due_at is None or w.due_at <= now)
            out[node_id] = NodeFacts(state, started[node_id], prov[node_id], run[node_id], wipe_due)
        return out

    def _apply_node(
        self,
        s: Session,
        node: NodeRow,
        action: NodeAction,
        result: StepResult | None,
        now: datetime,
    ) -> None:
        """One node's move, inside the caller's transaction (one for the whole pass)."""
        if action is NodeAction.ALLOCATE:
            move_node(s, node, NS.ALLOCATED, now, "allocated to a workload")
        elif action is NodeAction.PROVISION:
            move_node(s, node, NS.PROVISIONING, now, "provisioning a workload")
        elif action is NodeAction.IN_USE:
            move_node(s, node, NS.IN_USE, now, "workload running")
        elif action is NodeAction.UNALLOCATE:
            move_node(s, node, NS.AVAILABLE, now, "allocation ended before use")
        elif action is NodeAction.RELEASE:
            move_node(s, node, NS.RELEASING, now, "workload ended")
        elif action is NodeAction.WIPE:
            if result is not None and not result.ok:
                send_to_repair(s, node, now, f"wipe failed: {result.message or 'no reason'}")
                return
            duration = result.duration_s if result is not None else 0.0
            move_node(s, node, NS.WIPING, now, "wiping between tenants")
            s.merge(
                NodeWorkRow(
                    node_id=node.id,
                    step="wipe",
                    started_at=now,
                    due_at=now + timedelta(seconds=duration),
                )
            )
        elif action is NodeAction.FREE:
            s.execute(sa.delete(NodeWorkRow).where(NodeWorkRow.node_id == node.id))
            move_node(s, node, NS.AVAILABLE, now, "wiped")
        elif action is NodeAction.FAIL_WORKLOADS:
            fail_workloads(s, node.id, now)


@dataclass(frozen=True)
class CheckedWipe:
    node_id: str
    progress: WipeProgress


def check_wipe(driver: WipeChecker, ref: NodeRef, elapsed_s: float) -> CheckedWipe:
    """One node's ``check_wipe``; a driver that raises has failed the wipe, with its error."""
    try:
        return CheckedWipe(ref.id, driver.check_wipe(ref, elapsed_s=elapsed_s))
    except Exception as exc:  # a driver bug must not stop the reconciler
        why = f"wipe check error: {type(exc).__name__}: {exc}"
        return CheckedWipe(ref.id, WipeProgress(True, ok=False, message=why))


def send_to_repair(s: Session, node: NodeRow, now: datetime, why: str) -> None:
    """The node is unfit for a tenant (a step failed half-way): its workloads fail, it is
    recorded failed, then sent to repair, from where only burn-in brings it back."""
    fail_workloads(s, node.id, now)
    if node.state != NS.FAILED.value:
        move_node(s, node, NS.FAILED, now, why)
    move_node(s, node, NS.REPAIR, now, why)


def end_allocation(s: Session, row: InstanceRow, now: datetime, *, billable: bool = True) -> None:
    """End the instance's allocation at ``now`` (kept as a fact), and its GPU claims;
    ``billable`` false: the workload never ran, so the interval is made empty."""
    if row.allocation_id is None:
        return
    alloc = s.get(AllocationRow, row.allocation_id)
    if alloc is None:
        return
    end = now if alloc.end_at is None or alloc.end_at > now else alloc.end_at
    if not billable:
        end = alloc.start_at
    if alloc.start_at > end:
        end = alloc.start_at  # never started: an empty interval
    alloc.end_at = end
    s.execute(
        sa.update(GpuClaimRow).where(GpuClaimRow.allocation_id == alloc.id).values(end_at=end)
    )


def fail_workloads(s: Session, node_id: str, now: datetime) -> None:
    """The node failed: its instances stop at once with reason ``node_failed``."""
    rows = s.scalars(
        sa.select(InstanceRow).where(
            InstanceRow.node_id == node_id,
            InstanceRow.state.in_([IS.PROVISIONING.value, IS.RUNNING.value, IS.STOPPING.value]),
        )
    )
    for row in rows:
        end_allocation(s, row, now)
        row.step, row.due_at = None, None
        row.stop_reason = Reason.NODE_FAILED.value
        move_instance(
            s, row, IS.FAILED, now, reason=Reason.NODE_FAILED.value, message="the node failed"
        )
    # allocations without an instance (reservations) end too: the node is out of service
    s.execute(
        sa.update(AllocationRow)
        .where(
            AllocationRow.node_id == node_id,
            AllocationRow.start_at <= now,
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > now),
        )
        .values(end_at=now)
        .execution_options(synchronize_session=False)
    )


def evict_drained(*, db: Database, clock: Clock, notice_s: float) -> int:
    """Instances on nodes an operator drains get a notice, then stop (reason ``maintenance``);
    a cluster member lost this way is replaced like one lost to a failure."""
    now = clock.now()
    with db.transaction() as s:
        drained = sa.select(NodeRow.id).where(NodeRow.drain_requested_at.is_not(None))
        rows = list(
            s.scalars(
                sa.select(InstanceRow).where(
                    InstanceRow.node_id.in_(drained),
                    InstanceRow.state.in_([IS.PROVISIONING.value, IS.RUNNING.value]),
                    InstanceRow.stop_at.is_(None),
                )
            )
        )
        for row in rows:
            request_stop(
                s, row, now, reason=Reason.MAINTENANCE, at=now + timedelta(seconds=notice_s)
            )
    return len(rows)
