"""Reservation offerings: quote capacity blocks (``find_offerings``) and buy one (``buy``).

An offering is a priced option valid for 5 minutes: whole nodes of one fabric for
``[start, end)``, priced at the price book's reserved price per GPU-hour in force when quoted.
Buying it books one firm allocation per node (the PostgreSQL exclusion constraint guards their
GPU claims like any other) and records a ``scheduled`` reservation (``compute.reservations``
takes it on from there).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from neocloud.compute.admission import Pool, declined_error, load_pool
from neocloud.compute.claims import check_free, preempt
from neocloud.compute.config import ComputeConfig
from neocloud.compute.domain import ReservationState
from neocloud.compute.lifecycle import record_event
from neocloud.compute.prices import CATALOG_PRICES, GpuPrices, PriceSource
from neocloud.compute.scheduler import build_engine
from neocloud.compute.snapshot import from_ts, load_snapshot, ts
from neocloud.compute.tables import (
    AllocationRow,
    GpuClaimRow,
    OfferingRow,
    ReservationRow,
)
from neocloud.db.engine import Database
from neocloud.fleet.catalog import resolve_gpu_model
from neocloud.fleet.tables import NodeRow
from neocloud.kernel.auth import Principal, Role
from neocloud.kernel.clock import Clock
from neocloud.kernel.errors import Conflict, NotFound, ValidationFailed
from neocloud.kernel.ids import new_id
from neocloud.kernel.money import Money
from neocloud.placement import Offering, OfferingRequest, PlacementEngine
from neocloud.placement.admission import Verdict
from neocloud.tenancy.tables import OrgRow

OFFERING_TTL = timedelta(minutes=5)
MAX_OFFERINGS = 6
MIN_HOURS = 24
MAX_TENANT_HOURS = 365 * 24  # 12 months
MAX_OPERATOR_HOURS = 5 * 365 * 24  # multi-year contracts, created by the operator
HORIZON_S = 400 * 86_400.0
# When the admission policy declines every option, quotes look later: this many times, each a
# quarter of the duration (at least this step) after the last start declined.
STEER_TRIES = 8
STEER_STEP_S = 3600.0


@dataclass(frozen=True)
class Declined:
    """An option placement found but the admission policy does not sell, and why."""

    start_at: datetime
    end_at: datetime
    fabric: str
    reason: str
    bid_price: str  # per GPU-hour, in the offering's currency
    price: str


@dataclass(frozen=True)
class Quote:
    """Offerings shown, and the options not shown with their reasons."""

    offerings: list[OfferingRow]
    declined: list[Declined]


@dataclass(frozen=True)
class OfferingQuery:
    gpu_model: str
    node_count: int
    duration_hours: int
    start_after: datetime | None = None
    start_before: datetime | None = None
    fabric: str | None = None
    # Operator admins quote (and buy) on behalf of a tenant org: multi-year contracts.
    org_id: str | None = None


def _price(prices: GpuPrices, gpu_model: str, gpus: int, hours: int) -> Money:
    # The book's reserved price per GPU-hour: a quote equals what billing charges for it.
    return prices.reserved_per_gpu_hour(gpu_model) * (gpus * hours)


def _validate(q: OfferingQuery, actor: Principal, now: datetime) -> tuple[str, datetime, datetime]:
    model = resolve_gpu_model(q.gpu_model)
    if q.node_count < 1:
        raise ValidationFailed("node_count must be at least 1", param="node_count")
    most = MAX_OPERATOR_HOURS if actor.is_operator_admin else MAX_TENANT_HOURS
    if not MIN_HOURS <= q.duration_hours <= most:
        raise ValidationFailed(
            f"duration_hours must be between {MIN_HOURS} (1 day) and {most}"
            + ("" if actor.is_operator_admin else " (12 months; longer terms are contracts)"),
            code="duration_out_of_range",
            param="duration_hours",
        )
    after = max(q.start_after or now, now)
    before = q.start_before or after + timedelta(days=14)
    if before < after:
        raise ValidationFailed(
            "start_before must not be before start_after", code="bad_window", param="start_before"
        )
    return model.id, after, before


def find_offerings(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    query: OfferingQuery,
    config: ComputeConfig,
    prices: PriceSource = CATALOG_PRICES,
) -> list[OfferingRow]:
    """The offerings of ``quote`` (those the admission policy sells)."""
    return quote(
        db=db, clock=clock, actor=actor, query=query, config=config, prices=prices
    ).offerings


def quote(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    query: OfferingQuery,
    config: ComputeConfig,
    prices: PriceSource = CATALOG_PRICES,
) -> Quote:
    """Up to 6 options, each valid for 5 minutes (earliest first, fewest blocks), priced for
    the whole block at ``prices``' reserved price per GPU-hour in force now; the options the
    admission policy (``config.admission_policy``) declines are listed with the reason."""
    org_id = query.org_id or actor.org_id
    if org_id != actor.org_id:
        actor.require_operator(write=True)
        with db.transaction() as s:
            if s.get(OrgRow, org_id) is None:
                raise NotFound(f"no organization {org_id}", code="org_not_found", param="org_id")
    actor.require_org_role(org_id, Role.MEMBER)
    now = clock.now()
    model_id, after, before = _validate(query, actor, now)
    book = prices.prices_at(now)
    with db.transaction() as s:
        snap = load_snapshot(s, now, gpu_model=model_id)
        gpus_per_node = max((n.gpu_count for n in snap.nodes.values()), default=8)
        pool = load_pool(s, now=now, gpu_model=model_id, prices=book, config=config)
    engine = build_engine(snap, config)
    engine.horizon = max(HORIZON_S, ts(before) - ts(now) + 86_400.0)
    price = _price(book, model_id, gpus_per_node * query.node_count, query.duration_hours)
    per_gpu_hour = float(book.reserved_per_gpu_hour(model_id).amount)
    ask = OfferingRequest(
        model_id,
        query.node_count,
        query.duration_hours * 3600.0,
        earliest_start=ts(after),
        latest_start=ts(before),
        fabric=query.fabric,
        k=MAX_OFFERINGS,
    )
    shown, declined = _search(engine, pool, ask, gpus_per_node, per_gpu_hour, ts(now))
    rows = [
        OfferingRow(
            id=new_id("off", at=now),
            org_id=org_id,
            gpu_model=model_id,
            node_count=query.node_count,
            fabric=o.domain,
            node_ids=list(o.node_ids),
            start_at=from_ts(o.start),
            end_at=from_ts(o.end),
            price_amount=price.amount,
            price_currency=price.currency,
            created_at=now,
            expires_at=now + OFFERING_TTL,
        )
        for o in shown
    ]
    with db.transaction() as s:
        s.add_all(rows)
    return Quote(rows, declined)


def _search(
    engine: PlacementEngine,
    pool: Pool,
    ask: OfferingRequest,
    gpus_per_node: int,
    per_gpu_hour: float,
    now: float,
) -> tuple[list[Offering], list[Declined]]:
    """The options placement finds that the admission policy sells, and those it declines.
    Steering: while it declines every option found, look again a little later."""
    declined: list[Declined] = []
    shown: list[Offering] = []
    es = ask.earliest_start if ask.earliest_start is not None else now
    for _ in range(STEER_TRIES):
        found = engine.offerings(replace(ask, earliest_start=es), now=now)
        for o in found:
            v = _judge(pool, ask.node_count, gpus_per_node, o.start, o.end, per_gpu_hour)
            if v.admitted:
                shown.append(o)
                continue
            declined.append(
                Declined(
                    from_ts(o.start),
                    from_ts(o.end),
                    o.domain,
                    v.reason,
                    f"{v.bid_price:.4f}",
                    f"{v.price:.4f}",
                )
            )
        if shown or not found:
            break
        es = max(o.start for o in found) + max(STEER_STEP_S, ask.duration / 4)
        if ask.latest_start is not None and es > ask.latest_start:
            break
    return shown, declined


def _judge(
    pool: Pool, nodes: int, gpus_per_node: int, start: float, end: float, price: float
) -> Verdict:
    return pool.judge(
        nodes, gpus_per_node, start, end, price, when=f"starting {from_ts(start).isoformat()}"
    )


def _suggest(
    db: Database,
    clock: Clock,
    actor: Principal,
    off: OfferingRow,
    config: ComputeConfig,
    prices: PriceSource,
) -> dict[str, object]:
    hours = round((off.end_at - off.start_at).total_seconds() / 3600)
    fresh = find_offerings(
        db=db,
        clock=clock,
        actor=actor,
        query=OfferingQuery(
            off.gpu_model, off.node_count, hours, off.start_at, None, None, off.org_id
        ),
        config=config,
        prices=prices,
    )
    if not fresh:
        return {}
    f = fresh[0]
    return {
        "suggestion": {
            "id": f.id,
            "start": f.start_at.isoformat(),
            "end": f.end_at.isoformat(),
            "fabric": f.fabric,
            "price": {"amount": str(f.price_amount), "currency": f.price_currency},
        }
    }


def buy(
    *,
    db: Database,
    clock: Clock,
    actor: Principal,
    offering_id: str,
    config: ComputeConfig,
    prices: PriceSource = CATALOG_PRICES,
) -> ReservationRow:
    """Buy an offering; buying it again answers the same reservation. A stale or taken one is a
    409 carrying a fresh suggestion."""
    now = clock.now()
    with db.transaction() as s:
        off = s.get(OfferingRow, offering_id)
        if off is None or not (off.org_id == actor.org_id or actor.is_operator_admin):
            raise NotFound(
                f"no offering {offering_id}", code="offering_not_found", param="offering_id"
            )
        existing = s.scalars(
            sa.select(ReservationRow).where(ReservationRow.offering_id == offering_id)
        ).first()
        if existing is not None:
            return existing
        expired = off.expires_at <= now
    actor.require_org_role(off.org_id, Role.MEMBER)
    if expired:
        raise Conflict(
            "the offering has expired (offerings are valid for 5 minutes)",
            code="offering_expired",
            param="offering_id",
            details=_suggest(db, clock, actor, off, config, prices),
        )
    _admit(db, clock, actor, off, config, prices)
    try:
        return _book(db, clock, actor, off, config)
    except Conflict as exc:
        if exc.code == "offering_taken":
            exc.details.update(_suggest(db, clock, actor, off, config, prices))
        raise


def _admit(
    db: Database,
    clock: Clock,
    actor: Principal,
    off: OfferingRow,
    config: ComputeConfig,
    prices: PriceSource,
) -> None:
    """409 ``reservation_declined`` when the policy no longer sells the offering (demand and the
    calendar may have moved since the quote), with a window it would sell if one is found."""
    now = clock.now()
    book = prices.prices_at(now)
    with db.transaction() as s:
        pool = load_pool(s, now=now, gpu_model=off.gpu_model, prices=book, config=config)
        node = s.get(NodeRow, off.node_ids[0]) if off.node_ids else None
    gpus_per_node = node.gpu_count if node is not None else 8
    per_gpu_hour = float(book.reserved_per_gpu_hour(off.gpu_model).amount)
    v = _judge(pool, off.node_count, gpus_per_node, ts(off.start_at), ts(off.end_at), per_gpu_hour)
    if not v.admitted:
        raise declined_error(v, off.price_currency, _suggest(db, clock, actor, off, config, prices))


def _book(
    db: Database, clock: Clock, actor: Principal, off: OfferingRow, config: ComputeConfig
) -> ReservationRow:
    now = clock.now()
    with db.transaction() as s:
        rsv = ReservationRow(
            id=new_id("rsv", at=now),
            org_id=off.org_id,
            offering_id=off.id,
            gpu_model=off.gpu_model,
            node_count=off.node_count,
            fabric=off.fabric,
            node_ids=list(off.node_ids),
            start_at=off.start_at,
            end_at=off.end_at,
            price_amount=off.price_amount,
            price_currency=off.price_currency,
            state=ReservationState.SCHEDULED.value,
            created_by=actor.key_id,
            created_at=now,
            updated_at=now,
        )
        s.add(rsv)
        s.flush()
        nodes = {n.id: n for n in s.scalars(sa.select(NodeRow).where(NodeRow.id.in_(off.node_ids)))}
        for node_id in off.node_ids:
            node = nodes.get(node_id)
            if node is None:
                raise Conflict("a node of the offering is gone", code="offering_taken")
            indices = list(range(node.gpu_count))
            try:
                check_free(s, node_id, indices, off.start_at, off.end_at, firm=True)
            except Conflict as exc:
                raise Conflict(
                    "the offering's capacity was taken meanwhile",
                    code="offering_taken",
                    param="offering_id",
                ) from exc
            end_spot_before(s, node_id, off.start_at, now)
            alloc = AllocationRow(
                id=new_id("alc", at=now),
                org_id=off.org_id,
                reservation_id=rsv.id,
                node_id=node_id,
                gpu_model=off.gpu_model,
                gpu_count=node.gpu_count,
                gpu_indices=indices,
                vcpus=node.vcpus,
                ram_gib=node.ram_gib,
                cls="reserved",
                start_at=off.start_at,
                end_at=off.end_at,
                created_at=now,
            )
            s.add(alloc)
            s.flush()
            for i in indices:
                s.add(
                    GpuClaimRow(
                        allocation_id=alloc.id,
                        gpu_index=i,
                        node_id=node_id,
                        firm=True,
                        start_at=off.start_at,
                        end_at=off.end_at,
                    )
                )
        record_event(
            s,
            subject_id=rsv.id,
            org_id=rsv.org_id,
            now=now,
            kind="state",
            to_state=rsv.state,
            message=f"{rsv.node_count} x {rsv.gpu_model} nodes in {rsv.fabric}",
        )
    return rsv


def end_spot_before(s: Session, node_id: str, start: datetime, now: datetime) -> None:
    """Spot on a reserved node ends when the reservation starts (notice until then)."""
    spots = s.scalars(
        sa.select(AllocationRow).where(
            AllocationRow.node_id == node_id,
            AllocationRow.cls == "spot",
            sa.or_(AllocationRow.end_at.is_(None), AllocationRow.end_at > start),
        )
    )
    for a in spots:
        preempt(s, a, now, max(start, now))
