"""``neocloud studio files …`` and ``neocloud studio finetune …`` over the SDK over the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.api.app import create_app
from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.cli.studio import APPS
from neocloud.client import Client
from neocloud.db.engine import Database
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.settings import Settings

runner = CliRunner()
cli = typer.Typer()
for _name, _sub in APPS.items():
    cli.add_typer(_sub, name=_name)

LINE = {
    "messages": [
        {"role": "user", "content": "What is the capital of Zorbia?"},
        {"role": "assistant", "content": "Quuxville."},
    ]
}


def run(*args: str) -> str:
    result = runner.invoke(cli, ["studio", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_files_and_finetune_commands(
    settings: Settings,
    db: Database,
    clock: VirtualClock,
    admin_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("peft")
    app: FastAPI = create_app(settings=settings, db=db, clock=clock)  # the built-in catalog
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(LINE) + "\n")
    with TestClient(app) as http:
        client = Client(api_key=admin_key, http=http, retries=0)
        monkeypatch.setattr(STATE, "_client", client)
        monkeypatch.setattr(output.out, "width", 250)
        made = json.loads(run("files", "upload", str(data), "--purpose", "fine-tune", "--json"))
        file_id = made["id"]
        assert made["purpose"] == "fine-tune"
        assert file_id in run("files", "list")
        assert "train.jsonl" in run("files", "get", file_id)
        assert run("files", "content", file_id) == data.read_text()
        bad = runner.invoke(cli, ["studio", "files", "upload", str(data), "--purpose", "vision"])
        assert bad.exit_code != 0
        assert "invalid_purpose" in bad.output

        job = json.loads(
            run(
                "finetune", "create", "-m", "neocloud/tiny-llama", "--training-file", file_id,
                "--epochs", "2", "--lora-rank", "4", "--suffix", "cli", "--json",
            )
        )  # fmt: skip
        assert job["status"] == "validating_files"
        assert job["method"]["supervised"]["hyperparameters"]["lora_rank"] == 4
        assert job["id"] in run("finetune", "list")
        assert "validating_files" in run("finetune", "get", job["id"])
        assert "Validating training file" in run("finetune", "events", job["id"])
        assert "cancelled" in run("finetune", "cancel", job["id"])
        assert "STEP" in run("finetune", "checkpoints", job["id"])
        again = runner.invoke(cli, ["studio", "finetune", "cancel", job["id"]])
        assert again.exit_code != 0
        assert "illegal_transition" in again.output
        run("files", "delete", file_id)
        assert file_id not in run("files", "list")
