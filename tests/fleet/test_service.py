"""Service tests on both backends: import, filters, lifecycle, health, summary."""

from __future__ import annotations

import itertools

import pytest

from neocloud.db.engine import Database
from neocloud.fleet import service
from neocloud.fleet.domain import CheckStatus, NodeState
from neocloud.fleet.service import CheckResult, NodeFilter
from neocloud.fleet.spec import parse_spec
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.errors import Conflict, IllegalTransition, ValidationFailed

from .helpers import GOOD


def _import(
    db: Database, clock: VirtualClock, text: str = GOOD, **kw: object
) -> service.ImportResult:
    return service.import_spec(db=db, clock=clock, spec=parse_spec(text), **kw)  # type: ignore[arg-type]


def _ids(db: Database, **filters: object) -> list[str]:
    page = service.list_nodes(db=db, filters=NodeFilter(**filters), limit=1000, after=None)  # type: ignore[arg-type]
    return [n.hostname for n in page.items]


def test_import_creates_nodes_domains_and_events(db: Database, clock: VirtualClock) -> None:
    result = _import(db, clock)
    assert result.nodes_created == 17
    assert result.gpus_created == 136
    assert service.count_nodes(db=db) == 17
    node = service.list_nodes(db=db, filters=NodeFilter(), limit=1, after=None).items[0]
    assert node.state == "available"
    assert node.health == "healthy"
    assert node.capex_amount is not None
    assert str(node.capex_amount.normalize()) == "2.5E+5"
    assert node.in_service_at is not None
    assert node.in_service_at.year == 2026
    events = service.list_node_events(db=db, node_id=node.id, limit=10, after=None).items
    assert [(e.from_state, e.to_state) for e in events] == [(None, "available")]
    levels, domains = service.topology(db=db, level="rack")
    assert levels == ["region", "zone", "fabric", "block", "rack"]
    assert {d.name: d.nodes for d in domains}["rack-special"] == 1


def test_import_is_all_or_nothing(db: Database, clock: VirtualClock) -> None:
    _import(db, clock)
    # A new fabric, but the listed node's hostname is already taken.
    overlapping = GOOD.replace("us-east-1a-ib01", "us-east-1a-ib02").replace(
        "rack-special", "rack-special-2"
    )
    with pytest.raises(Conflict, match="special-01") as exc:
        _import(db, clock, overlapping)
    assert exc.value.code == "duplicate_hostname"
    assert service.count_nodes(db=db) == 17
    _, domains = service.topology(db=db, level="fabric")
    assert [d.name for d in domains] == ["us-east-1a-ib01"]


def test_import_refuses_a_domain_under_another_parent(db: Database, clock: VirtualClock) -> None:
    _import(db, clock)
    moved = (
        GOOD.replace("zone: us-east-1a", "zone: us-east-1b")
        .replace("special-01", "special-02")
        .replace("bmc.example", "bmc2.example")
    )
    with pytest.raises(Conflict, match="fabric 'us-east-1a-ib01' already exists"):
        _import(db, clock, moved)


def test_initial_state_option(db: Database, clock: VirtualClock) -> None:
    result = _import(db, clock, initial_state="burn_in")
    assert result.initial_state == NodeState.BURN_IN
    assert len(_ids(db, state="burn_in")) == 17
    with pytest.raises(ValidationFailed):
        _import(db, clock, GOOD.replace("special-01", "x-01"), initial_state="in_use")


def test_filters(db: Database, clock: VirtualClock) -> None:
    _import(db, clock)
    assert len(_ids(db, gpu_model="H100")) == 17
    assert _ids(db, gpu_model="l40s") == []
    assert len(_ids(db, domains={"fabric": "us-east-1a-ib01"})) == 17
    assert len(_ids(db, domains={"block": "us-east-1a-ib01-b02"})) == 8
    assert _ids(db, domains={"rack": "us-east-1a-ib01-b01-r02"}) == [
        f"us-east-1a-ib01-b01-r02-n0{i}" for i in range(1, 5)
    ]
    assert _ids(db, labels={"pool": "research"}) == ["special-01"]
    assert _ids(db, hostname="special-01") == ["special-01"]
    assert len(_ids(db, state="available", health="healthy")) == 17
    with pytest.raises(ValidationFailed) as exc:
        _ids(db, domains={"row": "x"})
    assert exc.value.param == "row"
    with pytest.raises(ValidationFailed):
        _ids(db, state="sleeping")


def test_pagination(db: Database, clock: VirtualClock) -> None:
    _import(db, clock)
    first = service.list_nodes(db=db, filters=NodeFilter(), limit=10, after=None)
    assert first.has_more
    assert first.next_cursor
    second = service.list_nodes(db=db, filters=NodeFilter(), limit=10, after=first.next_cursor)
    assert len(second.items) == 7
    assert not second.has_more
    assert {n.id for n in first.items}.isdisjoint(n.id for n in second.items)


def _one(db: Database, clock: VirtualClock) -> str:
    _import(db, clock)
    return (
        service.list_nodes(db=db, filters=NodeFilter(hostname="special-01"), limit=1, after=None)
        .items[0]
        .id
    )


