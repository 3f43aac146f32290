"""The economics routes over HTTP (both backends): projections, stress, live, and who may ask."""

from __future__ import annotations

import pytest

from neocloud.client import ApiError, Client
from neocloud.economics import load_yaml

from .helpers import EXAMPLE, FLEET, tenant_client


def test_projection_reports_the_example(admin: Client) -> None:
    scenario = load_yaml(EXAMPLE.read_text())
    report = admin.economics.project(scenario)  # type: ignore[attr-defined]
    assert report["object"] == "economics.report"
    year1 = report["annual"][0]
    assert year1["ebitda"] == 10_858_598.40
    assert year1["ebit"] == 3_520_358.40
    short = admin.economics.project(scenario, stresses=["short_book_life"])  # type: ignore[attr-defined]
    assert short["annual"][0]["ebit"] == -148_761.60


def test_a_bad_scenario_names_its_field(admin: Client) -> None:
    scenario = load_yaml(EXAMPLE.read_text())
    scenario["cohorts"][0]["nodes"] = -1
    with pytest.raises(ApiError) as exc:
        admin.economics.project(scenario)  # type: ignore[attr-defined]
    assert exc.value.status == 422
    assert exc.value.param == "scenario.cohorts.0.nodes"
    with pytest.raises(ApiError) as exc:
        admin.economics.project(load_yaml(EXAMPLE.read_text()), stresses=["meteor"])  # type: ignore[attr-defined]
    assert exc.value.status == 400
    assert exc.value.param == "stress"


def test_stress_runs_a_small_monte_carlo(admin: Client) -> None:
    result = admin.economics.stress(load_yaml(EXAMPLE.read_text()), paths=200, seed=7)  # type: ignore[attr-defined]
    names = [row["scenario"] for row in result["stresses"]]
    assert names[0] == "base"
    assert "short_book_life" in names
    assert 0.0 <= result["monte_carlo"]["p_dscr_below_1"] <= 1.0
    assert result["monte_carlo"]["paths"] == 200


def test_live_projects_the_fleet_and_says_what_is_assumed(admin: Client) -> None:
    admin.fleet.import_spec(FLEET)  # type: ignore[attr-defined]
    live = admin.economics.live(utilization=0.6)  # type: ignore[attr-defined]
    assert live["object"] == "economics.live"
    assert live["sources"]["utilization"] == "assumed"
    assert live["assumptions"]["gpus"] == 4 * 8
    assert live["assumptions"]["capex"] == 4 * 250_000
    assert live["annual"][0]["revenue"] > 0
    assert any("assumed" in note for note in live["notes"])


def test_live_without_capex_is_a_clear_error(admin: Client) -> None:
    with pytest.raises(ApiError) as exc:
        admin.economics.live()  # type: ignore[attr-defined]
    assert exc.value.code == "no_capex"


def test_tenants_get_403(admin: Client) -> None:
    tenant = tenant_client(admin, "acme")
    with pytest.raises(ApiError) as exc:
        tenant.economics.live()  # type: ignore[attr-defined]
    assert exc.value.status == 403
