"""What the studio's ``node`` runners share (fine-tunes: ``finetuning/node.py``; batches:
``batches/node.py``): their settings, staging files on a node whole through its driver's
``Executor``, and finding and reaching the job's node.

Staged files are written with ``tar`` as root into ``<target>.part`` and renamed into place only
when complete, so a half-copied directory is never used: readable by all (a base model, the
package's code, kept per node by digest) or owned by the job's login user with mode 700 (a
job's own files, removed after it).
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neocloud.compute.jobs import job_node
from neocloud.db.engine import Database
from neocloud.drivers.base import Drivers, Executor, NodeRef, Streamer
from neocloud.kernel.settings import Settings
from neocloud.studio.capacity import WAITING


class NodeUnreachable(Exception):
    """The job's node could not be reached (or holds no node now): the job waits, saying why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NodeRunFailed(Exception):
    """The job's work exited with an error on the node; the message says where and why."""


class NotOnNode(Exception):
    """The job's node cannot run commands (the simulator): the work runs in the worker."""


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """How jobs run on nodes (``studio_node_*`` settings)."""

    python: str = "python3"  # the node's Python with torch, transformers and peft
    workdir: str = "/var/lib/neocloud/studio"  # where bases and jobs are staged on the node
    stage_timeout_s: float = 600.0  # one staging copy (a base model, a job)
    run_timeout_s: float = 7 * 24 * 3600.0  # one run of a job's work

    @classmethod
    def from_settings(cls, settings: Settings) -> NodeOptions:
        return cls(python=settings.studio_node_python, workdir=settings.studio_node_workdir)


def pack(files: dict[str, bytes], dirs: dict[str, Path] | None = None) -> bytes:
    """A ``.tar.gz`` of ``files`` (name → bytes) and the files under ``dirs`` (prefix → dir)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
        for prefix, root in sorted((dirs or {}).items()):
            for item in sorted(root.rglob("*")):
                if item.is_file() and "__pycache__" not in item.parts:
                    tar.add(item, arcname=f"{prefix}/{item.relative_to(root)}")
    return buffer.getvalue()


def dir_digest(root: Path) -> str:
    """A digest of every file's name and bytes under ``root``."""
    h = hashlib.sha256()
    for item in sorted(root.rglob("*")):
        if item.is_file():
            h.update(str(item.relative_to(root)).encode() + b"\0")
            h.update(hashlib.sha256(item.read_bytes()).digest())
    return h.hexdigest()


def unpack_script(target: str, *, owner: str | None = None) -> str:
    """A root script that writes the ``.tar.gz`` on its standard input to ``target`` whole:
    readable by all (a base model), or ``owner``'s alone (a job's files)."""
    t = shlex.quote(target)
    part = shlex.quote(target + ".part")
    own = (
        f" chown -R {shlex.quote(owner)}: {part}; chmod 700 {part};"
        if owner is not None
        else f" chmod -R a+rX {part};"
    )
    return (
        f"set -e; umask 022; mkdir -p $(dirname {t}); rm -rf {part}; mkdir -p {part};"
        f" tar -xzf - --no-same-owner -C {part};{own} rm -rf {t}; mv {part} {t}"
    )


@dataclass(frozen=True, slots=True)
class NodeTarget:
    """A job's node, its driver (which can stage and stream) and the job's login user."""

    node: NodeRef
    driver: Any  # an Executor and a Streamer
    login: str

    def root(self, script: str, what: str, options: NodeOptions, **kw: Any) -> str:
        """Run a staging ``script`` as root: ``NodeUnreachable`` when the node is not reached,
        ``NodeRunFailed`` when it exits non-zero; its output otherwise."""
        status, out = self.driver.run_root(
            self.node, script, timeout_s=options.stage_timeout_s, **kw
        )
        if status == -1:
            raise NodeUnreachable(f"{WAITING}: {what}: {out}")
        if status != 0:
            raise NodeRunFailed(f"node {self.node.hostname}: {what} failed (exit {status}): {out}")
        return str(out)

    def stage_shared(self, source: Path, target: str, options: NodeOptions) -> None:
        """``source``'s files at ``target`` on the node (readable by all), unless already there."""
        found = self.root(
            f"test -d {shlex.quote(target)} && echo present || true", "staging check", options
        )
        if "present" not in found:
            payload = pack({}, {".": source})
            self.root(unpack_script(target), f"staging {source.name}", options, stdin=payload)

    def run_module(
        self,
        module: str,
        args: list[str],
        *,
        work: str,
        pythonpath: str,
        what: str,
        options: NodeOptions,
        on_message: Callable[[dict[str, Any]], None],
    ) -> None:
        """``python -m module args…`` in ``work`` as the job's login user (never root), each
        JSON line it prints to ``on_message`` until it says ``done``. ``NodeUnreachable`` when
        the connection fails first, ``NodeRunFailed`` when it exits non-zero or stops without
        ``done`` (with its last lines of standard error)."""
        w = shlex.quote(work)
        script = (
            f"cd {w} && exec runuser -u {shlex.quote(self.login)} -- env HOME={w}"
            f" PYTHONPATH={shlex.quote(pythonpath)} PYTHONUNBUFFERED=1"
            f" {shlex.quote(options.python)} -m {module}"
            + "".join(f" {shlex.quote(a)}" for a in args)
        )
        done = False

        def on_line(line: str) -> None:
            nonlocal done
            if not line.startswith("{"):
                return
            message = json.loads(line)
            if message.get("kind") == "done":
                done = True
            else:
                on_message(message)

        status, err = self.driver.stream_root(
            self.node, script, timeout_s=options.run_timeout_s, stdin=b"", on_line=on_line
        )
        host = self.node.hostname
        if status == -1 and not done:
            raise NodeUnreachable(f"{WAITING}: {what} on node {host}: {err}")
        if status != 0 or not done:
            tail = " ".join(err.strip().splitlines()[-3:])[-600:]
            raise NodeRunFailed(
                f"{what} on node {host} failed (exit {status}): {tail or 'no output'}"
            )

    def cleanup(self, work: str) -> None:
        self.driver.run_root(self.node, f"rm -rf {shlex.quote(work)}", timeout_s=60)


def node_target(db: Database, drivers: Drivers, job_id: str) -> NodeTarget:
    """The job's node as a ``NodeTarget``; ``NodeUnreachable`` when the job's instance holds no
    node, ``NotOnNode`` when its driver cannot run commands there."""
    found = job_node(db=db, studio_job_id=job_id)
    if found is None:
        raise NodeUnreachable(f"{WAITING}: the job's instance holds no node")
    node, login = found
    driver = drivers.for_node(node)
    if not isinstance(driver, Streamer) or not isinstance(driver, Executor):
        raise NotOnNode(
            f"Node {node.hostname} ({node.driver} driver) cannot run commands: running"
            " in the worker process"
        )
    return NodeTarget(node, driver, login)
