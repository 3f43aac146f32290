"""No import cycles inside the studio or the SDK (issue 12): a module that needs another's
object takes it as an argument (the registry takes a catalog callable, not the runtime)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("package", ["neocloud.studio", "neocloud.client"])
def test_no_import_cycle_among_a_packages_modules(package: str) -> None:
    grimp = pytest.importorskip("grimp")  # installed with import-linter
    graph = grimp.build_graph("neocloud")
    modules = sorted(m for m in graph.modules if m == package or m.startswith(f"{package}."))
    cycles = []
    for module in modules:
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in modules:
                continue
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back is not None:
                cycles.append(" -> ".join([module, *back]))
    assert cycles == []
