"""Spec files: parsing, precise errors with lines, generation."""

from __future__ import annotations

import pytest

from neocloud.fleet.generate import generate_spec
from neocloud.fleet.spec import demo_spec, dump_spec, expand, parse_spec
from neocloud.kernel.errors import ValidationFailed

from .helpers import GOOD


def test_good_spec_parses_and_expands() -> None:
    spec = parse_spec(GOOD)
    assert spec.templates["h100-8x"].gpu_model == "H100-SXM-80GB"
    assert spec.templates["h100-8x"].nvme == 30 * 1024
    nodes = list(expand(spec))
    assert len(nodes) == 17
    first = nodes[0]
    assert first.hostname == "us-east-1a-ib01-b01-r01-n01"
    assert first.topology == {
        "region": "us-east-1",
        "zone": "us-east-1a",
        "fabric": "us-east-1a-ib01",
        "block": "us-east-1a-ib01-b01",
        "rack": "us-east-1a-ib01-b01-r01",
    }
    assert first.bmc == {"endpoint": "https://us-east-1a-ib01-b01-r01-n01.bmc.example"}
    assert nodes[-1].labels == {"pool": "research"}


def _error(text: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as exc:
        parse_spec(text, source="fleet.yaml")
    return exc.value


def test_bad_field_names_field_and_line() -> None:
    err = _error(GOOD.replace("gpu_count: 8", "gpu_count: many"))
    assert err.param == "templates.h100-8x.gpu_count"
    assert "line 6" in err.message
    assert "fleet.yaml" in err.message


def test_unknown_field_and_unknown_model() -> None:
    err = _error(GOOD.replace("        blocks: 2", "        blocks: 2\n        colour: red"))
    assert err.param == "sites[0].fabrics[0].colour"
    assert "line 20" in err.message
    err = _error(GOOD.replace("gpu_model: h100", "gpu_model: V100"))
    assert "V100" in err.message
    assert "line 4" in err.message


def test_unknown_template_and_node_count_over_capacity() -> None:
    err = _error(
        GOOD.replace(
            "        template: h100-8x\n        blocks", "        template: nope\n        blocks"
        )
    )
    assert err.param == "sites[0].fabrics[0].template"
    assert "line 18" in err.message
    err = _error(GOOD.replace("nodes_per_rack: 4", "nodes_per_rack: 4\n        node_count: 99"))
    assert err.param == "sites[0].fabrics[0].node_count"


def test_duplicate_names_are_rejected() -> None:
    dup_fabric = GOOD.replace(
        """    nodes:
      - hostname""",
        """      - name: us-east-1a-ib01
        template: h100-8x
        blocks: 1
        racks_per_block: 1
        nodes_per_rack: 1
    nodes:
      - hostname""",
    )
    err = _error(dup_fabric)
    assert err.param == "sites[0].fabrics[1].name"
    assert "duplicate fabric" in err.message
    assert "line 24" in err.message
    dup_host = GOOD.replace("hostname: special-01", "hostname: us-east-1a-ib01-b01-r01-n01")
    err = _error(dup_host)
    assert "duplicate hostname" in err.message
    assert err.param == "sites[0].nodes[0].hostname"
    wrong_parent = GOOD.replace(
        "block: us-east-1a-ib01-b01,", "block: us-east-1a-ib01-b01x,"
    ).replace("rack: rack-special", "rack: us-east-1a-ib01-b01-r01")
    err = _error(wrong_parent)
    assert "duplicate rack name" in err.message


def test_invalid_yaml_names_the_line() -> None:
    err = _error("levels: [region\ntemplates: {")
    assert err.code == "invalid_yaml"
    assert "line" in err.message


def test_size_limit() -> None:
    big = GOOD.replace("blocks: 2", "blocks: 4000").replace(
        "racks_per_block: 2", "racks_per_block: 30"
    )
    err = _error(big)
    assert "at most 100000" in err.message
    assert err.param == "sites"


def test_generator_makes_31250_nodes_for_250000_gpus() -> None:
    spec = generate_spec(gpus=250_000, model="H100", regions=2)
    assert spec.node_count == 31_250
    nodes = list(expand(spec))
    assert len(nodes) == 31_250
    assert sum(n.template.gpu_count for n in nodes) == 250_000
    assert len({n.hostname for n in nodes}) == 31_250
    assert {n.topology["region"] for n in nodes} == {"us-east-1", "eu-west-1"}
    again = parse_spec(dump_spec(spec))
    assert again.node_count == 31_250


def test_generator_gb200_racks_are_nvlink_domains() -> None:
    spec = generate_spec(gpus=72 * 16, model="gb200")
    fabric = spec.sites[0].fabrics[0]
    assert fabric.nodes_per_rack == 18
    assert spec.templates["gb200-4x"].gpu_count == 4


def test_demo_spec_is_4096_gpus_over_two_regions_and_three_models() -> None:
    nodes = list(expand(demo_spec()))
    assert sum(n.template.gpu_count for n in nodes) == 4096
    assert len({n.topology["region"] for n in nodes}) == 2
    assert len({n.template.gpu_model for n in nodes}) == 3
