"""``neocloud studio models|chat`` over the SDK over the app."""

from __future__ import annotations

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.cli.studio import APPS
from neocloud.client import Client

runner = CliRunner()
app = typer.Typer()
for _name, _sub in APPS.items():
    app.add_typer(_sub, name=_name)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_models_and_chat(app_: FastAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(app_) as http:
        monkeypatch.setattr(STATE, "_client", Client(api_key=admin_key, http=http, retries=0))
        monkeypatch.setattr(output.out, "width", 200)
        result = runner.invoke(app, ["studio", "models"])
        assert result.exit_code == 0, result.output
        assert "neocloud/echo" in result.output
        result = runner.invoke(
            app, ["studio", "chat", "say it twice", "-m", "neocloud/echo", "--max-tokens", "3"]
        )
        assert result.exit_code == 0, result.output
        assert "say it twice" in result.output
        assert "3 completion tokens" in result.output
        result = runner.invoke(app, ["studio", "chat", "x", "-m", "nope", "--json"])
        assert result.exit_code != 0
        assert "model_not_found" in result.output


@pytest.fixture
def app_(app: FastAPI) -> FastAPI:
    return app
