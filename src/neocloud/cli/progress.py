"""Progress for long work: a spinner with elapsed time on a terminal, nothing when piped.

Progress goes to stderr, so ``--json`` on stdout stays clean; where stderr is not a terminal
(a pipe, a file, CI) nothing is drawn at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from neocloud.cli.output import err


@contextmanager
def spinner(text: str, *, console: Console | None = None) -> Iterator[Callable[[str], None]]:
    """Show ``text`` with a spinner and the seconds elapsed while the block runs; yields a
    function that replaces the text (e.g. with an object's state as it changes)."""
    console = console or err
    if not console.is_terminal:
        yield lambda _text: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(text, total=None)
        yield lambda new: progress.update(task, description=new)
