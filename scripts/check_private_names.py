"""Fail when a module uses another module's private names (``make lint`` runs this).

An underscore name is private to the module that defines it. Two ways of breaking that are
reported, each as ``path:line: message``:

- importing one: ``from neocloud.web.deps import _bearer``, or importing from a private module
  (``from pkg._impl import x``) outside the package that holds it;
- reaching into one: ``engine._window(...)`` where no class or function of this module defines
  ``_window`` (so it can only be another module's private member). A class's own members,
  inherited ones included, are its own: ``self._x``, ``cls._x`` and ``super()._x`` pass.

Names that are public by another convention are allowed: the namedtuple API (``_replace``,
``_asdict``, ``_fields``, ``_make``), ``sys._getframe`` and ``os._exit``.

Usage: ``python scripts/check_private_names.py [ROOT ...]`` (default ``src``); exit status 1
when anything is found.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ALLOWED_ATTRIBUTES = frozenset({"_replace", "_asdict", "_fields", "_make", "_getframe", "_exit"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_here(tree: ast.Module) -> set[str]:
    """Underscore names this module defines: functions, classes, class attributes, assignments
    to ``self._x`` / ``cls._x`` / any ``obj._x`` target, and names bound at module level."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)  # dataclass(slots) fields passed by keyword, e.g. _cache=...
    return {n for n in names if _private(n)}


def _own(receiver: ast.expr) -> bool:
    """``self._x``, ``cls._x`` and ``super()._x``: a class's own members, inherited ones included
    (a subclass and its base share them by design)."""
    if isinstance(receiver, ast.Name):
        return receiver.id in {"self", "cls"}
    return (
        isinstance(receiver, ast.Call)
        and isinstance(receiver.func, ast.Name)
        and receiver.func.id == "super"
    )


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def check_file(path: Path, root: Path) -> Iterator[str]:
    """Every private-name violation in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    defined = _defined_here(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node, path.name == "__init__.py")
            for alias in node.names:
                if _private(alias.name):
                    yield f"{path}:{node.lineno}: imports private {alias.name} from {source}"
            hidden = [p for p in source.split(".") if _private(p)]
            if hidden:
                owner = source[: source.index(hidden[0])].rstrip(".")
                if not (package == owner or package.startswith(owner + ".")):
                    yield f"{path}:{node.lineno}: imports from private module {source}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(p) for p in alias.name.split(".")):
                    yield f"{path}:{node.lineno}: imports private module {alias.name}"
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in defined
            and node.attr not in ALLOWED_ATTRIBUTES
            and not _own(node.value)
        ):
            yield f"{path}:{node.lineno}: reaches into another module's private {node.attr}"


def main_found(root: Path) -> list[str]:
    """Every violation under ``root`` (a folder whose subfolders are top-level packages)."""
    return [line for path in sorted(root.rglob("*.py")) for line in check_file(path, root)]


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path("src")]
    found = [line for root in roots for line in main_found(root)]
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} use(s) of another module's private names", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
