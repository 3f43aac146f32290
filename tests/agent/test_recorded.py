"""The recorded GPU sources shipped with the agent: they load, look like the real nodes they
stand for, and say ``simulated`` everywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

import pytest

from neocloud.agent.gpus import RECORDED, RecordedSource
from neocloud.agent.main import AgentOptions, report, run
from neocloud.agent.wire import heartbeat_payload

from .contract import check_heartbeat


@pytest.mark.parametrize("name", RECORDED)
def test_each_recorded_source_loads_says_simulated_and_fits_the_contract(name: str) -> None:
    source = RecordedSource(name)
    assert source.simulated is True
    inv = source.inventory()
    assert inv.simulated is True
    assert all(g.uuid.startswith("GPU-00000000-") for g in inv.gpus)  # fake, visibly
    body = heartbeat_payload(
        node_id="node_1",
        agent_version="0.1.0",
        simulated=source.simulated,
        sent_at=datetime(2026, 1, 1, tzinfo=UTC),
        inventory=inv,
        samples=source.sample(),
        checks=[],
    )
    check_heartbeat(body)
    assert body["simulated"] is True
    assert [t["index"] for t in body["telemetry"]] == [g.index for g in inv.gpus]


def test_the_recordings_stand_for_the_nodes_they_name() -> None:
    h100 = RecordedSource("h100").inventory()
    assert len(h100.gpus) == 8
    assert {(g.name, g.memory_total_mib) for g in h100.gpus} == {("NVIDIA H100 80GB HBM3", 81559)}
    assert h100.driver_version is not None
    assert h100.driver_version.startswith("550.")
    assert h100.cuda_version == "12.4"
    assert len({g.uuid for g in h100.gpus}) == 8
    h200 = RecordedSource("h200").inventory()
    assert {g.name for g in h200.gpus} == {"NVIDIA H200"}
    assert {g.memory_total_mib for g in h200.gpus} == {143771}
    lost = RecordedSource("h100-lost-gpu").inventory()
    assert [g.index for g in lost.gpus] == [0, 1, 2, 3, 4, 6, 7]


def test_the_ecc_recording_has_an_uncorrectable_error_on_gpu_3_only() -> None:
    source = RecordedSource("h100-ecc")
    first, second = source.sample(), source.sample()
    bad = [s.index for s in first if s.ecc_uncorrectable]
    assert bad == [3]
    assert first[3].xid == (94,)
    assert second[3].xid == ()
    assert second[3].ecc_uncorrectable == 1  # the volatile count stays
    assert source.sample() == first  # the frames repeat


def test_an_unknown_recording_is_refused() -> None:
    with pytest.raises(ValueError, match="known: h100, h200"):
        RecordedSource("h300")


def test_recordings_are_package_data() -> None:
    files = {p.name for p in resources.files("neocloud.agent").joinpath("recorded").iterdir()}
    assert {f"{name}.json" for name in RECORDED} <= files


def test_print_reports_a_recorded_node_as_simulated(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(AgentOptions(recorded="h200", print_only=True)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["simulated"] is True
    assert len(printed["inventory"]["gpus"]) == 8
    assert printed["peaks"] == {
        "NVIDIA H200": {"model": "H200-SXM-141GB", "bf16_tflops": 989.0, "hbm_gbps": 4800.0}
    }
    assert report(RecordedSource("h100"))["checks"][0]["status"] == "warn"
