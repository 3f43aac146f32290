"""`neocloud sim cluster`: the real compute service on a virtual clock, deterministic."""

from __future__ import annotations

import io
import itertools
import json
from decimal import Decimal

import pytest

from neocloud.kernel.errors import ValidationFailed
from neocloud.sim.arrivals import load_arrivals
from neocloud.sim.cluster import LLAMA3_RATE, SimConfig, run


def test_simulation_is_deterministic_and_reports_every_figure() -> None:
    cfg = SimConfig(
        days=0.5, fleet_gpus=128, arrivals_per_hour=8, failure_rate=400 * LLAMA3_RATE, seed=3
    )
    first = run(cfg)
    assert first == run(cfg)
    assert 0 < first.allocation_ratio <= 1
    assert first.node_failures > 0
    assert sum(c["requests"] for c in first.classes.values()) > 0
    assert all(0 <= c["admitted_share"] <= 1 for c in first.classes.values())
    assert round(LLAMA3_RATE, 2) == 3.79


def _write(tmp_path, name: str, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_arrivals_from_a_csv_file_queue_and_bill(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 16 nodes: a 16-node cluster fills the fleet for 2 h; an 8-GPU instance that waits gets
    # the first node after it; one that does not wait fails at once.
    path = _write(
        tmp_path,
        "arrivals.csv",
        "at_s,instance_type,node_count,gpu_model,class,duration_s,max_wait_s\n"
        "0,,16,H100,on_demand,7200,\n"
        "60,8xH100,,,spot,3600,10800\n"
        "120,8xH100,,,on_demand,3600,\n",
    )
    report = run(SimConfig(days=0.5, fleet_gpus=128, failure_rate=0, arrivals=str(path)))
    assert report.classes["16 nodes"]["admitted_share"] == 1.0
    waited = report.classes["8 GPUs"]
    assert (waited["requests"], waited["admitted_share"], waited["no_capacity"]) == (2, 0.5, 1)
    assert waited["mean_time_to_running_s"] == pytest.approx(7200 - 60, abs=5)
    bill = report.billing["classes"]
    # 16 nodes x 8 GPUs x 2 h on demand; 8 GPUs x 1 h spot
    assert bill["on_demand"]["gpu_hours_billed"] == pytest.approx(256, abs=0.1)
    assert bill["spot"]["gpu_hours_billed"] == pytest.approx(8, abs=0.1)
    assert bill["on_demand"]["gpu_hours_on_failed_nodes"] == 0
    assert Decimal(report.billing["total"]) == sum(Decimal(c["amount"]) for c in bill.values())


def test_jsonl_arrivals_match_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [
        {"at_s": 0, "instance_type": "1xH100", "duration_s": 600},
        {"at_s": 30, "node_count": 2, "gpu_model": "H100", "class": "spot", "duration_s": 900},
    ]
    jsonl = _write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    csv_path = _write(
        tmp_path,
        "a.csv",
        "at_s,instance_type,node_count,gpu_model,class,duration_s\n"
        "0,1xH100,,,,600\n30,,2,H100,spot,900\n",
    )
    assert load_arrivals(jsonl) == load_arrivals(csv_path)
    a = load_arrivals(jsonl)
    assert [(x.kind, x.size, x.cls, x.label) for x in a] == [
        ("instance", 1, "on_demand", "1 GPU"),
        ("cluster", 2, "spot", "2 nodes"),
    ]


@pytest.mark.parametrize(
    ("row", "param"),
    [
        ('{"instance_type": "8xH100", "duration_s": 60}', "at_s"),
        ('{"at_s": -1, "instance_type": "8xH100", "duration_s": 60}', "at_s"),
        ('{"at_s": 0, "instance_type": "9xH100", "duration_s": 60}', "instance_type"),
        ('{"at_s": 0, "node_count": -2, "duration_s": 60}', "node_count"),
        (
            '{"at_s": 0, "instance_type": "8xH100", "node_count": 2, "duration_s": 6}',
            "instance_type",
        ),
        ('{"at_s": 0, "instance_type": "8xH100", "duration_s": 0}', "duration_s"),
        ('{"at_s": 0, "instance_type": "8xH100", "duration_s": 9, "class": "x"}', "class"),
        ('{"at_s": 0, "instance_type": "8xH100", "duration_s": 9, "max_wait_s": 0}', "max_wait_s"),
        ('{"at_s": 0, "instance_type": "8xH100", "duration_s": 9, "gpus": 3}', "gpus"),
    ],
)
def test_bad_arrival_rows_name_the_line_and_field(tmp_path, row: str, param: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(
        tmp_path, "bad.jsonl", '{"at_s": 0, "instance_type": "1xH100", "duration_s": 5}\n' + row
    )
    with pytest.raises(ValidationFailed) as info:
        load_arrivals(path)
    assert (info.value.code, info.value.param) == ("invalid_arrival", param)
    assert "line 2" in info.value.message


def _sim_cli():  # type: ignore[no-untyped-def]
    from neocloud.cli.sim import sim_app

    return sim_app


def test_cli_reads_an_arrivals_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    app = _sim_cli()
    path = _write(tmp_path, "a.csv", "at_s,instance_type,duration_s\n0,8xH100,3600\n")
    result = CliRunner().invoke(
        app, ["cluster", "--days", "0.1", "--fleet-gpus", "64", "--arrivals", str(path),
              "--failure-rate", "0", "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["billing"]["classes"]["on_demand"]["gpu_hours_billed"] == pytest.approx(8.0)
    bad = _write(tmp_path, "b.csv", "at_s,instance_type,duration_s\n0,3xH100,3600\n")
    result = CliRunner().invoke(app, ["cluster", "--arrivals", str(bad)])
    assert result.exit_code == 2
    assert "line 2" in result.output
    result = CliRunner().invoke(app, ["cluster", "--help"])
    assert "duration_s" in result.output


def test_progress_is_told_the_simulated_time_at_most_once_an_hour() -> None:
    calls: list[tuple[float, float]] = []
    cfg = SimConfig(days=0.25, fleet_gpus=16, arrivals_per_hour=4, failure_rate=0, seed=1)
    report = run(cfg, progress=lambda done, total: calls.append((done, total)))
    assert report == run(cfg)  # watching changes nothing
    total = 0.25 * 86400
    assert calls[-1] == (total, total)
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert 3 <= len(calls) <= 6 + 1  # 6 simulated hours: one call an hour at most, then the end
    assert all(b - a >= 3600 for a, b in itertools.pairwise(done[:-1]))


def test_cli_prints_the_settings_it_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from neocloud.cli import output

    monkeypatch.setattr(output.out, "width", 240)
    args = ["cluster", "--days", "0.1", "--fleet-gpus", "64", "--failure-rate", "2.5"]
    result = CliRunner().invoke(_sim_cli(), [*args, "--seed", "7", "--arrivals-per-hour", "4"])
    assert result.exit_code == 0, result.output
    settings = next(line for line in result.output.splitlines() if line.startswith("settings"))
    assert "days 0.1" in settings
    assert "fleet 64 H100 GPUs" in settings
    assert "failure rate 2.5 per 1,000 node-days" in settings
    assert "seed 7" in settings
    assert "arrivals synthetic, 4 per hour" in settings
    result = CliRunner().invoke(_sim_cli(), ["cluster", "--days", "0.1", "--fleet-gpus", "64"])
    assert "failure rate 3.79 per 1,000 node-days (Llama 3's)" in result.output


def test_cli_json_is_the_report_alone_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from neocloud.cli import sim as sim_cli

    screen = io.StringIO()  # a terminal: the bar draws there when it is drawn at all
    monkeypatch.setattr(
        sim_cli, "out", Console(file=screen, force_terminal=True, color_system=None, width=200)
    )
    monkeypatch.setattr(sim_cli, "stdout_is_terminal", lambda: True)
    args = ["cluster", "--days", "0.1", "--fleet-gpus", "64", "--seed", "3"]
    result = CliRunner().invoke(_sim_cli(), [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)  # nothing but the JSON object: no bar, no settings line
    assert (report["config"]["seed"], report["config"]["days"]) == (3, 0.1)
    assert screen.getvalue() == ""
    # Without --json, the same terminal shows the bar, then the settings with the result.
    result = CliRunner().invoke(_sim_cli(), args)
    assert result.exit_code == 0, result.output
    assert "simulating" in screen.getvalue()
    assert "day 0.1 of 0.1" in screen.getvalue()
    assert "seed 3" in screen.getvalue()
    help_text = CliRunner().invoke(_sim_cli(), ["cluster", "--help"]).output
    assert "API" not in help_text


def test_reservations_are_bought_through_offerings_and_counted() -> None:
    cfg = SimConfig(
        days=2, fleet_gpus=128, arrivals_per_hour=1, failure_rate=0, seed=2,
        reservations_per_day=6,
    )  # fmt: skip
    report = run(cfg)
    r = report.reservations
    assert r["requests"] > 0
    assert r["sold"] + r["declined"] + r["no_capacity"] == r["requests"]
    assert r["declined"] == 0  # fcfs never declines
    assert r["sold"] > 0
    assert r["no_capacity"] > 0  # 6 a day of 1-16 nodes for days on 16 nodes: some cannot fit
    assert r["turned_away_share"] == round(r["no_capacity"] / r["requests"], 4)
    # the block sold starts after the run (booked days ahead): nothing of it is counted yet
    assert (r["gpu_hours_sold_in_run"], r["amount_in_run"]) == (0.0, 0.0)
    assert report.sold_ratio == report.allocation_ratio
    assert r["gpu_hours_asked"] == 130_176  # 12 blocks of 1-16 nodes for 1-14 days
