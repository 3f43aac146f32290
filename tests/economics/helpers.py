"""The example fleet, loaded the way the CLI loads it."""

from __future__ import annotations

from pathlib import Path

from neocloud.economics import Scenario, load_yaml, parse_scenario

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "economics" / "h100-1024.yaml"


def example() -> Scenario:
    return parse_scenario(load_yaml(EXAMPLE.read_text(), source=str(EXAMPLE)))
