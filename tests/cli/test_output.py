"""The CLI's one way to show values and its one parser for times (no server needed)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer

from neocloud.cli.output import cell, money, take, when
from neocloud.cli.times import parse_when

NOW = datetime(2026, 12, 6, 1, 39, 12, 720297, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", "2026-11-29T01:39:12Z"),
        ("7days", "2026-11-29T01:39:12Z"),
        ("7 days ago", "2026-11-29T01:39:12Z"),
        ("2w", "2026-11-22T01:39:12Z"),
        ("2weeks", "2026-11-22T01:39:12Z"),
        ("12h", "2026-12-05T13:39:12Z"),
        ("12hours", "2026-12-05T13:39:12Z"),
        ("30m", "2026-12-06T01:09:12Z"),
        ("30min", "2026-12-06T01:09:12Z"),
        ("2026-12-01", "2026-12-01T00:00:00Z"),
        ("2026-11", "2026-11-01T00:00:00Z"),
        ("2026-12-01T10:00:00Z", "2026-12-01T10:00:00Z"),
        ("2026-12-01T11:00:00+01:00", "2026-12-01T10:00:00Z"),
        ("2026-12-01T10:00:00", "2026-12-01T10:00:00Z"),
        ("1764547200", "2025-12-01T00:00:00Z"),
    ],
)
def test_parse_when_reads_the_common_forms(text: str, expected: str) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize("text", ["7dayz", "soon", "2026-13-01", "", "d7"])
def test_parse_when_refuses_the_rest_naming_the_option_and_the_forms(text: str) -> None:
    with pytest.raises(typer.BadParameter) as info:
        parse_when(text, NOW, option="--until")
    assert "--until" in str(info.value)
    assert "7days" in str(info.value)
    assert "RFC 3339" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-06T01:39:12.353Z", "2026-12-06T01:39:12Z"),
        ("2026-12-06T01:39:12+00:00", "2026-12-06T01:39:12Z"),
        ("2026-12-06T01:39:12.720297Z", "2026-12-06T01:39:12Z"),
        ("2026-12-06T02:39:12+01:00", "2026-12-06T01:39:12Z"),
        (NOW, "2026-12-06T01:39:12Z"),
        ("not a time", "not a time"),
    ],
)
def test_one_time_format(value: str | datetime, expected: str) -> None:
    assert when(value) == expected


def test_money_is_its_amount_and_currency() -> None:
    assert money({"amount": "1234.5", "currency": "USD"}) == "1234.50 USD"
    assert money({"amount": "0.000450", "currency": "USD"}) == "0.000450 USD"  # exact
    assert money("3", "EUR") == "3.00 EUR"
    assert cell({"amount": "23.92", "currency": "USD"}) == "23.92 USD"
    assert cell(None) == "-"
    assert cell(True) == "yes"
    assert cell({"fabric": "f1", "rack": "r1"}) == "fabric=f1, rack=r1"
    assert cell("2026-03-01T12:00:00.123456+00:00") == "2026-03-01T12:00:00Z"


def test_take_says_whether_more_exist() -> None:
    assert take(iter(range(5)), 3) == ([0, 1, 2], True)
    assert take(iter(range(3)), 3) == ([0, 1, 2], False)
    assert take(iter(range(5)), None) == ([0, 1, 2, 3, 4], False)


def test_an_unreachable_api_says_what_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logged in, but nothing answers at the URL: the error says so and how to fix it (it
    printed only "Connection refused")."""
    from typer.testing import CliRunner

    from neocloud.cli.compute import APPS
    from neocloud.cli.state import STATE

    app = typer.Typer()
    for name, sub in APPS.items():
        app.add_typer(sub, name=name)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("NEOCLOUD_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("NEOCLOUD_API_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NEOCLOUD_API_KEY", "nc_test_unused")
    monkeypatch.setattr(STATE, "_client", None)
    result = CliRunner().invoke(app, ["instances", "list"])
    assert result.exit_code == 1
    assert "unreachable" in result.stderr
    assert "is the API running at that URL?" in result.stderr
    assert "NEOCLOUD_API_URL" in result.stderr


def test_a_saved_profile_is_readable_by_its_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    from neocloud.cli.config import Profile, save_profile

    monkeypatch.setenv("NEOCLOUD_CONFIG", str(tmp_path / "profiles.json"))
    old = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        path = save_profile(Profile("default", "http://127.0.0.1:8420", "nc_secret"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_suffix(".tmp").exists()
