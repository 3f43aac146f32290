"""Charts of economics reports (P&L, cover ratios, tornado) as PNG or SVG files.

Drawn with matplotlib's object API on the Agg canvas: no pyplot, no global state, no display.
They take the report dicts the API returns, so ``econ run`` and ``econ live`` draw the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

FORMATS = ("png", "svg")


def _save(fig: Figure, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    FigureCanvasAgg(fig)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def _millions(value: float, _pos: float | None = None) -> str:
    return f"{value / 1e6:,.1f}M"


def pnl_chart(report: dict[str, Any], out_dir: Path, formats: Sequence[str]) -> list[Path]:
    rows = report["annual"]
    years = [r["year"] for r in rows]
    lines = [
        ("revenue", "Revenue"),
        ("ebitda", "EBITDA"),
        ("ebit", "EBIT"),
        ("net_income", "Net income"),
    ]
    fig = Figure(figsize=(9, 4.8))
    ax = fig.add_subplot()
    width = 0.8 / len(lines)
    for i, (key, label) in enumerate(lines):
        offsets = [y + (i - (len(lines) - 1) / 2) * width for y in years]
        ax.bar(offsets, [r[key] for r in rows], width, label=label)
    ax.plot(years, [r["debt_balance"] for r in rows], "k--", marker="o", label="Debt (year end)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.yaxis.set_major_formatter(_millions)
    ax.set_xticks(years)
    ax.set_xlabel("Year")
    ax.set_ylabel(report["assumptions"]["currency"])
    ax.set_title(f"P&L by year: {report['scenario']}")
    ax.legend(fontsize="small", ncols=3)
    return _save(fig, out_dir, "pnl", formats)


def cover_chart(report: dict[str, Any], out_dir: Path, formats: Sequence[str]) -> list[Path]:
    rows = report["annual"]
    years = [r["year"] for r in rows]
    fig = Figure(figsize=(9, 4.8))
    ax = fig.add_subplot()
    for key, label in (
        ("dscr", "DSCR"),
        ("ebitda_interest_cover", "EBITDA / interest"),
        ("ebit_interest_cover", "EBIT / interest"),
    ):
        points = [(y, r[key]) for y, r in zip(years, rows, strict=True) if r[key] is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.axhline(1.0, color="red", linewidth=1, linestyle=":", label="1.0x")
    ax.set_xticks(years)
    ax.set_xlabel("Year")
    ax.set_ylabel("times")
    ax.set_title(f"Debt cover: {report['scenario']}")
    ax.legend(fontsize="small")
    return _save(fig, out_dir, "cover", formats)


def _tornado_panel(ax: Any, bars: list[dict[str, Any]], base: float, key: str) -> None:
    for i, bar in enumerate(bars):
        for value, label, color, legend in (
            (bar[f"{key}_low"], bar["low"], "tab:blue", "input lowered"),
            (bar[f"{key}_high"], bar["high"], "tab:orange", "input raised"),
        ):
            ax.barh(i, value - base, left=base, color=color, alpha=0.8, label=legend)
            if abs(value - base) < 1e-6 * max(abs(base), 1.0):
                continue  # no swing (e.g. financing on project NPV): no label to pile up
            ax.annotate(
                label,
                (value, i),
                fontsize="x-small",
                va="center",
                ha="left" if value >= base else "right",
            )
    ax.axvline(base, color="black", linewidth=1)
    ax.xaxis.set_major_formatter(_millions)


def tornado_chart(stress: dict[str, Any], out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Project NPV (left) and equity NPV (right) with each input moved down and up: financing
    inputs (rate, leverage) move only the equity side."""
    tornado = stress["tornado"]
    bars = list(reversed(tornado["bars"]))  # widest at the top
    fig = Figure(figsize=(13, 0.45 * len(bars) + 1.5))
    project_ax, equity_ax = fig.subplots(1, 2, sharey=True)
    _tornado_panel(project_ax, bars, tornado["base_npv"], "npv")
    equity_base = tornado.get("base_equity_npv")
    if equity_base is None:  # an older report: centre on the bars' midpoint
        equity_base = 0.5 * (bars[0]["equity_npv_low"] + bars[0]["equity_npv_high"])
    _tornado_panel(equity_ax, bars, equity_base, "equity_npv")
    project_ax.set_yticks(range(len(bars)), [b["input"] for b in bars])
    project_ax.set_xlabel("Project NPV")
    equity_ax.set_xlabel("Equity NPV")
    fig.suptitle(f"Tornado (NPV): {stress['scenario']}")
    handles, labels = project_ax.get_legend_handles_labels()
    project_ax.legend(handles[:2], labels[:2], fontsize="small", loc="lower right")
    return _save(fig, out_dir, "tornado", formats)


def write_charts(
    out_dir: Path,
    formats: Sequence[str],
    *,
    report: dict[str, Any] | None = None,
    stress: dict[str, Any] | None = None,
) -> list[Path]:
    paths: list[Path] = []
    if report is not None:
        paths += pnl_chart(report, out_dir, formats)
        paths += cover_chart(report, out_dir, formats)
    if stress is not None:
        paths += tornado_chart(stress, out_dir, formats)
    return paths
