"""``neocloud studio batches list|get|create|cancel`` and ``client.studio.batches`` over the app;
the server's own worker runs the batch."""

from __future__ import annotations

import json
import time

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.cli.studio import APPS
from neocloud.client import Client

from .test_files import batch_line, jsonl

runner = CliRunner()
cli = typer.Typer()
for _name, _sub in APPS.items():
    cli.add_typer(_sub, name=_name)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_batches_cli_and_sdk(app: FastAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(app) as http:
        client = Client(api_key=admin_key, http=http, retries=0)
        monkeypatch.setattr(STATE, "_client", client)
        monkeypatch.setattr(output.out, "width", 200)
        upload = http.post(
            "/v1/files",
            files={"file": ("b.jsonl", jsonl(*(batch_line(i) for i in range(3))))},
            data={"purpose": "batch"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        file_id = upload.json()["id"]
        made = runner.invoke(
            cli, ["studio", "batches", "create", file_id, "--metadata", "team=eval", "--json"]
        )
        assert made.exit_code == 0, made.output
        batch = json.loads(made.output)
        assert batch["metadata"] == {"team": "eval"}
        deadline = time.monotonic() + 30
        while client.studio.batches.get(batch["id"])["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        listed = runner.invoke(cli, ["studio", "batches", "list"])
        assert listed.exit_code == 0, listed.output
        assert batch["id"] in listed.output
        assert "3/3" in listed.output
        shown = runner.invoke(cli, ["studio", "batches", "get", batch["id"]])
        assert "completed" in shown.output
        refused = runner.invoke(cli, ["studio", "batches", "cancel", batch["id"]])
        assert refused.exit_code != 0
        assert "batch_not_cancellable" in refused.output
        bad = runner.invoke(cli, ["studio", "batches", "create", file_id, "--metadata", "x"])
        assert bad.exit_code != 0
        page = client.studio.batches.list(limit=1)
        assert [b["id"] for b in page["data"]] == [batch["id"]]
