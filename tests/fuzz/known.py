"""Findings the fuzzer reproduces that another engineer of this wave owns and fixes.

Each entry names the finding, its owner and how to recognise the failure; a failure that
matches an entry is counted as ``excluded``, not as a failure. The list is the one place where
the short run in ``make test`` looks away, and it must be empty once the wave is merged: an
entry whose failure no longer occurs is reported by the run, so it can be deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Known:
    finding: str  # what breaks, as the issue or the report names it
    owner: str  # the branch that fixes it
    operation: str  # "METHOD /path" as the OpenAPI document spells it
    status: int  # the status the unfixed app answers
    matches: Callable[[Any], bool] = lambda case: True


KNOWN: list[Known] = []
