"""How the CLI prints: tables for people, ``--json`` for scripts, errors on stderr.

One way to show each kind of value, whatever the command: ids whole (never cut, so they can be
copied into the next command), times in UTC to the second (``2026-12-06T01:39:12Z``), money as
its amount and currency (``1234.50 USD``), objects as lower-case ``label  value`` rows. ``--json``
prints the API's JSON unchanged; with ``--json`` an error is the API's error object too.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from neocloud.client import ApiError
from neocloud.kernel.ids import is_id

# Piped output (scripts, `| grep`, files) is not cut at 80 columns (Rich's default, and what
# COLUMNS often says in CI); a terminal keeps its own width.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True)

Column = tuple[str, str | Callable[[dict[str, Any]], Any]]  # (header, key or getter)

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$")
MORE_HINT = "use --all for every row, or --limit N"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def when(value: str | datetime | None) -> str:
    """A time as people read it: UTC, to the second, ``Z`` (``2026-12-06T01:39:12Z``)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        parsed = value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(value: dict[str, Any] | str | Decimal | None, currency: str | None = None) -> str:
    """Money as ``1234.50 USD``: the exact amount (two decimals at least) and its currency.

    ``value`` is the API's ``{"amount", "currency"}`` object, or a bare amount with ``currency``.
    """
    if value is None:
        return "-"
    if isinstance(value, dict):
        currency = value.get("currency", currency)
        value = value["amount"]
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return f"{value} {currency or ''}".strip()
    if amount.as_tuple().exponent > -2:  # type: ignore[operator]  # int for a finite Decimal
        amount = amount.quantize(Decimal("0.01"))
    return f"{amount} {currency}" if currency else str(amount)


def _is_money(value: dict[str, Any]) -> bool:
    return set(value) == {"amount", "currency"}


def cell(value: Any) -> str:
    """One value as text: ``-`` for nothing, times and money in the house format."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, dict):
        if _is_money(value):
            return money(value)
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, str) and _TIME.match(value):
        return when(value)
    return str(value)


def _cell(row: dict[str, Any], getter: str | Callable[[dict[str, Any]], Any]) -> str:
    return cell(getter(row) if callable(getter) else row.get(getter))


def print_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, title: str | None = None
) -> None:
    """Rows as a table; a column of ids is never cut (the other columns wrap instead)."""
    cells = [[_cell(row, getter) for _, getter in columns] for row in rows]
    table = Table(title=title, header_style="bold", show_edge=False)
    for i, (header, _) in enumerate(columns):
        ids = [line[i] for line in cells if is_id(line[i])]
        if ids:
            table.add_column(header, no_wrap=True, min_width=max(len(v) for v in ids))
        else:
            table.add_column(header, overflow="fold")
    for line in cells:
        table.add_row(*line)
    out.print(table)
    if not cells:
        err.print("(none)")


def label(header: str) -> str:
    """An object's row label: ``created at`` for ``created_at`` or ``CREATED``."""
    return header.replace("_", " ").lower() if header.isupper() or "_" in header else header


def print_object(
    obj: dict[str, Any], *, as_json: bool, fields: Sequence[Column] | None = None
) -> None:
    """One object as ``label  value`` rows (every field but its ``object`` kind, unless
    ``fields`` names some)."""
    if as_json:
        print_json(obj)
        return
    table = Table(show_header=False, show_edge=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for header, getter in fields or [(k, k) for k in obj if k != "object"]:
        table.add_row(label(header), _cell(obj, getter))
    out.print(table)


T = TypeVar("T")


def take(rows: Iterable[T], limit: int | None) -> tuple[list[T], bool]:
    """At most ``limit`` rows (every row when None) and whether more exist beyond them."""
    taken: list[T] = []
    for row in rows:
        if limit is not None and len(taken) >= limit:
            return taken, True
        taken.append(row)
    return taken, False


def print_list(
    rows: list[dict[str, Any]], columns: Sequence[Column], *, as_json: bool, more: bool
) -> None:
    """A list as a table (or JSON); when it was cut, say so on stderr, how to see the rest."""
    if as_json:
        print_json(rows)
    else:
        print_table(rows, columns)
    if more:
        err.print(f"showing the first {len(rows)}; more exist: {MORE_HINT}")


UNREACHABLE_HINT = (
    "hint: is the API running at that URL? `neocloud up` starts one; `neocloud -p PROFILE login "
    "--url URL --key-file FILE` (or NEOCLOUD_API_URL) points the CLI at another"
)


def fail(error: ApiError, *, as_json: bool = False) -> typer.Exit:
    """Print an API error precisely and return the Exit to raise (code 1; 2 for bad input).

    With ``--json`` the error is the API's error object (``{"error": {...}}``) on stderr and
    stdout stays empty: a script capturing stdout (``id=$(neocloud … --json | jq -r .id)``)
    never takes an error for a result, and reads the exit code and stderr. gh's ``--json``
    commands keep errors on stderr too; ``gh api`` puts an error body on stdout, which its
    maintainers found ends up as garbage in such scripts (cli/cli#5209).
    """
    if as_json:
        body: dict[str, Any] = {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
        }
        if error.details:
            body["details"] = error.details
        sys.stderr.write(json.dumps({"error": body}, indent=2, default=str) + "\n")
    else:
        where = f" (param: {error.param})" if error.param else ""
        err.print(f"[red]error[/red] {error.code}: {error.message}{where}", highlight=False)
        allowed = error.details.get("allowed") if error.details else None
        if allowed is not None:
            err.print(f"allowed: {', '.join(allowed) or 'none'}", highlight=False)
        ids = error.details.get("ids") if error.details else None
        if ids:
            err.print("matching ids: " + ", ".join(ids), highlight=False, soft_wrap=True)
        if error.status == 0:  # no answer at all: the server is down, or the URL is wrong
            err.print(UNREACHABLE_HINT, highlight=False, soft_wrap=True)
    return typer.Exit(2 if error.status in (400, 422) else 1)


P = ParamSpec("P")
R = TypeVar("R")


def api_call(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that an ``ApiError`` prints precisely and exits non-zero (as JSON
    when the command was given ``--json``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json") or kwargs.get("json_"))
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise fail(exc, as_json=as_json) from None
        except typer.BadParameter as exc:
            if not as_json:
                raise
            hint = str(exc.param_hint or "").strip("'\"") or None
            bad = ApiError(400, "invalid_request_error", "invalid_parameter", exc.message, hint)
            raise fail(bad, as_json=True) from None

    return wrapper


def _flags_without_placeholder() -> None:
    """Typer's help prints a ``<bool>`` type beside on/off flags (``--json``, ``--wait``) as if
    they took a value; a flag takes none, so its type column stays empty."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    setattr(TyperOption, "display_type_rich", display_type_rich)  # noqa: B010 - not a method-assign


_flags_without_placeholder()
