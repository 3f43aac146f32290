"""How the CLI prints: tables for people, ``--json`` for scripts, errors on stderr."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from neocloud.client import ApiError

# Piped output (scripts, `| grep`, files) is not cut at 80 columns (Rich's default, and what
# COLUMNS often says in CI); a terminal keeps its own width.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True)

Column = tuple[str, str | Callable[[dict[str, Any]], Any]]  # (header, key or getter)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, title: str | None = None
) -> None:
    table = Table(title=title, header_style="bold", show_edge=False)
    for header, _ in columns:
        table.add_column(header)
    count = 0
    for row in rows:
        count += 1
        table.add_row(*[_cell(row, getter) for _, getter in columns])
    out.print(table)
    if count == 0:
        err.print("(none)")


def print_object(
    obj: dict[str, Any], *, as_json: bool, fields: Sequence[Column] | None = None
) -> None:
    if as_json:
        print_json(obj)
        return
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for header, getter in fields or [(k, k) for k in obj]:
        table.add_row(header, _cell(obj, getter))
    out.print(table)


def _cell(row: dict[str, Any], getter: str | Callable[[dict[str, Any]], Any]) -> str:
    value = getter(row) if callable(getter) else row.get(getter)
    if value is None:
        return "-"
    if isinstance(value, dict):
        if set(value) == {"amount", "currency"}:
            return f"{value['amount']} {value['currency']}"
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def fail(error: ApiError) -> typer.Exit:
    """Print an API error precisely and return the Exit to raise (code 1; 2 for bad input)."""
    where = f" (param: {error.param})" if error.param else ""
    err.print(f"[red]error[/red] {error.code}: {error.message}{where}")
    allowed = error.details.get("allowed") if error.details else None
    if allowed is not None:
        err.print(f"allowed: {', '.join(allowed) or 'none'}")
    return typer.Exit(2 if error.status in (400, 422) else 1)


P = ParamSpec("P")
R = TypeVar("R")


def api_call(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that an ``ApiError`` prints precisely and exits non-zero."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise fail(exc) from None

    return wrapper
