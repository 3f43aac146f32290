"""No import cycle between the modules of one package (docs/architecture.md §3).

A cycle inside a package is how "split by concept" decays: two modules that import each other
are one module in two files. Imports made only for type checking count too: they are still a
dependency a reader must follow.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGES = [
    "kernel", "db", "web", "tenancy", "fleet", "drivers", "placement", "compute", "billing",
    "studio", "economics", "sim", "api", "client", "cli",
]  # fmt: skip


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("neocloud")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_cycle_inside(graph: grimp.ImportGraph, package: str) -> None:
    modules = sorted(m for m in graph.modules if m.startswith(f"neocloud.{package}."))
    cycles = [
        (a, b)
        for i, a in enumerate(modules)
        for b in modules[i + 1 :]
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert cycles == []
