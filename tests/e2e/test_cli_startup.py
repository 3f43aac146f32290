"""The CLI imports only the command group it runs, and its table of groups is complete."""

from __future__ import annotations

import json
import subprocess
import sys

from neocloud.cli.main import GROUPS, _command_group


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_groups_table_names_every_group_registered() -> None:
    everything = _python(
        "import json\n"
        "from neocloud.cli.main import _register_subcommands, app\n"
        "_register_subcommands()\n"
        "print(json.dumps(sorted(g.name for g in app.registered_groups)))\n"
    )
    assert json.loads(everything) == sorted([*GROUPS, "db"])  # db: main.py's own


def test_a_command_imports_only_its_group() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['neocloud', '-p', 'econ', 'nodes', '--help']\n"
        "from neocloud.cli import main\n"
        "try:\n"
        "    main.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('IMPORTED', 'neocloud.cli.econ' in sys.modules, 'numpy' in sys.modules)\n"
    )
    output = _python(code)
    assert "Usage:" in output
    assert "IMPORTED False False" in output  # -p's value is not the command


def test_command_group_skips_global_options() -> None:
    assert _command_group(["-p", "acme", "invoices", "preview"]) == "invoices"
    assert _command_group(["--profile", "x", "--help"]) is None
    assert _command_group(["nodes", "list", "-p"]) == "nodes"
