"""The private-name check that ``make lint`` runs (scripts/check_private_names.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_private_names.py"


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_private_names", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _found(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return [line.split(": ", 1)[1] for line in _checker().main_found(tmp_path)]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from pkg.a import _helper\n", ["imports private _helper from pkg.a"]),
        ("from .a import _helper\n", ["imports private _helper from pkg.a"]),
        ("from pkg.a import helper\n", []),
        (
            "def f(engine):\n    return engine._window(1)\n",
            ["reaches into another module's private _window"],
        ),
        ("class E:\n    def _w(self):\n        return 1\n\ndef f(e: E):\n    return e._w()\n", []),
        ("class E:\n    def f(self):\n        return self._inherited\n", []),
        ("def f(p):\n    return p._replace(x=1)\n", []),
        ("import sys\nframe = sys._getframe(0)\n", []),
        ("from pkg._impl import thing\n", []),  # inside pkg: its own private module
        ("from other._impl import thing\n", ["imports from private module other._impl"]),
    ],
)
def test_each_rule(tmp_path: Path, source: str, expected: list[str]) -> None:
    found = _found(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "", "pkg/b.py": source})
    assert found == expected
