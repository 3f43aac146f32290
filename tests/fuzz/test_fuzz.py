"""Schemathesis over every operation of the OpenAPI document, as the operator admin and as a
tenant's owner: no 5xx, no undocumented status, content type or body shape.

``make test`` runs a short, derandomized pass (one example per operation, caller and kind:
about 550 cases); ``make fuzz`` sets ``NEOCLOUD_FUZZ_EXAMPLES`` for the long run (4: about
2,200 cases). The counts by operation are printed at the end (``-s`` shows them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Platform, build_platform, examples_per_kind, run


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    yield from build_platform(tmp_path)


def test_no_5xx_and_no_undocumented_response(platform: Platform) -> None:
    tally = run(platform, examples_per_kind())
    report = tally.report()
    print("\n" + report)
    assert sum(tally.cases.values()) >= 90 * 2 * examples_per_kind(), report
    assert not tally.new(), report
    assert not tally.unused_known(), report
