"""The ``ssh`` driver's connection pieces: a session that runs a script as root with a deadline,
the host-key policy (pinned, or trusted on first use), and loading the operator's key. The
steps themselves are in ``drivers/ssh.py``."""

from __future__ import annotations

import base64
import hashlib
import io
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import paramiko

from neocloud.drivers import ssh_commands as sc
from neocloud.drivers.base import NodeRef

OUTPUT_CAP = 1 << 20  # bytes of stdout/stderr kept per command (the last ones)


class SshStepError(Exception):
    """A step cannot go on; the message names the node and what failed (never a secret)."""


class HostKeyRefused(paramiko.SSHException):
    """The server presented a host key the policy refuses (fingerprints, and why)."""

    def __init__(self, presented: str, expected: str, source: str) -> None:
        super().__init__("host key refused")
        self.presented, self.expected, self.source = presented, expected, source


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Pinned: any key other than the pinned one is refused. Otherwise trust on first use:
    the first key a server presents to this driver (this process) is remembered, and a
    different one later is refused."""

    def __init__(
        self,
        remember: Callable[[str, paramiko.PKey], str | None],
        endpoint: str,
        pinned: paramiko.PKey | None,
    ) -> None:
        """``remember(endpoint, key)``: the fingerprint of the key first seen there when it is
        another, else None (and ``key`` is remembered if none was)."""
        self.remember, self.endpoint, self.pinned = remember, endpoint, pinned

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.pinned is not None:
            raise HostKeyRefused(fingerprint(key), fingerprint(self.pinned), "pinned")
        seen = self.remember(self.endpoint, key)
        if seen is not None:
            raise HostKeyRefused(fingerprint(key), seen, "first")


@dataclass(frozen=True, slots=True)
class Completed:
    status: int  # -1: the server closed the channel without an exit status
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        return sc.one_line(sc.output_tail(self.stderr, 1024))


def load_private_key(text: str) -> paramiko.PKey:
    """An OpenSSH or PEM private key (ed25519, ECDSA, RSA). Errors never quote the key."""
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key: paramiko.PKey = cls.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise SshStepError("the operator key is protected by a passphrase") from None
        except (paramiko.SSHException, ValueError, TypeError, IndexError, AssertionError):
            continue
        return key
    raise SshStepError(
        "the operator key is not an OpenSSH or PEM ed25519, ECDSA or RSA private key"
    )


class _CallerStopped(Exception):
    """What a stream's ``on_line`` raised, carried past the connection's own error handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _deliver(on_line: Callable[[str], None], line: bytes) -> None:
    try:
        on_line(line.decode("utf-8", errors="replace"))
    except Exception as exc:
        raise _CallerStopped(exc) from None


class Session:
    """One open connection to a node; ``run`` executes a script as root with a deadline."""

    def __init__(
        self, client: paramiko.SSHClient, node: NodeRef, cfg: sc.SshNodeConfig, timeout: float
    ) -> None:
        self.client, self.node, self.cfg, self.timeout = client, node, cfg, timeout

    @contextmanager
    def _exec(self, script: str, what: str, limit: float) -> Iterator[paramiko.Channel]:
        """A channel running ``script`` as root; the connection's errors become
        ``SshStepError`` naming the node and ``what``; the channel is closed after."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshStepError(f"node {self.node.hostname}: {what}: the connection dropped")
        try:
            chan = transport.open_session(timeout=min(limit, 30.0))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshStepError(
                f"node {self.node.hostname}: {what}: cannot open a session ({type(exc).__name__})"
            ) from None
        try:
            chan.exec_command(sc.as_root(script, self.cfg.user))
            yield chan
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshStepError(
                f"node {self.node.hostname}: {what}: the connection failed ({type(exc).__name__})"
            ) from None
        finally:
            chan.close()

    def run(
        self, script: str, *, what: str, timeout: float | None = None, stdin: bytes | None = None
    ) -> Completed:
        """Run ``script`` with ``sh`` as root; ``SshStepError`` when it cannot be run or does
        not finish within ``timeout`` seconds (default: the driver's command timeout)."""
        limit = self.timeout if timeout is None else timeout
        with self._exec(script, what, limit) as chan:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            return self._collect(chan, limit, what)

    def _collect(self, chan: paramiko.Channel, limit: float, what: str) -> Completed:
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + limit
        fd = chan.fileno()
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
                del out[:-OUTPUT_CAP]
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                del err[:-OUTPUT_CAP]
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SshStepError(
                    f"node {self.node.hostname}: {what} did not finish within {limit:g} s"
                )
            select.select([fd], [], [], min(0.2, remaining))
        return Completed(chan.recv_exit_status(), bytes(out), bytes(err))

    def stream(
        self,
        script: str,
        *,
        what: str,
        timeout: float,
        stdin: bytes,
        on_line: Callable[[str], None],
    ) -> Completed:
        """Run ``script`` as root, sending ``stdin`` and keeping the script's standard input
        open while it runs; each line of its standard output goes to ``on_line`` as it comes
        (``Completed.stdout`` is empty). An exception from ``on_line`` closes the channel (the
        script sees end-of-file on its input) and goes on to the caller."""
        try:
            with self._exec(script, what, timeout) as chan:
                chan.sendall(stdin)
                return self._lines(chan, timeout, what, on_line)
        except _CallerStopped as stopped:  # the caller's own exception, not the connection's
            raise stopped.error from None

    def _lines(
        self, chan: paramiko.Channel, limit: float, what: str, on_line: Callable[[str], None]
    ) -> Completed:
        pending, err = bytearray(), bytearray()
        deadline = time.monotonic() + limit
        fd = chan.fileno()
        while True:
            while chan.recv_ready():
                pending += chan.recv(65536)
                *lines, rest = bytes(pending).split(b"\n")
                pending = bytearray(rest)
                for line in lines:
                    _deliver(on_line, line)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
                del err[:-OUTPUT_CAP]
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SshStepError(
                    f"node {self.node.hostname}: {what} did not finish within {limit:g} s"
                )
            select.select([fd], [], [], min(0.2, remaining))
        if pending:
            _deliver(on_line, bytes(pending))
        return Completed(chan.recv_exit_status(), b"", bytes(err))

    def check(self, script: str, *, what: str, timeout: float | None = None) -> Completed:
        """``run``, and ``SshStepError`` unless it exits 0."""
        done = self.run(script, what=what, timeout=timeout)
        if done.status != 0:
            raise SshStepError(
                f"node {self.node.hostname}: {what} failed (exit {done.status})"
                + (f": {done.err}" if done.err else "")
            )
        return done
