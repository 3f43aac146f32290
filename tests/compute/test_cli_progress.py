"""Long CLI work shows a spinner with elapsed time on a terminal and nothing when piped."""

from __future__ import annotations

import io
import time

from rich.console import Console

from neocloud.cli.progress import spinner


def test_spinner_draws_on_a_terminal() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=80)
    with spinner("importing fleet.yaml", console=terminal) as show:
        time.sleep(0.2)
        show("importing fleet.yaml: 31,250 nodes")
        time.sleep(0.2)
    drawn = screen.getvalue()
    assert "importing fleet.yaml" in drawn
    assert "0:00:00" in drawn  # the elapsed-time column


def test_spinner_is_silent_when_piped() -> None:
    pipe = io.StringIO()
    piped = Console(file=pipe, force_terminal=False, width=80)
    with spinner("importing fleet.yaml", console=piped) as show:
        show("still importing")
    assert pipe.getvalue() == ""
