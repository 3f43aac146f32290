"""CLI for operator economics: ``neocloud econ run|stress|live``.

``run`` and ``stress`` compute locally with the pure engine (no server needed: a scenario is a
file); ``live`` asks the API, which reads the platform's fleet. Files are read and charts are
written here, never in ``neocloud.economics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from neocloud.cli.output import err, fail, out, print_json, when
from neocloud.cli.state import STATE
from neocloud.client import ApiError
from neocloud.economics import deep_merge, load_yaml, parse_scenario, report, stress_report
from neocloud.economics.report import tornado_report
from neocloud.economics.scenario import Periods, Scenario
from neocloud.economics.stress import STRESSES
from neocloud.kernel.errors import NeocloudError

econ_app = typer.Typer(
    help="Operator economics: P&L, debt cover, stress tests (run, stress, live).",
    no_args_is_help=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print the report as JSON")]
Charts = Annotated[
    Path | None,
    typer.Option("--charts", help="Write charts (P&L, cover, tornado) into this folder"),
]
Formats = Annotated[
    list[str] | None, typer.Option("--format", help="Chart format: png, svg (repeatable)")
]
StressOpt = Annotated[
    list[str] | None,
    typer.Option("--stress", help=f"Apply a built-in stress ({', '.join(STRESSES)}); repeatable"),
]
MAX_BASE_DEPTH = 8


def read_scenario_file(path: Path, *, depth: int = 0) -> dict[str, Any]:
    """A scenario file as a mapping; ``base: other.yaml`` (relative to the file) is read first
    and this file's keys are merged over it (mappings key by key, lists replaced)."""
    if depth > MAX_BASE_DEPTH:
        raise typer.BadParameter(f"{path}: more than {MAX_BASE_DEPTH} nested base files")
    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    data = load_yaml(text, source=str(path))
    base = data.pop("base", None)
    if base is None:
        return data
    return deep_merge(read_scenario_file(path.parent / str(base), depth=depth + 1), data)


def _load(path: Path, *, monthly: bool = False) -> Scenario:
    data = read_scenario_file(path)
    if monthly:
        data["periods"] = Periods.MONTHLY.value
    return parse_scenario(data)


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _years(value: float | dict[str, float]) -> str:
    """``6 y``, or per cohort ``h100-2026 6 y, b200-2027 5 y``."""
    if isinstance(value, dict):
        return ", ".join(f"{name} {years:g} y" for name, years in value.items())
    return f"{value:g} y"


def print_report(rep: dict[str, Any]) -> None:
    a = rep["assumptions"]
    out.print(f"[bold]{rep['scenario']}[/bold]  {rep.get('description') or ''}")
    if rep.get("stresses_applied"):
        out.print(f"stresses applied: {', '.join(rep['stresses_applied'])}")
    out.print(
        f"{a['gpus']:,} GPUs on {a['nodes']:,} nodes; capex {_money(a['capex'])} {a['currency']} "
        f"({', '.join(f'{k} {_money(v)}/node' for k, v in a['capex_per_node'].items())}); "
        f"debt {_money(a['debt'])} ({_pct(a['debt_share_of_capex'])}); "
        f"book life {_years(a['book_life_years'])}, "
        f"economic life {_years(a['economic_life_years'])}"
    )
    rows = rep["annual"]
    table = Table(
        title=f"P&L, cash flow and cover by year ({a['currency']})",
        header_style="bold",
        show_edge=False,
    )
    table.add_column("")
    for r in rows:
        table.add_column(f"Y{r['year']}", justify="right")
    money_lines = [
        ("Revenue", "revenue"),
        ("Power", "power"),
        ("Colocation", "colocation"),
        ("Other opex", "other_opex"),
        ("EBITDA", "ebitda"),
        ("Depreciation", "depreciation"),
        ("EBIT", "ebit"),
        ("Interest", "interest"),
        ("Tax", "tax"),
        ("Net income", "net_income"),
        ("CFADS", "cfads"),
        ("Debt service", "debt_service"),
        ("Capex", "capex"),
        ("Project cash flow", "project_cash_flow"),
        ("Equity cash flow", "equity_cash_flow"),
        ("Debt (year end)", "debt_balance"),
    ]
    if any(r.get("deferred_tax") or r.get("deferred_tax_liability") for r in rows):
        at = money_lines.index(("Tax", "tax"))
        money_lines[at : at + 1] = [
            ("Current tax", "current_tax"),
            ("Deferred tax", "deferred_tax"),
            ("Tax (P&L)", "tax"),
        ]
        money_lines.append(("Deferred tax (year end)", "deferred_tax_liability"))
    for label, key in money_lines:
        table.add_row(label, *[_money(r.get(key)) for r in rows])
    for label, key in (
        ("DSCR", "dscr"),
        ("EBITDA / interest", "ebitda_interest_cover"),
        ("EBIT / interest", "ebit_interest_cover"),
    ):
        table.add_row(label, *[_times(r[key]) for r in rows])
    out.print(table)
    if rep.get("monthly"):
        _print_monthly(rep["monthly"])
    _print_kpis(rep["kpis"])
    _print_concentration(rep["concentration"])
    _print_what_if(rep.get("what_if") or [])
    for note in rep.get("notes", []):
        out.print(f"[dim]note: {note}[/dim]")


