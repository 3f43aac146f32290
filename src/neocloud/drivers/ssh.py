"""The ``ssh`` driver: servers that already run an OS, driven over SSH (paramiko) as root.

The way dstack's SSH fleets and SkyPilot's SSH node pools use existing machines: the operator
registers a server's address and a private key that logs in as root (or as a user with
passwordless sudo); the driver checks the server (health), creates the tenant's login on it
(provision), removes it again (deprovision), cleans it between tenants (wipe) and restarts it
(reboot). What each step does on the server, and what cleaning cannot guarantee, is in
``docs/nodes-ssh.md``; the scripts themselves are in ``drivers/ssh_commands.py``.

Every step is synchronous (the reconciler runs steps in worker threads), opens its own
connection, and has a timeout on the connection and on every command. Steps never raise for a
server's failure: they answer ``StepResult(ok=False, message=...)`` naming the node and the
step. The operator's private key is opened from ``NodeRef.sealed`` at the moment of connecting
and is never logged, raised, returned or kept.
"""

from __future__ import annotations

import base64
import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import paramiko

from neocloud.drivers import ssh_commands as sc
from neocloud.drivers.base import Access, HealthResult, NodeRef, ProvisionRequest, StepResult
from neocloud.drivers.ssh_session import (
    Completed,
    HostKeyPolicy,
    HostKeyRefused,
    Session,
    SshStepError,
    fingerprint,
    load_private_key,
)
from neocloud.kernel.secrets import SealedSecretError, SecretBox

log = logging.getLogger(__name__)


