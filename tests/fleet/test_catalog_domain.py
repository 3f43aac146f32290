"""Unit tests: the catalog and the node lifecycle (pure, no database)."""

from __future__ import annotations

import itertools

import pytest

from neocloud.fleet import domain
from neocloud.fleet.catalog import CATALOG, find_gpu_model, resolve_gpu_model
from neocloud.fleet.domain import TRANSITIONS, Health, Lifecycle, NodeState
from neocloud.kernel.errors import IllegalTransition, ValidationFailed

S = NodeState


def test_catalog_has_the_six_models_with_figures() -> None:
    ids = {m.id for m in CATALOG}
    assert {
        "A100-SXM-80GB",
        "H100-SXM-80GB",
        "H200-SXM-141GB",
        "B200-SXM-180GB",
        "GB200-NVL72",
        "L40S-48GB",
    } <= ids
    for m in CATALOG:
        assert m.memory_gb > 0
        assert m.tdp_w > 0
        assert m.bf16_tflops > 0
        assert m.hbm_tbps > 0
        assert m.nvlink_domain >= 1
        assert m.list_price_per_gpu_hour.amount > 0
    h100 = find_gpu_model("H100-SXM-80GB")
    assert h100 is not None
    assert (h100.memory_gb, h100.tdp_w, h100.nvlink_domain) == (80, 700, 8)
    assert str(h100.bf16_tflops) == "989"
    assert str(h100.hbm_tbps) == "3.35"
    gb200 = find_gpu_model("GB200")
    assert gb200 is not None
    assert gb200.nvlink_domain == 72
    assert gb200.max_gpus_per_node == 4
    l40s = find_gpu_model("l40s")
    assert l40s is not None
    assert l40s.nvlink_domain == 1


@pytest.mark.parametrize(
    ("alias", "model_id"),
    [
        ("H100", "H100-SXM-80GB"),
        ("h200", "H200-SXM-141GB"),
        ("b200", "B200-SXM-180GB"),
        ("a100-sxm-80gb", "A100-SXM-80GB"),
    ],
)
def test_aliases_are_case_insensitive(alias: str, model_id: str) -> None:
    assert resolve_gpu_model(alias).id == model_id


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ValidationFailed, match="H100-SXM-80GB") as exc:
        resolve_gpu_model("V100")
    assert exc.value.param == "gpu_model"


def test_table_covers_every_state_and_retired_is_terminal() -> None:
    assert set(TRANSITIONS) == set(NodeState)
    assert TRANSITIONS[S.RETIRED] == frozenset()
    for state, targets in TRANSITIONS.items():
        assert state not in targets
        if state not in (S.RETIRED, S.FAILED):
            assert S.FAILED in targets
    assert TRANSITIONS[S.FAILED] == {S.REPAIR, S.RETIRED}
    assert S.RETIRED not in TRANSITIONS[S.IN_USE]


def test_the_happy_path_of_one_tenant() -> None:
    path = [
        S.ENROLLED,
        S.BURN_IN,
        S.AVAILABLE,
        S.ALLOCATED,
        S.PROVISIONING,
        S.IN_USE,
        S.RELEASING,
        S.WIPING,
        S.AVAILABLE,
    ]
    for a, b in itertools.pairwise(path):
        assert domain.transition(a, b) == b


def test_illegal_transition_names_allowed_states() -> None:
    with pytest.raises(IllegalTransition) as exc:
        domain.transition(S.IN_USE, S.AVAILABLE)
    assert exc.value.details["allowed"] == ["draining", "failed", "releasing"]
    assert "draining, failed, releasing" in exc.value.message
    assert exc.value.status == 409


def test_cordon_idle_and_busy() -> None:
    lc, moves = domain.cordon(Lifecycle(S.AVAILABLE))
    assert lc.state == S.CORDONED
    assert lc.hold
    assert len(moves) == 1
    lc, _ = domain.cordon(Lifecycle(S.IN_USE))
    assert lc.state == S.DRAINING
    assert lc.hold
    assert lc.resume == S.IN_USE
    assert not lc.drain
    lc, _ = domain.settle(lc, S.RELEASING)
    lc, _ = domain.settle(lc, S.WIPING)
    lc, _ = domain.settle(lc, S.AVAILABLE)  # the compute context finishes the wipe
    assert lc.state == S.CORDONED
    lc, _ = domain.uncordon(lc)
    assert lc.state == S.AVAILABLE
    assert not lc.hold


def test_drain_marks_the_workload_and_uncordon_resumes() -> None:
    lc, _ = domain.cordon(Lifecycle(S.PROVISIONING), drain=True)
    assert lc.state == S.DRAINING
    assert lc.drain
    lc, _ = domain.uncordon(lc)
    assert lc.state == S.PROVISIONING
    assert not lc.drain
    assert not lc.hold


def test_retire_only_from_idle_states() -> None:
    with pytest.raises(IllegalTransition):
        domain.retire(Lifecycle(S.IN_USE))
    lc, _ = domain.retire(Lifecycle(S.FAILED))
    assert lc.state == S.RETIRED
    with pytest.raises(IllegalTransition):
        domain.cordon(lc)
    with pytest.raises(IllegalTransition):
        domain.uncordon(lc)
    assert domain.fail(lc) == (lc, [])


def test_health_is_the_worst_latest_check() -> None:
    assert domain.aggregate_health([]) == Health.HEALTHY
    assert domain.aggregate_health(["pass", "warn"]) == Health.WARNING
    assert domain.aggregate_health(["warn", "fail", "pass"]) == Health.FAILED
