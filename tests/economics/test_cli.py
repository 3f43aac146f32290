"""``neocloud econ run|stress|live`` through Typer's runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
    assert "book life h100-2026 6 y" in result.output  # not a Python dict
    assert "{" not in result.output
    assert "(USD)" in result.output  # the table says its currency


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
    result = runner.invoke(app, ["econ", "run", str(bad), "--no-charts", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert json.loads(result.stderr)["error"]["param"] == "tax_rate"


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


def _png_pixels(path: Path) -> Any:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 600
    assert height >= 300
    pixels = imread(str(path))
    assert pixels.shape[:2] == (height, width)
    return pixels


def test_run_writes_valid_png_and_svg_charts_with_content(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    import numpy as np

    charts = tmp_path / "charts"
    result = runner.invoke(
        app,
        [
            "econ",
            "run",
            str(EXAMPLE),
            "--charts",
            str(charts),
            "--format",
            "png",
            "--format",
            "svg",
        ],
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in charts.iterdir())
    assert names == [f"{c}.{f}" for c in ("cover", "pnl", "tornado") for f in ("png", "svg")]
    for chart in ("pnl", "cover", "tornado"):
        rgb = _png_pixels(charts / f"{chart}.png")[..., :3]
        colours = np.unique((rgb.reshape(-1, 3) * 255).round().astype(int), axis=0)
        assert len(colours) > 50, chart  # bars, lines, anti-aliased text: not a blank canvas
        inked = float((rgb.min(axis=2) < 0.9).mean())
        assert 0.02 < inked < 0.9, chart
        svg = (charts / f"{chart}.svg").read_text()
        root = ET.fromstring(svg)  # noqa: S314 (a file this test just wrote)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 30, chart
    pnl, cover, tornado = ((charts / f"{c}.svg").read_text() for c in ("pnl", "cover", "tornado"))
    for label in ("Revenue", "EBITDA", "EBIT", "Net income", "Debt (year end)"):
        assert f"<!-- {label} -->" in pnl  # matplotlib keeps each text as a comment
    for label in ("DSCR", "EBITDA / interest", "EBIT / interest"):
        assert f"<!-- {label} -->" in cover
    for label in ("price", "utilization", "capex", "book life", "Project NPV", "Equity NPV"):
        assert f"<!-- {label} -->" in tornado


def test_the_sofr_macrs_example_reports_tax_and_terminal_value() -> None:
    import numpy_financial as npf

    path = EXAMPLE.with_name("h100-1024-sofr-macrs.yaml")
    result = runner.invoke(app, ["econ", "run", str(path), "--json", "--no-charts"])
    assert result.exit_code == 0, result.output
    rep = json.loads(result.output)
    capex, debt = 44_029_440.0, 0.7 * 44_029_440.0
    y1, y2 = rep["annual"][0], rep["annual"][1]
    assert y1["interest"] == pytest.approx(debt * (0.043 + 0.065), abs=0.01)
    first = -npf.pmt(0.108, 5, debt)
    assert y1["debt_service"] == pytest.approx(first, abs=0.01)
    owed = debt - (first - 0.108 * debt)
    assert y2["debt_service"] == pytest.approx(-npf.pmt(0.101, 4, owed), abs=0.01)
    assert y1["current_tax"] == 0.0
    assert y1["deferred_tax"] == pytest.approx(0.21 * y1["ebt"], abs=0.01)
    terminal = rep["kpis"]["terminal_value"]
    assert terminal["value"] == pytest.approx(capex / 6, abs=0.01)
    assert terminal["tax"] == pytest.approx(0.21 * (capex / 6 - 0.0576 * capex), abs=0.01)
    assert rep["kpis"]["project_irr"] > terminal["project_irr_without"]
    text = runner.invoke(app, ["econ", "run", str(path), "--no-charts"]).output
    for label in ("Current tax", "Deferred tax", "terminal value (economic_life)"):
        assert label in text
