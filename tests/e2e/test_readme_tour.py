"""The README's tour, run as a new user would: every shell and Python block of "A five-minute
tour", in order, against `neocloud up` on a temporary data dir and a free port; and those of
"Running on PostgreSQL" on a scratch database.

A README change that breaks the tour fails here. The tour runs in a scratch directory that looks
like a checkout with `make run` done: `examples/`, `data/` and `src/` link to this repository,
`.venv/bin/activate` puts a `neocloud` (this interpreter, this source) on PATH, `.data` is the
server's data dir. Placeholders like `<node-id>` are filled with the newest id of that kind
(`node_…`) printed by an earlier command. A command that starts a server (`neocloud up`) runs in
the background until it answers, and is stopped; every other command must exit 0 without a
traceback. A worker (`neocloud worker`) is ready when it says so.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

import neocloud
from neocloud.db.engine import Database
from neocloud.db.scratch import scratch_database

REPO = Path(__file__).resolve().parents[2]
SRC = Path(neocloud.__file__).resolve().parents[1]
TOUR = "## A five-minute tour"
POSTGRES = "## Running on PostgreSQL"
PORTS = ("8420", "8500")  # the README's ports, each replaced by a free one
# A placeholder's kind -> the prefix of the ids that fill it.
PREFIXES = {
    "node": "node",
    "org": "org",
    "key": "key",
    "instance": "inst",
    "cluster": "clu",
    "offering": "off",
    "reservation": "rsv",
}
ID_RE = re.compile(r"\b([a-z]{2,5})_[0-9A-HJKMNP-TV-Z]{26}\b")
PLACEHOLDER_RE = re.compile(r"<([a-z]+)-id>")
SERVER_RE = re.compile(r"^(?:\S*/)?neocloud (?:up|worker)\b")
COMMAND_TIMEOUT_S = 120


def readme_blocks(readme: str, heading: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced bash or python block of a section, in order."""
    start = readme.index(heading)
    end = readme.find("\n## ", start + len(heading))
    section = readme[start : end if end != -1 else None]
    blocks = re.findall(r"^```(bash|python)\n(.*?)^```", section, flags=re.S | re.M)
    assert blocks, f"{heading!r} has no code blocks"
    return [(lang, code) for lang, code in blocks]