class SshDriver:
    """The ``ssh`` driver (see the module docstring). Timeouts in seconds: ``connect_timeout_s``
    for TCP, the SSH banner and authentication each; ``command_timeout_s`` per command;
    ``user_data_timeout_s`` for a user data script; ``reboot_timeout_s`` for a server to come
    back; ``kill_timeout_s`` for a user's processes to die."""

    def __init__(
        self,
        box: SecretBox,
        *,
        connect_timeout_s: float = 10,
        command_timeout_s: float = 120,
        user_data_timeout_s: float = 600,
        reboot_timeout_s: float = 600,
        kill_timeout_s: float = 15,
        reboot_poll_s: float = 2.0,
        agent: sc.AgentInstall | None = None,
        agent_install_timeout_s: float = 600,
    ) -> None:
        self.box = box
        self.agent = agent  # how burn-in installs the node agent; None: it does not
        self.agent_install_timeout_s = agent_install_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.user_data_timeout_s = user_data_timeout_s
        self.reboot_timeout_s = reboot_timeout_s
        self.kill_timeout_s = kill_timeout_s
        self.reboot_poll_s = reboot_poll_s
        self._host_keys: dict[str, tuple[str, str]] = {}  # endpoint -> (blob, fingerprint)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SshDriver(connect_timeout_s={self.connect_timeout_s:g}, ...)"

    @property
    def shares_nodes(self) -> bool:
        return False  # whole nodes only: a tenant gets root (sudo) on the server

    def remember_host_key(self, endpoint: str, key: paramiko.PKey) -> str | None:
        """Trust on first use: remember ``key`` for ``endpoint`` if none is known; answer the
        fingerprint of the one known when it differs, else None."""
        blob = f"{key.get_name()} {key.get_base64()}"
        with self._lock:
            known = self._host_keys.setdefault(endpoint, (blob, fingerprint(key)))
        return None if known[0] == blob else known[1]

    def forget_host_key(self, node: NodeRef) -> None:
        """Forget the host key first seen for ``node`` (a reimaged server makes new ones; the
        next connection trusts its new key on first use). A pinned ``host_key`` stays."""
        try:
            endpoint = self._config(node).endpoint
        except SshStepError:
            return
        with self._lock:
            self._host_keys.pop(endpoint, None)

    def operator_public_key(self, node: NodeRef) -> str:
        """The OpenSSH public key line of the node's operator key (for a reimage's seed);
        ``SshStepError`` when the node has none."""
        key = self._operator_key(node)
        return f"{key.get_name()} {key.get_base64()} neocloud-operator"

    # --- connecting -------------------------------------------------------------------------

    def _config(self, node: NodeRef) -> sc.SshNodeConfig:
        try:
            return sc.SshNodeConfig.from_mapping(node.config)
        except sc.SshConfigError as exc:
            raise SshStepError(f"node {node.hostname}: {exc}") from None

    def _operator_key(self, node: NodeRef) -> paramiko.PKey:
        if not node.sealed:
            raise SshStepError(f"node {node.hostname}: no operator key is registered")
        try:
            creds = self.box.open(node.sealed)
        except SealedSecretError as exc:
            raise SshStepError(f"node {node.hostname}: {exc}") from None
        text = creds.get("private_key")
        if not isinstance(text, str) or not text.strip():
            raise SshStepError(f"node {node.hostname}: its credentials hold no private_key")
        try:
            return load_private_key(text)
        except SshStepError as exc:
            raise SshStepError(f"node {node.hostname}: {exc}") from None

    def _tcp(self, node: NodeRef, cfg: sc.SshNodeConfig) -> socket.socket:
        where = f"node {node.hostname} ({cfg.endpoint}) unreachable"
        try:
            return socket.create_connection((cfg.address, cfg.port), timeout=self.connect_timeout_s)
        except TimeoutError:
            raise SshStepError(f"{where}: no answer within {self.connect_timeout_s:g} s") from None
        except ConnectionRefusedError:
            raise SshStepError(f"{where}: connection refused") from None
        except socket.gaierror:
            raise SshStepError(f"{where}: cannot resolve the address") from None
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            raise SshStepError(f"{where}: {reason}") from None

    @contextmanager
    def connect(self, node: NodeRef) -> Iterator[Session]:
        """An authenticated session to ``node`` as its operator user (root through sudo)."""
        cfg = self._config(node)
        key = self._operator_key(node)
        pinned = None
        if cfg.host_key is not None:
            pinned = paramiko.PKey.from_type_string(
                cfg.host_key.key_type, base64.b64decode(cfg.host_key.blob)
            )
        client = paramiko.SSHClient()
        name = cfg.address if cfg.port == 22 else f"[{cfg.address}]:{cfg.port}"
        if pinned is not None:
            client.get_host_keys().add(name, pinned.get_name(), pinned)
        policy = HostKeyPolicy(self.remember_host_key, cfg.endpoint, pinned)
        client.set_missing_host_key_policy(policy)
        where = f"node {node.hostname} ({cfg.endpoint})"
        try:
            sock = self._tcp(node, cfg)
            try:
                client.connect(
                    cfg.address,
                    port=cfg.port,
                    username=cfg.user,
                    pkey=key,
                    sock=sock,
                    timeout=self.connect_timeout_s,
                    banner_timeout=self.connect_timeout_s,
                    auth_timeout=self.connect_timeout_s,
                    channel_timeout=self.connect_timeout_s,
                    allow_agent=False,
                    look_for_keys=False,
                )
            except paramiko.AuthenticationException:
                raise SshStepError(
                    f"{where} refused the operator key: authentication failed (user {cfg.user})"
                ) from None
            except paramiko.BadHostKeyException as exc:
                raise SshStepError(
                    f"{where} presented host key {fingerprint(exc.key)}, not the pinned"
                    f" {fingerprint(exc.expected_key)}: refusing to connect"
                ) from None
            except HostKeyRefused as exc:
                hint = (
                    "the pinned"
                    if exc.source == "pinned"
                    else "the one it presented at first contact (set host_key if it was"
                    " reinstalled)"
                )
                raise SshStepError(
                    f"{where} presented host key {exc.presented}, not {hint} {exc.expected}:"
                    " refusing to connect"
                ) from None
            except (TimeoutError, EOFError, paramiko.SSHException, OSError) as exc:
                raise SshStepError(
                    f"{where} did not complete an SSH handshake within"
                    f" {self.connect_timeout_s:g} s ({type(exc).__name__})"
                ) from None
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(15)
            session = Session(client, node, cfg, self.command_timeout_s)
            if cfg.user != "root":
                done = session.run("true", what="sudo -n true")
                if done.status != 0:
                    raise SshStepError(
                        f"{where}: the operator user {cfg.user} cannot use sudo without a"
                        f" password: {done.err or f'exit {done.status}'}"
                    )
            yield session
        finally:
            client.close()

    def _step(self, node: NodeRef, step: str, body: Callable[[], StepResult]) -> StepResult:
        """Run a step; a failure becomes ``StepResult(False, message)`` (logged, no secret)."""
        started = time.monotonic()
        log.info("ssh driver: %s on node %s", step, node.hostname)
        try:
            result = body()
        except SshStepError as exc:
            # The step broke off (unreachable, key refused, a command failed): what it left on
            # the node is unknown, so no tenant lands there before a repair and a burn-in.
            result = StepResult(False, 0.0, str(exc), repair=True)
        except Exception as exc:  # a bug or an unexpected library error: never a traceback
            # with the credentials in its locals reaching a log
            result = StepResult(
                False,
                0.0,
                f"node {node.hostname}: {step} failed: {type(exc).__name__}",
                repair=True,
            )
        log.info(
            "ssh driver: %s on node %s %s in %.1f s%s",
            step,
            node.hostname,
            "succeeded" if result.ok else "failed",
            time.monotonic() - started,
            "" if result.ok else f": {result.message}",
        )
        return result

    # --- steps --------------------------------------------------------------------------------

    def power(self, node: NodeRef, *, on: bool) -> StepResult:
        return StepResult(True, 0.0, message="the ssh driver does not switch power")

    def health(self, node: NodeRef) -> HealthResult:
        checks: dict[str, str] = {}
        try:
            with self.connect(node) as session:
                checks["reachable"] = "pass"
                session.check("true", what="health: true")
                checks["command"] = "pass"
                disk = session.run(sc.HEALTH_DISK, what="health: disk")
                if disk.status != 0:
                    checks["disk"] = "fail"
                    return HealthResult(
                        False,
                        checks,
                        f"node {node.hostname}: health: /var/tmp is not writable"
                        f" (exit {disk.status}){': ' + disk.err if disk.err else ''}",
                    )
                checks["disk"] = "pass"
                return self._gpu_health(node, session, checks)
        except SshStepError as exc:
            checks.setdefault("reachable", "fail")
            if checks["reachable"] == "pass":
                checks.setdefault("command", "fail")
            return HealthResult(False, checks, str(exc))
        except Exception as exc:  # never a traceback with credentials in its locals
            return HealthResult(
                False, checks, f"node {node.hostname}: health failed: {type(exc).__name__}"
            )

    def _gpu_health(self, node: NodeRef, session: Session, checks: dict[str, str]) -> HealthResult:
        if session.cfg.gpu_check == "none":
            checks["gpu"] = "warn"
            return HealthResult(True, checks, "gpu check skipped (gpu_check: none)")
        if node.role != "gpu":  # a storage or service node: no GPUs to look for
            return HealthResult(True, checks, f"gpu check skipped: a {node.role} node has no GPUs")
        done = session.run(sc.HEALTH_GPU, what="health: nvidia-smi")
        if done.status == 127:
            checks["gpu"] = "fail"
            return HealthResult(
                False,
                checks,
                f"node {node.hostname}: health: nvidia-smi is not installed"
                " (set gpu_check: none for a server without GPUs)",
            )
        if done.status != 0:
            checks["gpu"] = "fail"
            return HealthResult(
                False,
                checks,
                f"node {node.hostname}: health: nvidia-smi failed (exit {done.status})"
                f"{': ' + done.err if done.err else ''}",
            )
        gpus = sc.parse_gpus(done.out)
        if len(gpus) != node.gpu_count:
            checks["gpu"] = "fail"
            return HealthResult(
                False,
                checks,
                f"node {node.hostname}: health: nvidia-smi lists {len(gpus)} GPUs, the node"
                f" declares {node.gpu_count}: {sc.one_line(sc.describe_gpus(gpus), 600)}",
            )
        checks["gpu"] = "pass"
        return HealthResult(True, checks, None)

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        return self._step(node, "provision", lambda: self._provision(node, request))

    def _provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        try:
            login = sc.valid_user(request.login.user, what="login user")
            workload = sc.valid_workload(request.workload_id)
            host = sc.safe_hostname(request.hostname)
            keys = sc.public_key_lines(
                request.login.public_keys, required=not request.login.service
            )
            kind = sc.user_data_kind(request.user_data) if request.user_data else None
        except sc.SshConfigError as exc:
            raise SshStepError(f"node {node.hostname}: provision: {exc}") from None
        with self.connect(node) as session:
            cfg = session.cfg
            refuse_operator_login(node, login, cfg, "provision")
            values = assign_provision(host, login, workload, keys, cfg.sudo and request.login.sudo)
            done = session.run(values + sc.PROVISION, what="provision: login user")
            if done.status != 0:
                message = provision_failure(node, login, done)
                return self._undo(session, node, login, workload, message, ())
            notes: tuple[str, ...] = ()
            if request.user_data and kind is not None:
                failed, notes = self._user_data(
                    session, node, workload, host, request.user_data, kind
                )
                if failed is not None:
                    return self._undo(session, node, login, workload, failed, notes)
            access = Access(cfg.address, cfg.port, login, (cfg.address,), simulated=False)
            return StepResult(True, 0.0, None, access=access, notes=notes)

    def _user_data(
        self, session: Session, node: NodeRef, workload: str, host: str, data: str, kind: str
    ) -> tuple[str | None, tuple[str, ...]]:
        """Run user data once; answer (failure message or None, notes for the events)."""
        base = sc.assign(STATE=sc.STATE_DIR, W=workload, HOST=host)
        wrote = session.run(
            base + sc.USER_DATA_WRITE, what="provision: write user data", stdin=data.encode()
        )
        if wrote.status != 0:
            return (
                f"node {node.hostname}: provision: writing the user data failed"
                f" (exit {wrote.status}){': ' + wrote.err if wrote.err else ''}",
                (),
            )
        limit = int(self.user_data_timeout_s)
        body = sc.USER_DATA_RUN_SCRIPT if kind == "script" else sc.USER_DATA_RUN_CLOUD_INIT
        ran = session.run(
            base + sc.assign(LIMIT=limit) + body,
            what="provision: user data",
            timeout=self.user_data_timeout_s + 30,
        )
        if ran.status == 120:
            return (
                f"node {node.hostname}: provision: #cloud-config user data needs cloud-init,"
                " which this server does not have",
                (),
            )
        if ran.status != 0:
            return (
                f"node {node.hostname}: provision: running the user data failed"
                f" (exit {ran.status}){': ' + ran.err if ran.err else ''}",
                (),
            )
        try:
            code = int(ran.out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return (f"node {node.hostname}: provision: user data gave no exit status", ())
        tail_run = session.run(base + sc.USER_DATA_TAIL, what="provision: user data output")
        tail = sc.output_tail(tail_run.stdout)
        what = "user data" if kind == "script" else "cloud-init"
        notes = (
            f"{what} exited {code}",
            f"{what} output (last 2 KiB):\n{tail}" if tail else f"{what} wrote no output",
        )
        if code == 124:
            return (f"{what} timed out after {limit} s: {sc.one_line(tail, 600)}", notes)
        if code != 0:
            return (f"{what} exited {code}: {sc.one_line(tail, 600)}", notes)
        return None, notes

    def _undo(
        self,
        session: Session,
        node: NodeRef,
        login: str,
        workload: str,
        message: str,
        notes: tuple[str, ...],
    ) -> StepResult:
        """A provision failed: remove what it did for this workload; repair if that fails."""
        try:
            problem = self._remove_login(session, node, login, workload)
        except SshStepError as exc:
            problem = str(exc)
        if problem is None:
            return StepResult(False, 0.0, message, notes=notes)
        return StepResult(
            False,
            0.0,
            f"{message}; cleaning up after it failed too: {problem}",
            notes=notes,
            repair=True,
        )

    def _remove_login(
        self, session: Session, node: NodeRef, login: str, workload: str
    ) -> str | None:
        """Kill the login's processes and remove it (only if it is this workload's); answer
        what went wrong, or None."""
        script = (
            sc.assign(
                LOGIN=login,
                W=workload,
                GECOS=sc.tenant_gecos(workload),
                STATE=sc.STATE_DIR,
                DEADLINE=int(self.kill_timeout_s),
            )
            + sc.DEPROVISION
        )
        done = session.run(
            script, what="remove login", timeout=self.command_timeout_s + self.kill_timeout_s
        )
        if done.status == 0:
            return None
        if done.status == 130:
            pids = done.out.split()
            return (
                f"node {node.hostname}: could not kill {len(pids)} processes of {login}:"
                f" {' '.join(pids[:50])}"
            )
        reasons = {
            132: f"user {login} still exists after userdel",
            133: f"the home directory of {login} is still there after userdel",
        }
        reason = reasons.get(done.status, f"removing user {login} failed (exit {done.status})")
        return f"node {node.hostname}: {reason}{': ' + done.err if done.err else ''}"

    def deprovision(self, node: NodeRef, *, workload_id: str, login_user: str) -> StepResult:
        return self._step(
            node, "deprovision", lambda: self._deprovision(node, workload_id, login_user)
        )

    def _deprovision(self, node: NodeRef, workload_id: str, login_user: str) -> StepResult:
        try:
            login = sc.valid_user(login_user, what="login user")
            workload = sc.valid_workload(workload_id)
        except sc.SshConfigError as exc:
            raise SshStepError(f"node {node.hostname}: deprovision: {exc}") from None
        with self.connect(node) as session:
            refuse_operator_login(node, login, session.cfg, "deprovision")
            problem = self._remove_login(session, node, login, workload)
            if problem is not None:
                return StepResult(False, 0.0, problem)
            gone = session.run(f"id {shlex.quote(login)} >/dev/null 2>&1", what="deprovision: id")
            # `id` succeeding now means a user of that name is there that is not this
            # workload's (left alone): say so, it is not a failure of this workload's stop.
            note = () if gone.status != 0 else (f"user {login} is not this workload's; left alone",)
            return StepResult(True, 0.0, None, notes=note)

    def reboot(self, node: NodeRef, *, workload_id: str) -> StepResult:
        return self._step(node, "reboot", lambda: self._reboot(node))

    def _reboot(self, node: NodeRef) -> StepResult:
        with self.connect(node) as session:
            before = sc.parse_boot_marker(
                session.check(sc.BOOT_MARKER, what="reboot: boot marker").out
            )
            session.check(
                sc.assign(CMD=session.cfg.reboot_command) + sc.REBOOT, what="reboot: start"
            )
        started = time.monotonic()
        deadline = started + self.reboot_timeout_s
        last = "it did not answer"
        while time.monotonic() < deadline:
            time.sleep(self.reboot_poll_s)
            try:
                with self.connect(node) as session:
                    now = sc.parse_boot_marker(
                        session.check(sc.BOOT_MARKER, what="reboot: boot marker").out
                    )
            except (SshStepError, sc.SshConfigError) as exc:
                last = str(exc)
                continue
            if now != before:
                took = time.monotonic() - started
                return StepResult(True, 0.0, f"node {node.hostname} is back after {took:.0f} s")
            last = "it answers but has not restarted"
        return StepResult(
            False,
            0.0,
            f"node {node.hostname} did not come back over SSH within"
            f" {self.reboot_timeout_s:g} s after its reboot ({last})",
        )

    def wipe(self, node: NodeRef) -> StepResult:
        return self._step(node, "wipe", lambda: self._wipe(node))

    def _wipe(self, node: NodeRef) -> StepResult:
        try:
            host = sc.safe_hostname(node.hostname)
        except sc.SshConfigError:
            host = "localhost"
        problems: list[str] = []
        with self.connect(node) as session:
            users = session.run(
                sc.assign(
                    PREFIX=sc.TENANT_GECOS_PREFIX,
                    OPERATOR=session.cfg.user,
                    STATE=sc.STATE_DIR,
                    HOST=host,
                    DEADLINE=int(self.kill_timeout_s),
                )
                + sc.WIPE_USERS,
                what="wipe: tenant users",
                timeout=self.command_timeout_s + self.kill_timeout_s,
            )
            if users.status != 0:
                lines = [sc.one_line(x) for x in users.out.splitlines() if x.strip()]
                problems.append(
                    "tenant users not removed: "
                    + ("; ".join(lines) or f"exit {users.status} {users.err}")
                )
            paths = session.run(sc.wipe_paths_script(session.cfg.scratch_paths), what="wipe: paths")
            if paths.status != 0:
                lines = [sc.one_line(x) for x in paths.out.splitlines() if x.strip()]
                problems.append(
                    "not emptied: " + ("; ".join(lines) or f"exit {paths.status} {paths.err}")
                )
            if session.cfg.gpu_check != "none":
                problems += self._gpus_idle(session)
        if problems:
            return StepResult(False, 0.0, f"node {node.hostname}: wipe: " + "; ".join(problems))
        return StepResult(True, 0.0, None)

    # --- the node agent ---------------------------------------------------------------------

    @property
    def installs_agent(self) -> bool:
        """Whether burn-in should install the agent on this driver's nodes."""
        return self.agent is not None

    def install_agent(
        self, node: NodeRef, *, control_plane_url: str, token: str, recorded: str | None
    ) -> StepResult:
        """Put the agent's code on the node (``self.agent`` says how), write its ``token`` to a
        root-only file (through stdin: never on a command line, never logged), and (re)start
        it as a service: a systemd unit where systemd runs the node, else a supervised
        background process. ``recorded``: a recorded GPU source (reported simulated)."""
        return self._step(
            node,
            "install agent",
            lambda: self._install_agent(node, control_plane_url, token, recorded),
        )

    def _install_agent(
        self, node: NodeRef, url: str, token: str, recorded: str | None
    ) -> StepResult:
        install = self.agent
        if install is None:
            return StepResult(False, 0.0, f"node {node.hostname}: agent install is off")
        try:
            env = sc.agent_env(
                control_plane_url=url, node_id=node.id, recorded=recorded, install=install
            )
            wheel = (
                sc.wheel_name(install.wheel) if install.mode == "wheel" and install.wheel else None
            )
        except sc.SshConfigError as exc:
            raise SshStepError(f"node {node.hostname}: install agent: {exc}") from None
        where = f"node {node.hostname}: install agent"
        with self.connect(node) as session:
            if wheel is not None and install.wheel is not None:
                try:
                    with open(install.wheel, "rb") as fh:
                        data = fh.read()
                except OSError as exc:
                    raise SshStepError(
                        f"{where}: cannot read the wheel {install.wheel}:"
                        f" {exc.strerror or type(exc).__name__}"
                    ) from None
                done = session.run(
                    sc.assign(WHEEL=wheel, PY=install.python) + sc.AGENT_INSTALL_WHEEL,
                    what="install agent: wheel",
                    stdin=data,
                    timeout=self.agent_install_timeout_s,
                )
            else:
                done = session.run(
                    sc.assign(PY=install.python, PP=install.pythonpath or "")
                    + sc.AGENT_CHECK_PYTHONPATH,
                    what="install agent: check python",
                )
            if done.status != 0:
                detail = sc.one_line(sc.output_tail(done.stdout + done.stderr, 600), 400)
                reasons = {
                    150: f"neocloud's agent cannot be imported with {install.node_python}",
                    151: f"cannot make the venv {sc.AGENT_VENV} with {install.python}",
                    152: f"pip could not install {wheel}",
                }
                reason = reasons.get(done.status, f"exit {done.status}")
                return StepResult(False, 0.0, f"{where}: {reason}{': ' + detail if detail else ''}")
            wrote = session.run(
                sc.AGENT_TOKEN_WRITE, what="install agent: token", stdin=token.encode()
            )
            if wrote.status != 0:
                return StepResult(
                    False,
                    0.0,
                    f"{where}: writing {sc.AGENT_TOKEN_FILE} failed (exit {wrote.status})"
                    f"{': ' + wrote.err if wrote.err else ''}",
                )
            started = session.run(sc.agent_configure_script(env), what="install agent: start")
            mode = started.out.strip().splitlines()[-1] if started.out.strip() else ""
            if started.status != 0 or mode not in ("systemd", "supervised"):
                return StepResult(
                    False,
                    0.0,
                    f"{where}: the agent did not start (exit {started.status})"
                    f"{': ' + started.err if started.err else ''}",
                )
        how = "systemd unit neocloud-agent" if mode == "systemd" else "supervised process"
        return StepResult(True, 0.0, f"agent started on node {node.hostname} ({how})", notes=(how,))

    def _gpus_idle(self, session: Session) -> list[str]:
        done = session.run(sc.GPU_APPS_QUERY, what="wipe: GPU processes")
        if done.status != 0:
            return [f"nvidia-smi failed (exit {done.status}){': ' + done.err if done.err else ''}"]
        pids = [p.strip() for p in done.out.splitlines() if p.strip()]
        if pids:
            return [f"GPUs not idle: compute processes {' '.join(pids[:50])}"]
        return []

    # --- inventory (``neocloud nodes inspect``) ---------------------------------------------

    INSPECT_SCRIPT = (
        "printf 'hostname=%s\\n' \"$(hostname)\"\n"
        "printf 'kernel=%s\\n' \"$(uname -r)\"\n"
        'printf \'os=%s\\n\' "$( (. /etc/os-release && echo "$PRETTY_NAME") 2>/dev/null)"\n'
        "printf 'cpus=%s\\n' \"$(nproc)\"\n"
        "printf 'cpu_model=%s\\n' \"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo"
        ' | head -n 1)"\n'
        "printf 'mem_kib=%s\\n' \"$(sed -n 's/^MemTotal:[[:space:]]*\\([0-9]*\\) kB/\\1/p'"
        ' /proc/meminfo)"\n'
        "if ! command -v nvidia-smi >/dev/null 2>&1; then echo nvidia_smi=absent;\n"
        "elif g=$(nvidia-smi --query-gpu=index,name,uuid,memory.total"
        " --format=csv,noheader,nounits 2>&1); then printf '%s\\n' \"$g\" | sed 's/^/gpu=/';\n"
        'else echo "nvidia_smi=failed"; fi\n'
    )

    def inspect(self, node: NodeRef) -> dict[str, object]:
        """A small inventory read over SSH: hostname, kernel, OS, CPUs (count, model), memory
        (GiB), and the GPUs ``nvidia-smi`` lists (index, name, UUID, memory MiB);
        ``gpus`` is ``None`` where nvidia-smi is absent or fails (``nvidia_smi`` says which).
        ``SshStepError`` when the node cannot be reached or the script cannot run."""
        with self.connect(node) as session:
            done = session.check(self.INSPECT_SCRIPT, what="inspect")
        facts: dict[str, str] = {}
        gpus: list[dict[str, object]] = []
        for line in done.out.splitlines():
            key, _, value = line.partition("=")
            if key == "gpu":
                parts = [p.strip() for p in value.split(",")]
                if len(parts) >= 4:
                    index, name, uuid, memory = parts[:4]
                    gpus.append(
                        {
                            "index": int(index) if index.isdigit() else index,
                            "name": name,
                            "uuid": uuid,
                            "memory_mib": int(memory) if memory.isdigit() else None,
                        }
                    )
            elif key:
                facts[key] = sc.one_line(value, 200)
        smi = facts.get("nvidia_smi", "ok")
        mem_kib = facts.get("mem_kib", "")
        cpus = facts.get("cpus", "")
        return {
            "hostname": facts.get("hostname") or None,
            "kernel": facts.get("kernel") or None,
            "os": facts.get("os") or None,
            "cpus": {
                "count": int(cpus) if cpus.isdigit() else None,
                "model": facts.get("cpu_model") or None,
            },
            "memory_gib": round(int(mem_kib) / 1024**2, 1) if mem_kib.isdigit() else None,
            "nvidia_smi": smi,
            "gpus": gpus if smi == "ok" else None,
        }

    # --- run_root (the Executor capability) ------------------------------------------------

    def run_root(
        self, node: NodeRef, script: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]:
        """Run ``script`` with ``sh`` as root on ``node`` (``drivers.base.Executor``): its exit
        status and its output (stdout, then stderr, each its last 64 KiB); -1 and a message
        naming the node when it cannot be run or does not finish within ``timeout_s``.
        ``stdin`` reaches the script's standard input only (a secret never goes on a command
        line, which other users of the server could read in ``ps``)."""
        try:
            with self.connect(node) as session:
                done = session.run(script, what="run_root", timeout=timeout_s, stdin=stdin)
        except SshStepError as exc:
            return -1, str(exc)
        except Exception as exc:  # never a traceback with credentials in its locals
            return -1, f"node {node.hostname}: run_root failed: {type(exc).__name__}"
        out = sc.output_tail(done.stdout, 65536)
        err = sc.output_tail(done.stderr, 65536)
        return done.status, out + (("\n" + err) if err.strip() else "")

    # --- stream_root (the Streamer capability) ---------------------------------------------

    def stream_root(
        self,
        node: NodeRef,
        script: str,
        *,
        timeout_s: float,
        stdin: bytes,
        on_line: Callable[[str], None],
    ) -> tuple[int, str]:
        """Run ``script`` as root on ``node``, its output line by line to ``on_line``
        (``drivers.base.Streamer``): its exit status and the last of its standard error; -1
        and a message naming the node when it cannot be run or does not finish in time. What
        ``on_line`` raises goes on to the caller once the connection is closed."""
        try:
            with self.connect(node) as session:
                done = session.stream(
                    script, what="stream_root", timeout=timeout_s, stdin=stdin, on_line=on_line
                )
        except SshStepError as exc:
            return -1, str(exc)
        return done.status, sc.output_tail(done.stderr, 65536)


def assign_provision(host: str, login: str, workload: str, keys: str, sudo: bool) -> str:
    return sc.assign(
        HOST=host, LOGIN=login, GECOS=sc.tenant_gecos(workload), KEYS=keys, SUDO=int(sudo)
    )


def provision_failure(node: NodeRef, login: str, done: Completed) -> str:
    """The message for the provision script's exit status."""
    where = f"node {node.hostname}: provision"
    reasons: dict[int, str] = {
        110: f"user {login} already exists and is not this workload's (GECOS {done.err!r})",
        111: f"cannot create ~/.ssh for {login}",
        112: "visudo refused the sudo rule",
        113: "sudo is not installed on the server, and the node gives tenants sudo",
        114: f"the home directory of {login} is not a safe path",
        115: "sudo does not read /etc/sudoers.d (no @includedir in /etc/sudoers)",
        116: f"/home/{login} exists without its user (left from before?); not handed over",
    }
    reason = reasons.get(done.status)
    if reason is not None:
        return f"{where}: {reason}"
    detail = f": {done.err}" if done.err else ""
    return f"{where}: creating the login failed (exit {done.status}){detail}"


def refuse_operator_login(node: NodeRef, login: str, cfg: sc.SshNodeConfig, step: str) -> None:
    """root and the operator's own login are never a tenant's (nor removed as one)."""
    if login in ("root", cfg.user):
        raise SshStepError(
            f"node {node.hostname}: {step}: login user {login} is the operator's, never a tenant's"
        )
