"""``neocloud studio usage``, ``studio limits get|set`` and ``studio budget get|set`` over the SDK
over the app; every change is checked through the API, not through the CLI's own output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli import studio as studio_cli
from neocloud.cli.state import STATE
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.studio.tables import StudioUsageRow

runner = CliRunner()
cli = typer.Typer()
for _name, _sub in studio_cli.APPS.items():
    cli.add_typer(_sub, name=_name)

pytestmark = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


@pytest.fixture
def http(app: FastAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as http:
        http.headers["Authorization"] = f"Bearer {admin_key}"
        monkeypatch.setattr(STATE, "_client", Client(api_key=admin_key, http=http, retries=0))
        monkeypatch.setattr(output.out, "width", 250)
        yield http


def _run(*args: str) -> str:
    result = runner.invoke(cli, ["studio", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _org(http: TestClient) -> str:
    return str(http.get("/api/v1/orgs").json()["data"][0]["id"])


def _key(http: TestClient) -> str:
    return str(http.get("/api/v1/keys").json()["data"][0]["id"])


def _log(db: Database, org: str, rows: list[tuple[datetime, str, str, int, int]]) -> None:
    with db.transaction() as s:
        for n, (at, model, key, tokens_in, tokens_out) in enumerate(rows):
            s.add(
                StudioUsageRow(
                    id=f"su_{n}",
                    request_id=f"req-{n}",
                    org_id=org,
                    key_id=key,
                    model=model,
                    endpoint="chat.completions",
                    prompt_tokens=tokens_in,
                    completion_tokens=tokens_out,
                    aborted=False,
                    created_at=at,
                )
            )


MAR = datetime(2026, 3, 1, tzinfo=UTC)


def test_usage_table_and_json(
    http: TestClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = _org(http)
    _log(
        db,
        org,
        [
            (MAR + timedelta(hours=1), "acme/llama", "key_a", 100, 7),
            (MAR + timedelta(hours=2), "acme/llama", "key_a", 20, 3),
            (MAR + timedelta(hours=3), "acme/qwen", "key_b", 5, 1),
            (MAR - timedelta(seconds=1), "acme/llama", "key_a", 9999, 9999),  # February
        ],
    )
    table = _run("usage", "--since", "2026-03-01", "--until", "2026-03-02", "--by", "model,key")
    rows = [[c.strip() for c in line.split("│")] for line in table.splitlines() if "acme/" in line]
    lines = {row[1]: row for row in rows}
    assert lines["acme/llama"] == [
        "2026-03-01T00:00:00Z",
        "acme/llama",
        "key_a",
        "120",
        "10",
        "2",
        "0",
    ]
    assert lines["acme/qwen"][1:] == ["acme/qwen", "key_b", "5", "1", "1", "0"]
    assert "TOTAL  125 in / 11 out tokens, 3 requests (0 aborted)" in table

    as_json = json.loads(
        _run(
            "usage",
            "--since",
            "2026-03-01",
            "--until",
            "2026-03-01T04:00:00Z",
            "--bucket",
            "1h",
            "--json",
        )
    )
    api = http.get(
        "/api/v1/studio/usage",
        params={
            "start_time": "2026-03-01T00:00:00Z",
            "end_time": "2026-03-01T04:00:00Z",
            "bucket_width": "1h",
        },
    ).json()
    assert as_json == api
    assert [len(b["results"]) for b in as_json["buckets"]] == [0, 1, 1, 1]

    # No --since: from the start of this month (the CLI's clock), to the server's now.
    monkeypatch.setattr(STATE, "clock", VirtualClock(datetime(2026, 3, 1, 11, 0, tzinfo=UTC)))
    default = json.loads(_run("usage", "--json"))
    assert default["start_time"] == "2026-03-01T00:00:00Z"
    assert default["totals"]["input_tokens"] == 125
    # A duration ago, counted from the CLI's clock: 90 minutes before 11:00 is after every row.
    recent = json.loads(_run("usage", "--since", "90m", "--json"))
    assert (recent["start_time"], recent["totals"]["input_tokens"]) == ("2026-03-01T09:30:00Z", 0)
    later = json.loads(_run("usage", "--since", "9h", "--json", "--by", "endpoint"))
    assert later["totals"]["input_tokens"] == 25  # from 02:00: the rows at 02:00 and 03:00
    assert later["buckets"][0]["results"][0]["endpoint"] == "chat.completions"

    bad = runner.invoke(cli, ["studio", "usage", "--since", "2026-03-01", "--by", "user"])
    assert bad.exit_code == 2
    # In the CLI's words: the flag and its values (key, not the API's api_key_id).
    assert "--by takes model, key or endpoint" in bad.output
    assert "'user'" in bad.output
    assert "group_by" not in bad.output
    typo = runner.invoke(cli, ["studio", "usage", "--by", "modle"])
    assert typo.exit_code == 2
    assert "api_key_id" not in typo.output
    assert "'modle'" in typo.output
    typo = runner.invoke(cli, ["studio", "usage", "--by", "modle", "--json"])
    assert typo.exit_code == 2
    assert typo.stdout == ""
    error = json.loads(typo.stderr)["error"]
    assert (error["code"], error["param"]) == ("invalid_parameter", "--by")
    assert "model, key or endpoint" in error["message"]

    # --since reads the same forms as every other --since: 10hours, 600mins, 1days, 1w.
    for since in ("10hours", "10 hours", "600mins"):  # from 01:00: the three March rows
        since_one = json.loads(_run("usage", "--since", since, "--json"))
        assert since_one["start_time"] == "2026-03-01T01:00:00Z", since
        assert since_one["totals"]["input_tokens"] == 125, since
    for since in ("1days", "1w"):  # back into February: its row too
        wider = json.loads(_run("usage", "--since", since, "--json"))
        assert wider["totals"]["input_tokens"] == 125 + 9999, since
    unreadable = runner.invoke(cli, ["studio", "usage", "--since", "lately"])
    assert unreadable.exit_code == 2
    assert "RFC 3339" in unreadable.output
    assert "7days" in unreadable.output


def test_limits_set_get_and_clear(http: TestClient) -> None:
    key = _key(http)

    def api() -> dict[str, Any]:
        body: dict[str, Any] = http.get(f"/api/v1/studio/keys/{key}/limits").json()
        return body

    default_rpm = api()["effective_requests_per_minute"]
    _run("limits", "set", key, "--rpm", "5")
    assert (api()["requests_per_minute"], api()["tokens_per_minute"]) == (5, None)
    _run("limits", "set", key, "--tpm", "777")  # --rpm not named: kept
    assert (api()["requests_per_minute"], api()["tokens_per_minute"]) == (5, 777)
    shown = _run("limits", "get", key)
    assert "requests/min  5" in shown
    assert "tokens/min    777" in shown
    cleared = json.loads(_run("limits", "set", key, "--rpm", "default", "--json"))
    assert (cleared["requests_per_minute"], cleared["tokens_per_minute"]) == (None, 777)
    assert api()["effective_requests_per_minute"] == default_rpm
    assert f"{default_rpm} (default)" in _run("limits", "get", key)

    bad = runner.invoke(cli, ["studio", "limits", "set", key, "--rpm", "lots"])
    assert bad.exit_code == 2
    zero = runner.invoke(cli, ["studio", "limits", "set", key, "--rpm", "0"])
    assert zero.exit_code == 2
    assert "requests_per_minute" in zero.output
    assert api()["requests_per_minute"] is None  # neither refused call changed anything
    missing = runner.invoke(cli, ["studio", "limits", "get", "key_nope"])
    assert missing.exit_code == 1
    assert "key_not_found" in missing.output


def test_budget_set_suspend_resume(http: TestClient) -> None:
    org = _org(http)

    def api() -> tuple[int | None, bool]:
        body = http.get(f"/api/v1/studio/orgs/{org}/budget").json()
        return body["monthly_token_limit"], body["suspended"]

    assert api() == (None, False)
    _run("budget", "set", "--org", org, "--monthly-tokens", "1000")
    assert api() == (1000, False)
    _run("budget", "set", "--org", org, "--suspend")  # the budget is kept
    assert api() == (1000, True)
    _run("budget", "set", "--org", org, "--monthly-tokens", "2000")  # and so is the suspension
    assert api() == (2000, True)
    shown = _run("budget", "get", "--org", org)
    assert "suspended        yes" in shown
    assert "monthly tokens   2000" in shown
    _run("budget", "set", "--org", org, "--resume")
    assert api() == (2000, False)
    _run("budget", "set", "--org", org, "--monthly-tokens", "none", "--suspend")
    assert api() == (None, True)
    assert json.loads(_run("budget", "get", "--org", org, "--json"))["monthly_token_limit"] is None

    nothing = runner.invoke(cli, ["studio", "budget", "set", org])
    assert nothing.exit_code == 2
    assert api() == (None, True)