def shell_commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, blank lines and comments dropped."""
    commands: list[str] = []
    pending = ""
    for line in code.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tour:
    """The scratch checkout, the environment the tour's shell runs in, and what it printed."""

    root: Path
    env: dict[str, str]
    ports: dict[str, str]
    outputs: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)  # `source …`, `T=…`: prefix later commands
    servers: list[Server] = field(default_factory=list)
    replace: dict[str, str] = field(default_factory=dict)  # README text -> the test's
    timings: list[tuple[float, str]] = field(default_factory=list)  # seconds, command

    def fill(self, text: str) -> str:
        for readme_text, ours in self.replace.items():
            text = text.replace(readme_text, ours)
        for readme_port, port in self.ports.items():
            text = re.sub(rf"(?<![\d.]){readme_port}(?!\d)", port, text)
        return PLACEHOLDER_RE.sub(lambda m: self.newest_id(m.group(1)), text)

    def newest_id(self, kind: str) -> str:
        prefix = PREFIXES.get(kind)
        assert prefix is not None, f"the tour uses <{kind}-id>: add its prefix to PREFIXES"
        for output in reversed(self.outputs):
            found = [m.group(0) for m in ID_RE.finditer(output) if m.group(1) == prefix]
            if found:
                return found[0]
        raise AssertionError(f"<{kind}-id>: no earlier command printed a {prefix}_ id")

    def bash(self, command: str, *, timeout: float = COMMAND_TIMEOUT_S) -> str:
        script = "\n".join(["set -eo pipefail", *self.setup, command])
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings.append((time.monotonic() - started, command))
        shown = f"$ {command}\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, f"exit {done.returncode}:\n{shown}"
        assert "Traceback (most recent call last)" not in shown, shown
        self.outputs.append(done.stdout + done.stderr)
        return shown

    def serve(self, command: str) -> None:
        """Start `neocloud up` or `neocloud worker` in the background and wait until it is
        ready: the API answers on its port, or the worker says it runs. An `up` replaces one
        of ours on the same port; an `up` on another port than the tour's first server (the
        big-fleet import) is stopped once it answers."""
        worker = SERVER_RE.match(command) and " worker" in command.split("#")[0]
        match = re.search(r"--port\s+(\d+)", command)
        port = match.group(1) if match else self.env.get("NEOCLOUD_PORT", "8420")
        name = "worker" if worker else port
        for running in [s for s in self.servers if s.name == name]:
            self.stop(running)
        log_path = self.root / f"server-{name}-{len(self.timings)}.log"
        log = log_path.open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(
            ["bash", "-c", "\n".join([*self.setup, f"exec {command}"])],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(name, proc, log, log_path)
        self.servers.append(server)
        deadline = time.monotonic() + 120
        while not (server.said("worker on") if worker else _answers(port)):
            assert proc.poll() is None, f"$ {command}\n{server.output()}"
            assert time.monotonic() < deadline, f"$ {command}: not ready in 120 s"
            time.sleep(0.2)
        assert "Traceback" not in server.output(), server.output()
        self.timings.append((time.monotonic() - started, command))
        self.outputs.append(server.output())
        first = next(s for s in self.servers if s.name != "worker")
        if not worker and first.name != name:
            self.stop(server)

    def stop(self, server: Server) -> None:
        proc = server.proc
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        server.log.close()
        self.servers.remove(server)
        assert "Traceback" not in server.output(), server.output()

    def run_section(self, heading: str, *, min_commands: int) -> None:
        """Run every block of the README section under ``heading``, in order."""
        ran = 0
        for lang, code in readme_blocks((REPO / "README.md").read_text(), heading):
            if lang == "python":
                path = self.root / f"block{ran}.py"
                path.write_text(self.fill(code))
                self.bash(f"{shlex.quote(sys.executable)} {path.name}")
                ran += 1
                continue
            for command in shell_commands(code):
                command = self.fill(command)
                if SERVER_RE.match(command):
                    self.serve(command)
                elif command.startswith(("source ", "export ")) or re.match(
                    r"^[A-Z_]+=\S+$", command
                ):
                    self.setup.append(command)
                else:
                    self.bash(command)
                ran += 1
        assert ran >= min_commands, f"only {ran} commands ran: did the README's blocks change?"


@dataclass
class Server:
    name: str  # its port, or "worker"
    proc: subprocess.Popen[bytes]
    log: BinaryIO
    path: Path

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.path.read_text(errors="replace")

    def said(self, text: str) -> bool:
        return text in self.output()


def _answers(port: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).is_success
    except httpx.TransportError:
        return False


@pytest.fixture
def tour(tmp_path: Path) -> Iterator[Tour]:
    root = tmp_path / "checkout"
    (root / ".venv" / "bin").mkdir(parents=True)
    for name in ("examples", "data", "src"):
        (root / name).symlink_to(REPO / name)
    neocloud_bin = root / ".venv" / "bin" / "neocloud"
    neocloud_bin.write_text(f'#!/bin/sh\nexec {sys.executable} -m neocloud.cli.main "$@"\n')
    neocloud_bin.chmod(0o755)
    (root / ".venv" / "bin" / "activate").write_text(f'export PATH="{neocloud_bin.parent}:$PATH"\n')
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NEOCLOUD_") and k not in ("PYTHONPATH", "COLUMNS")
    }
    env |= {
        "PYTHONPATH": str(SRC),
        "NEOCLOUD_CONFIG": str(tmp_path / "profiles.json"),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
    }
    made = Tour(root, env, {port: str(_free_port()) for port in PORTS})
    try:
        yield made
    finally:
        for server in reversed(made.servers):
            made.stop(server)
        slowest = sorted(made.timings, reverse=True)[:8]
        print(f"tour: {len(made.timings)} commands, {sum(t for t, _ in made.timings):.1f} s")
        print("slowest:", *(f"{s:6.1f} s  {c}" for s, c in slowest), sep="\n")


def test_the_readme_tour_runs(tour: Tour) -> None:
    tour.run_section(TOUR, min_commands=40)


@pytest.mark.postgres
def test_the_readme_postgresql_section_runs(tour: Tour, postgresql_db: Database) -> None:
    """`Running on PostgreSQL` in a shell that ran the tour's `source .venv/bin/activate`, on
    a scratch database in place of the README's, the default port in place of 8420."""
    admin_url = postgresql_db.engine.url.render_as_string(hide_password=False)
    with scratch_database(admin_url, "neocloud_readme") as url:
        readme = (REPO / "README.md").read_text()
        readme_url = re.search(r"NEOCLOUD_DATABASE_URL=(\S+)", readme)
        assert readme_url is not None, "the PostgreSQL section sets NEOCLOUD_DATABASE_URL"
        tour.replace[readme_url.group(1)] = url
        tour.env["NEOCLOUD_PORT"] = tour.ports["8420"]
        tour.setup.append("source .venv/bin/activate")
        tour.run_section(POSTGRES, min_commands=5)
        workers = [s for s in tour.servers if s.name == "worker"]
        assert workers, "the section starts a worker"
        for server in reversed(tour.servers):
            tour.stop(server)
        assert "leases released" in workers[0].output()


def test_placeholders_and_continuations_are_read_as_a_user_would() -> None:
    """The runner's own rules, so that a broken rule cannot make the tour pass vacuously."""
    assert shell_commands("a \\\n  --b 1   # c\n# only a comment\n\nd\n") == [
        "a    --b 1   # c",
        "d",
    ]
    tour = Tour(Path("."), {}, {"8420": "9999", "8500": "9998"})
    tour.outputs = ["node_01JAAAAAAAAAAAAAAAAAAAAAAA", "x org_01JBBBBBBBBBBBBBBBBBBBBBBB"]
    assert tour.fill("nodes get <node-id> --url http://127.0.0.1:8420") == (
        "nodes get node_01JAAAAAAAAAAAAAAAAAAAAAAA --url http://127.0.0.1:9999"
    )
    assert tour.fill("--port 8500 --amount 84200") == "--port 9998 --amount 84200"
    with pytest.raises(AssertionError, match="no earlier command"):
        tour.fill("<instance-id>")