def _print_monthly(rows: list[dict[str, Any]]) -> None:
    lines = [
        ("revenue", "revenue"),
        ("EBITDA", "ebitda"),
        ("EBIT", "ebit"),
        ("interest", "interest"),
        ("net income", "net_income"),
        ("CFADS", "cfads"),
        ("debt service", "debt_service"),
        ("debt", "debt_balance"),
    ]
    table = Table(title="By month", header_style="bold", show_edge=False)
    table.add_column("month", justify="right")
    for header, _ in lines:
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(str(r["month"]), *[_money(r[key]) for _, key in lines])
    out.print(table)


def _print_kpis(k: dict[str, Any]) -> None:
    table = Table(title="KPIs", show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    be = k.get("breakeven_utilization_year1") or {}
    for label, value in (
        ("min DSCR", _times(k["min_dscr"])),
        ("min EBITDA / interest", _times(k["min_ebitda_interest_cover"])),
        ("min EBIT / interest", _times(k["min_ebit_interest_cover"])),
        ("project IRR (annual; monthly flows)", f"{_pct(k['project_irr'])}; "
         f"{_pct(k['project_irr_monthly_flows'])}"),
        ("equity IRR (annual; monthly flows)", f"{_pct(k['equity_irr'])}; "
         f"{_pct(k['equity_irr_monthly_flows'])}"),
        ("project NPV; equity NPV", f"{_money(k['npv'])}; {_money(k['equity_npv'])}"),
        ("payback", "-" if k["payback_years"] is None else f"{k['payback_years']:.2f} years"),
        ("breakeven utilization, year 1 (cash; full cost; DSCR 1)",
         f"{_pct(be.get('cash'))}; {_pct(be.get('full_cost'))}; {_pct(be.get('debt_service'))}"),
        ("breakeven price at NPV 0", "-" if k.get("breakeven_price_per_gpu_hour") is None
         else f"{k['breakeven_price_per_gpu_hour']:.4f} per GPU-hour"),
    ):  # fmt: skip
        table.add_row(label, value)
    t = k.get("terminal_value") or {}
    if t.get("method", "none") != "none":
        table.add_row(
            f"terminal value ({t['method']}): value; tax; present value; share of NPV",
            f"{_money(t['value'])}; {_money(t['tax'])}; {_money(t['present_value'])}; "
            f"{_pct(t['share_of_npv'])}",
        )
        table.add_row(
            "without it: project IRR; equity IRR; NPV",
            f"{_pct(t['project_irr_without'])}; {_pct(t['equity_irr_without'])}; "
            f"{_money(t['npv_without'])}",
        )
    out.print(table)


def _print_concentration(c: dict[str, Any]) -> None:
    if not c["customers"]:
        out.print("concentration: no named customers")
        return
    shares = ", ".join(f"{k} {_pct(v)}" for k, v in c["customers"].items())
    out.print(
        f"concentration ({c['basis']}): {shares}; top-1 {_pct(c['top1'])}, "
        f"top-2 {_pct(c['top2'])}, HHI {c['hhi']:,.0f}"
    )
    lost = c.get("without_largest")
    if lost:
        out.print(
            f"  {lost['scenario']}: year-1 EBITDA {_money(lost['ebitda_year1'])}, "
            f"min DSCR {_times(lost['min_dscr'])}, project IRR {_pct(lost['project_irr'])}"
        )


def _print_what_if(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title="What if (built-in stresses)", header_style="bold", show_edge=False)
    for header in (
        "scenario",
        "Y1 revenue",
        "Y1 EBITDA",
        "Y1 EBIT",
        "years EBIT<0",
        "min DSCR",
        "min EBIT/int",
        "project IRR",
        "equity IRR",
        "NPV",
    ):
        table.add_column(header, justify="left" if header == "scenario" else "right")
    for r in rows:
        table.add_row(
            r["scenario"],
            _money(r["revenue_year1"]),
            _money(r["ebitda_year1"]),
            _money(r["ebit_year1"]),
            str(r["years_ebit_negative"]),
            _times(r["min_dscr"]),
            _times(r["min_ebit_interest_cover"]),
            _pct(r["project_irr"]),
            _pct(r["equity_irr"]),
            _money(r["npv"]),
        )
    out.print(table)


def print_stress(rep: dict[str, Any]) -> None:
    _print_what_if(rep["stresses"])
    t = rep["tornado"]
    table = Table(
        title=f"Tornado on NPV (base {_money(t['base_npv'])})", header_style="bold", show_edge=False
    )
    for header in (
        "input",
        "low",
        "NPV low",
        "high",
        "NPV high",
        "equity NPV low",
        "equity NPV high",
        "DSCR low",
        "DSCR high",
    ):
        table.add_column(header, justify="left" if header in ("input", "low", "high") else "right")
    for b in t["bars"]:
        table.add_row(
            b["input"],
            b["low"],
            _money(b["npv_low"]),
            b["high"],
            _money(b["npv_high"]),
            _money(b["equity_npv_low"]),
            _money(b["equity_npv_high"]),
            _times(b["min_dscr_low"]),
            _times(b["min_dscr_high"]),
        )
    out.print(table)
    mc = rep["monte_carlo"]
    out.print(
        f"Monte Carlo ({mc['paths']:,} paths, seed {mc['seed']}): "
        f"P(DSCR < 1 in any year) {_pct(mc['p_dscr_below_1'])}, "
        f"P(EBIT / interest < 1) {_pct(mc['p_ebit_interest_cover_below_1'])}, "
        f"P(either) {_pct(mc['p_either_below_1'])}, P(NPV < 0) {_pct(mc['p_npv_negative'])}"
    )
    out.print(
        f"  min DSCR p5/p50/p95: {', '.join(_times(v) for v in mc['min_dscr'].values())}; "
        f"NPV p5/p50/p95: {', '.join(_money(v) for v in mc['npv'].values())}"
    )
    out.print(f"[dim]  shocks: {mc['shocks']}[/dim]")


def _charts(target: Path | None, formats: list[str] | None, **reports: Any) -> None:
    if target is None:
        return
    from neocloud.cli.econ_charts import FORMATS, write_charts

    chosen = formats or ["png"]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise typer.BadParameter(f"unknown chart format {unknown[0]!r}; use png or svg")
    paths = write_charts(target, chosen, **reports)
    err.print(f"charts: {', '.join(str(p) for p in paths)}")


def _invalid(exc: NeocloudError, as_json: bool) -> typer.Exit:
    """A scenario the engine refused, shown as an API error would be (exit 2)."""
    fail(ApiError(400, exc.type, exc.code, exc.message, exc.param, exc.details), as_json=as_json)
    return typer.Exit(2)


@econ_app.command("run")
def run(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file")],
    as_json: Json = False,
    charts: Charts = Path("econ-charts"),
    no_charts: Annotated[bool, typer.Option("--no-charts", help="Write no charts")] = False,
    chart_format: Formats = None,
    stress: StressOpt = None,
    monthly: Annotated[bool, typer.Option("--monthly", help="Add the monthly rows")] = False,
) -> None:
    """Project a scenario: P&L, cash flow, debt, cover ratios, returns, breakevens; print the
    report and write its charts (P&L, cover, tornado)."""
    try:
        s = _load(scenario, monthly=monthly)
        rep = report(s, stresses=stress or [])
        tornado = None if no_charts else {"scenario": s.name, "tornado": tornado_report(s)}
    except NeocloudError as exc:
        raise _invalid(exc, as_json) from None
    if as_json:
        print_json(rep)
    else:
        print_report(rep)
    _charts(None if no_charts else charts, chart_format, report=rep, stress=tornado)


@econ_app.command("stress")
def stress_cmd(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file")],
    paths: Annotated[
        int, typer.Option("--paths", min=1, max=1_000_000, help="Monte Carlo paths")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Monte Carlo seed")] = 0,
    pct: Annotated[
        float, typer.Option("--pct", min=0.01, max=0.99, help="Tornado swing of each input")
    ] = 0.2,
    as_json: Json = False,
    charts: Charts = None,
    chart_format: Formats = None,
) -> None:
    """Every built-in stress beside the base case, a tornado (each input +-20%, lives +-1
    year) and a seeded Monte Carlo of DSCR and interest cover falling below 1."""
    try:
        rep = stress_report(_load(scenario), paths=paths, seed=seed, pct=pct)
    except NeocloudError as exc:
        raise _invalid(exc, as_json) from None
    if as_json:
        print_json(rep)
    else:
        print_stress(rep)
    _charts(charts, chart_format, stress=rep)


@econ_app.command("live")
def live(
    utilization: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="Override (default: measured from allocations)"),
    ] = None,
    window_days: Annotated[
        int, typer.Option("--window-days", min=1, max=365, help="Trailing window for usage")
    ] = 30,
    forward_years: Annotated[
        int, typer.Option("--forward-years", min=1, max=30, help="Years to project")
    ] = 5,
    price: Annotated[
        float | None,
        typer.Option(help="$/GPU-hour for every model (default: realized from billing)"),
    ] = None,
    ltv: Annotated[float, typer.Option(min=0, max=1, help="Assumed debt share")] = 0.7,
    rate: Annotated[float, typer.Option(min=0, max=1, help="Assumed interest rate")] = 0.11,
    stress: StressOpt = None,
    as_json: Json = False,
    charts: Charts = None,
    chart_format: Formats = None,
) -> None:
    """Project the platform's own fleet forward (operators): cohorts from the nodes' capex
    and in-service dates, utilization from allocation intervals over a trailing window;
    prices realized, customers' shares of revenue, backlog and concentration from billing."""
    try:
        rep = STATE.client().economics.live(
            utilization=utilization,
            window_days=window_days,
            forward_years=forward_years,
            price=price,
            ltv=ltv,
            rate=rate,
            stresses=stress,
        )
    except ApiError as exc:
        raise fail(exc, as_json=as_json) from None
    if as_json:
        print_json(rep)
    else:
        out.print(
            "[bold]live[/bold] as of "
            f"{when(rep['as_of'])}; sources: "
            + "; ".join(f"{k}: {v}" for k, v in rep["sources"].items())
        )
        print_report(rep)
    _charts(charts, chart_format, report=rep)
