"""The README's tour, run as a new user would: every shell and Python block of "A five-minute
tour", in order, against `neocloud up` on a temporary data dir and a free port.

A README change that breaks the tour fails here. The tour runs in a scratch directory that looks
like a checkout with `make run` done: `examples/`, `data/` and `src/` link to this repository,
`.venv/bin/activate` puts a `neocloud` (this interpreter, this source) on PATH, `.data` is the
server's data dir. Placeholders like `<node-id>` are filled with the newest id of that kind
(`node_…`) printed by an earlier command. A command that starts a server (`neocloud up`) runs in
the background until it answers, and is stopped; every other command must exit 0 without a
traceback.
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

REPO = Path(__file__).resolve().parents[2]
SRC = Path(neocloud.__file__).resolve().parents[1]
TOUR = "## A five-minute tour"
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
SERVER_RE = re.compile(r"^(?:\S*/)?neocloud up\b")
COMMAND_TIMEOUT_S = 120


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced bash or python block of the tour section, in order."""
    start = readme.index(TOUR)
    end = readme.find("\n## ", start + len(TOUR))
    section = readme[start : end if end != -1 else None]
    blocks = re.findall(r"^```(bash|python)\n(.*?)^```", section, flags=re.S | re.M)
    assert blocks, "the tour has no code blocks"
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
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[BinaryIO] = field(default_factory=list)
    timings: list[tuple[float, str]] = field(default_factory=list)  # seconds, command

    def fill(self, text: str) -> str:
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
        """Start a server command in the background and wait until its port answers."""
        match = re.search(r"--port\s+(\d+)", command)
        port = match.group(1) if match else "8420"
        log = (self.root / f"server-{port}.log").open("wb")
        self.logs.append(log)
        started = time.monotonic()
        proc = subprocess.Popen(
            ["bash", "-c", "\n".join([*self.setup, f"exec {command}"])],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.servers.append(proc)
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"$ {command}\n{self.log(port)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"$ {command}: no answer in 120 s"
            time.sleep(0.2)
        assert "Traceback" not in self.log(port), self.log(port)
        self.timings.append((time.monotonic() - started, command))
        self.outputs.append(self.log(port))

    def log(self, port: str) -> str:
        return (self.root / f"server-{port}.log").read_text(errors="replace")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


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
        for proc in reversed(made.servers):
            made.stop(proc)
        for log in made.logs:
            log.close()
        slowest = sorted(made.timings, reverse=True)[:8]
        print("slowest tour commands:", *(f"{s:6.1f} s  {c}" for s, c in slowest), sep="\n")


def test_the_readme_tour_runs(tour: Tour) -> None:
    readme = (REPO / "README.md").read_text()
    ran = 0
    for lang, code in tour_blocks(readme):
        if lang == "python":
            path = tour.root / f"block{ran}.py"
            path.write_text(tour.fill(code))
            tour.bash(f"{shlex.quote(sys.executable)} {path.name}")
            ran += 1
            continue
        for command in shell_commands(code):
            command = tour.fill(command)
            if SERVER_RE.match(command):
                tour.serve(command)
                if len(tour.servers) > 1:  # the tour's first server stays up for the rest
                    tour.stop(tour.servers.pop())
            elif command.startswith(("source ", "export ")) or re.match(r"^[A-Z_]+=\S+$", command):
                tour.setup.append(command)
            else:
                tour.bash(command)
            ran += 1
    assert ran >= 40, f"only {ran} tour commands ran: did the README's blocks change shape?"


def test_placeholders_and_continuations_are_read_as_a_user_would() -> None:
    """The runner's own rules, so that a broken rule cannot make the tour pass vacuously."""
    assert shell_commands("a \\\n  --b 1   # c\n# only a comment\n\nd\n") == [
        "a   --b 1   # c",
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
