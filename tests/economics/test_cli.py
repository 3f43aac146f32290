"""``neocloud econ run|stress|live`` through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.econ import econ_app
from neocloud.cli.state import STATE
from neocloud.client import Client

from .helpers import EXAMPLE, FLEET

runner = CliRunner()
app = typer.Typer()
app.add_typer(econ_app, name="econ")


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.out, "width", 240)


def test_run_prints_the_report_and_writes_charts(tmp_path: Path) -> None:
    charts = tmp_path / "charts"
    result = runner.invoke(
        app, ["econ", "run", str(EXAMPLE), "--charts", str(charts), "--format", "svg"]
    )
    assert result.exit_code == 0, result.output
    assert "10,858,598.40" in result.output  # year-one EBITDA
    assert "-148,761.60" in result.output  # year-one EBIT with a 4-year book life
    assert "12.49%" in result.output  # project IRR
    assert sorted(p.name for p in charts.iterdir()) == ["cover.svg", "pnl.svg", "tornado.svg"]


def test_run_json_with_a_stress_and_a_base_file(tmp_path: Path) -> None:
    override = tmp_path / "four-years.yaml"
    override.write_text(
        f"base: {EXAMPLE}\nname: h100-four-years\nopex: {{power_price_per_kwh: 0.10}}\n"
    )
    result = runner.invoke(
        app, ["econ", "run", str(override), "--json", "--no-charts", "--stress", "short_book_life"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scenario"] == "h100-four-years"
    assert report["stresses_applied"] == ["short_book_life"]
    assert report["annual"][0]["power"] == pytest.approx(1_143_705.60 * 1.25, abs=0.01)
    assert report["annual"][0]["depreciation"] == 44_029_440 / 4


def test_run_names_a_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {EXAMPLE}\ntax_rate: 2\n")
    result = runner.invoke(app, ["econ", "run", str(bad), "--no-charts"])
    assert result.exit_code == 2
    assert "tax_rate" in result.output


def test_stress_prints_stresses_tornado_and_monte_carlo() -> None:
    result = runner.invoke(app, ["econ", "stress", str(EXAMPLE), "--paths", "300", "--seed", "1"])
    assert result.exit_code == 0, result.output
    for text in ("short_book_life", "Tornado", "Monte Carlo (300 paths, seed 1)"):
        assert text in result.output


def test_live_reads_the_platform(admin: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(STATE, "_client", admin)
    admin.fleet.import_spec(FLEET)  # type: ignore[attr-defined]
    result = runner.invoke(app, ["econ", "live", "--utilization", "0.5"])
    assert result.exit_code == 0, result.output
    assert "utilization: given" in result.output
    assert "32 GPUs" in result.output


def test_the_four_year_example_overrides_its_base() -> None:
    four = EXAMPLE.with_name("h100-1024-nebius-life.yaml")
    result = runner.invoke(app, ["econ", "run", str(four), "--json", "--no-charts"])
    assert result.exit_code == 0, result.output
    year1 = json.loads(result.output)["annual"][0]
    assert (year1["ebitda"], year1["ebit"]) == (10_858_598.40, -148_761.60)
