"""Access over the API: ``ssh``, ``addresses`` and ``simulated`` on instances and cluster nodes,
and ``GET /api/v1/clusters/{id}/hosts`` in every format, with the simulator's driver."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.compute import access
from neocloud.compute.worker import Worker

from .helpers import tenant_client


def _error(call, *args, **kwargs) -> ApiError:  # type: ignore[no-untyped-def]
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def _running_cluster(acme: Client, worker: Worker, name: str = "train") -> dict:  # type: ignore[type-arg]
    c = acme.clusters.create("H100", 2, name=name)
    worker.run_once()
    c = acme.clusters.get(c["id"])
    assert c["state"] == "running"
    return c


def test_an_instance_shows_its_ssh_line_only_while_running(acme: Client, worker: Worker) -> None:
    inst = acme.instances.create("8xH100", name="box")
    assert (inst["ssh"], inst["addresses"], inst["simulated"]) == (None, [], None)
    worker.run_once()
    inst = acme.instances.get(inst["id"])
    assert inst["state"] == "running"
    ssh = inst["ssh"]
    assert (ssh["user"], ssh["port"]) == ("ubuntu", 22)
    assert ssh["host"].startswith("2001:db8:")
    assert ssh["command"] == f"ssh -p 22 ubuntu@{ssh['host']}"
    assert inst["addresses"] == [ssh["host"]]
    assert inst["simulated"] is True
    acme.instances.terminate(inst["id"])
    worker.run_once()
    ended = acme.instances.get(inst["id"])
    assert (ended["state"], ended["ssh"], ended["addresses"]) == ("terminated", None, [])
    assert ended["simulated"] is True  # what it was, still said


def test_cluster_nodes_carry_hostname_and_access(acme: Client, worker: Worker) -> None:
    c = _running_cluster(acme, worker)
    assert [n["hostname"] for n in c["nodes"]] == ["train-0", "train-1"]
    for n in c["nodes"]:
        assert n["ssh"]["command"].startswith("ssh -p 22 ubuntu@2001:db8:")
        assert n["addresses"] == [n["ssh"]["host"]]
        assert n["simulated"] is True


def test_every_format_answers_and_parses(
    acme: Client, worker: Worker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = _running_cluster(acme, worker)
    hosts = {n["hostname"]: n["ssh"]["host"] for n in c["nodes"]}
    for fmt in access.FORMATS:
        text = acme.clusters.hosts(c["id"], fmt)
        assert "SIMULATED" in text, fmt
        assert "no server answers" in text, fmt
        if fmt == "hostfile":
            lines = [x for x in text.splitlines() if x and not x.startswith("#")]
            assert sorted(lines) == sorted(f"{h} slots=8" for h in hosts.values())
        elif fmt == "ssh-config":
            if shutil.which("ssh") is None:
                continue
            path = tmp_path / "config"
            path.write_text(text)
            for name, host in hosts.items():
                out = subprocess.run(
                    ["ssh", "-G", "-F", str(path), name],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=10,
                ).stdout
                assert re.search(rf"^hostname {re.escape(host)}$", out, re.M), out
        else:
            data = yaml.safe_load(text)
            if fmt == "ansible":
                got = {k: v["ansible_host"] for k, v in data["all"]["hosts"].items()}
                assert got == hosts
            elif fmt == "dstack":
                assert (data["type"], data["name"]) == ("fleet", "train")
                assert [h["hostname"] for h in data["ssh_config"]["hosts"]] == list(hosts.values())
            else:
                assert data["train"]["hosts"] == list(hosts.values())


def test_media_types(acme: Client, worker: Worker) -> None:
    c = _running_cluster(acme, worker)
    http: TestClient = acme._http  # type: ignore[attr-defined]  # carries the key
    for fmt, media in access.MEDIA_TYPES.items():
        answer = http.get(f"/api/v1/clusters/{c['id']}/hosts", params={"format": fmt})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].split(";")[0] == media


def test_bad_format_names_the_param(acme: Client, worker: Worker) -> None:
    c = _running_cluster(acme, worker)
    exc = _error(acme.clusters.hosts, c["id"], "csv")
    assert (exc.status, exc.code, exc.param) == (422, "unknown_format", "format")
    assert "skypilot" in exc.message


def test_no_hosts_before_a_member_runs(acme: Client) -> None:
    c = acme.clusters.create("H100", 2, name="later")
    exc = _error(acme.clusters.hosts, c["id"], "hostfile")
    assert (exc.status, exc.code) == (409, "cluster_not_running")
    assert exc.details == {"state": "pending"}


def test_another_orgs_cluster_is_not_found(acme: Client, worker: Worker, fleet: Client) -> None:
    c = _running_cluster(acme, worker)
    _, other = tenant_client(fleet, "other")
    exc = _error(other.clusters.hosts, c["id"], "ssh-config")
    assert (exc.status, exc.code) == (404, "cluster_not_found")
    assert "2001:db8" not in exc.message