def test_cordon_uncordon_drain_retire(db: Database, clock: VirtualClock) -> None:
    node_id = _one(db, clock)
    node = service.cordon_node(db=db, clock=clock, node_id=node_id, reason="bad cable", actor="ops")
    assert node.state == "cordoned"
    assert node.hold
    assert node.state_reason == "bad cable"
    node = service.uncordon_node(db=db, clock=clock, node_id=node_id)
    assert node.state == "available"
    assert not node.hold
    # A busy node drains: the tenant keeps running, then lands in cordoned.
    for to in ("allocated", "provisioning", "in_use"):
        service.transition_node(db=db, clock=clock, node_id=node_id, to=to)
    node = service.drain_node(db=db, clock=clock, node_id=node_id)
    assert node.state == "draining"
    assert node.drain_requested_at is not None
    for to in ("releasing", "wiping", "available"):
        node = service.transition_node(db=db, clock=clock, node_id=node_id, to=to)
    assert node.state == "cordoned"
    assert node.drain_requested_at is None
    with pytest.raises(IllegalTransition):
        service.transition_node(db=db, clock=clock, node_id=node_id, to="in_use")
    node = service.retire_node(db=db, clock=clock, node_id=node_id)
    assert node.state == "retired"
    events = service.list_node_events(db=db, node_id=node_id, limit=100, after=None).items
    assert [e.to_state for e in events][-3:] == ["wiping", "cordoned", "retired"]
    for prev, event in itertools.pairwise(events):  # every transition is on record, in order
        assert event.from_state == prev.to_state
    assert events[1].actor == "ops"
    assert events[1].reason == "bad cable"


def test_retire_refused_while_in_use(db: Database, clock: VirtualClock) -> None:
    node_id = _one(db, clock)
    for to in ("allocated", "provisioning", "in_use"):
        service.transition_node(db=db, clock=clock, node_id=node_id, to=to)
    with pytest.raises(IllegalTransition) as exc:
        service.retire_node(db=db, clock=clock, node_id=node_id)
    assert exc.value.details["allowed"] == ["draining", "failed", "releasing"]


def test_failing_health_check_fails_the_node(db: Database, clock: VirtualClock) -> None:
    node_id = _one(db, clock)
    node = service.report_health(
        db=db,
        clock=clock,
        node_id=node_id,
        checks=[
            CheckResult("dcgm", CheckStatus.PASS),
            CheckResult("ib", CheckStatus.WARN, "flapping"),
        ],
    )
    assert node.health == "warning"
    assert node.state == "available"
    node = service.report_health(
        db=db,
        clock=clock,
        node_id=node_id,
        checks=[CheckResult("dcgm", CheckStatus.FAIL, "XID 79")],
    )
    assert node.health == "failed"
    assert node.state == "failed"
    assert "XID 79" in (node.state_reason or "")
    assert _ids(db, health="failed") == ["special-01"]
    with pytest.raises(IllegalTransition):
        service.transition_node(db=db, clock=clock, node_id=node_id, to="available")
    service.transition_node(db=db, clock=clock, node_id=node_id, to="repair")
    node = service.transition_node(db=db, clock=clock, node_id=node_id, to="burn_in")
    assert node.state == "burn_in"


def test_summary(db: Database, clock: VirtualClock) -> None:
    node_id = _one(db, clock)
    service.cordon_node(db=db, clock=clock, node_id=node_id)
    lines = service.fleet_summary(db=db)
    assert {(x.state, x.nodes, x.gpus) for x in lines} == {
        ("available", 16, 128),
        ("cordoned", 1, 8),
    }
    by_rack = service.fleet_summary(db=db, group_by="rack")
    assert sum(x.nodes for x in by_rack) == 17
    assert len({x.domain for x in by_rack}) == 5
    with pytest.raises(ValidationFailed):
        service.fleet_summary(db=db, group_by="row")


def test_summary_by_health_splits_each_state_by_the_nodes_health(
    db: Database, clock: VirtualClock
) -> None:
    node_id = _one(db, clock)
    service.report_health(
        db=db, clock=clock, node_id=node_id, checks=[CheckResult("ib", CheckStatus.WARN, "flap")]
    )
    lines = service.fleet_summary(db=db, by_health=True)
    assert {(x.state, x.health, x.nodes) for x in lines} == {
        ("available", "healthy", 16),
        ("available", "warning", 1),
    }
    # Without it, health is not a dimension (one line per state).
    assert [(x.state, x.health, x.nodes) for x in service.fleet_summary(db=db)] == [
        ("available", None, 17)
    ]
    by_rack = service.fleet_summary(db=db, group_by="rack", by_health=True)
    assert sum(x.nodes for x in by_rack) == 17
    warned = [x for x in by_rack if x.health == "warning"]
    assert [(x.nodes, x.domain is not None) for x in warned] == [(1, True)]


CUSTOM = """\
levels: [region, zone, hall, pod]
templates:
  b200: {gpu_model: B200, gpu_count: 8, vcpus: 224, ram_gib: 4096, nvme_gib: 30720}
sites:
  - region: eu-north-1
    zone: eu-north-1a
    nodes:
      - {hostname: b200-001, template: b200, topology: {hall: hall-a, pod: pod-1}}
      - {hostname: b200-002, template: b200, topology: {hall: hall-a, pod: pod-2}}
      - {hostname: b200-003, template: b200, topology: {hall: hall-b, pod: pod-3}}
"""


def test_custom_levels_are_the_fleets_filters(db: Database, clock: VirtualClock) -> None:
    _import(db, clock, CUSTOM)
    assert service.fleet_levels(db=db) == ["region", "zone", "hall", "pod"]
    assert _ids(db, domains={"hall": "hall-a"}) == ["b200-001", "b200-002"]
    with pytest.raises(ValidationFailed) as exc:
        _ids(db, domains={"rack": "r1"})
    assert "hall, pod" in exc.value.message
    lines = service.fleet_summary(db=db, group_by="hall")
    assert {(x.domain, x.gpus) for x in lines} == {("hall-a", 16), ("hall-b", 8)}
    # Another spec with other levels would mix two topologies: refused.
    with pytest.raises(Conflict, match="levels"):
        _import(db, clock)
    assert service.count_nodes(db=db) == 3
