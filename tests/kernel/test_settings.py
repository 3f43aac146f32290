from pathlib import Path

import pytest
from pydantic import ValidationError

from neocloud.kernel.settings import load_settings


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEOCLOUD_PORT", "9001")
    monkeypatch.setenv("NEOCLOUD_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.port == 9001
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path.resolve()}/neocloud.db"


def test_explicit_overrides_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEOCLOUD_PORT", "9001")
    assert load_settings(port=9002).port == 9002
    monkeypatch.setenv("NEOCLOUD_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().resolved_database_url() == "postgresql://u@h/db"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEOCLOUD_PORT", "70000")
    with pytest.raises(ValidationError):
        load_settings()
