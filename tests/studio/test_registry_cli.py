"""``neocloud studio models list|add|remove`` over the SDK over the app."""

from __future__ import annotations

import json

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neocloud.cli import output
from neocloud.cli.state import STATE
from neocloud.cli.studio import APPS
from neocloud.client import Client
from neocloud.studio.runtime import TINY_LLAMA

runner = CliRunner()
cli = typer.Typer()
for _name, _sub in APPS.items():
    cli.add_typer(_sub, name=_name)


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_models_add_list_remove(
    app: FastAPI, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(app) as http:
        monkeypatch.setattr(STATE, "_client", Client(api_key=admin_key, http=http, retries=0))
        monkeypatch.setattr(output.out, "width", 250)

        added = runner.invoke(
            cli,
            ["studio", "models", "add", "--path", str(TINY_LLAMA), "--id", "acme/tiny",
             "--context", "256", "--input-price", "0.5", "--output-price", "1.5", "--json"],
        )  # fmt: skip
        assert added.exit_code == 0, added.output
        created = json.loads(added.output)
        assert (created["id"], created["source"], created["context_length"]) == (
            "acme/tiny",
            "path",
            256,
        )
        args = ["studio", "models", "add", "--upstream", "http://10.0.0.5:8000/v1,http://10.0.0.6:8000/v1",
                "--id", "acme/llama", "--upstream-model", "meta-llama/Meta-Llama-3-8B-Instruct",
                "--flavor", "fast", "--deprecated-on", "2027-06-30"]  # fmt: skip
        unpriced = runner.invoke(cli, args)  # no prices: refused, not served at $0
        assert unpriced.exit_code != 0
        assert "price_required" in unpriced.output
        assert "--input-price" in unpriced.output
        upstream = runner.invoke(cli, [*args, "--input-price", "0.9", "--output-price", "0"])
        assert upstream.exit_code == 0, upstream.output
        assert "upstream:acme/llama" in upstream.output

        listing = runner.invoke(cli, ["studio", "models", "list"])
        assert listing.exit_code == 0, listing.output
        lines = {line.split()[0]: line for line in listing.output.splitlines() if line.strip()}
        assert "path:acme/tiny" in lines["acme/tiny"]
        assert "256" in lines["acme/tiny"]
        assert "1.5" in lines["acme/tiny"]
        assert "fast" in lines["acme/llama"]
        assert "2027-06-30" in lines["acme/llama"]
        assert "echo" in lines["neocloud/echo"]
        bare = runner.invoke(cli, ["studio", "models", "--json"])
        assert bare.exit_code == 0, bare.output
        assert {m["id"] for m in json.loads(bare.output)["data"]} >= {"acme/tiny", "acme/llama"}

        bad = runner.invoke(cli, ["studio", "models", "add", "--upstream", "nope", "--id", "x"])
        assert bad.exit_code != 0
        assert "invalid_upstream_url" in bad.output

        removed = runner.invoke(cli, ["studio", "models", "remove", "acme/llama"])
        assert removed.exit_code == 0, removed.output
        again = runner.invoke(cli, ["studio", "models", "remove", "acme/llama"])
        assert again.exit_code != 0
        assert "model_not_found" in again.output
        ids = json.loads(runner.invoke(cli, ["studio", "models", "list", "--json"]).output)
        assert "acme/llama" not in {m["id"] for m in ids["data"]}
