"""Slurm on a cluster's members, as text (pure: plain data in, text out).

What ``compute/slurm.py`` runs on each member through its driver: the probe (is Slurm
installed, what hardware ``slurmd -C`` sees, how many GPU device files), the install-and-start
script (munge key from standard input, ``slurm.conf``, ``gres.conf``, ``topology.conf``,
``cgroup.conf``, then ``munged``, ``slurmctld`` on the controller, ``slurmd`` everywhere), the
wait until ``sinfo`` shows every node idle, and the teardown that leaves nothing behind.
Scripts take their values as shell variables set by ``assign`` (quoted), never by formatting
values into the script text; the munge key never appears in any of them.

Reference: https://slurm.schedmd.com/slurm.conf.html, gres.conf.html, topology.conf.html,
cgroup.conf.html (Slurm 22.05, Debian's ``slurm-wlm``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

# Files and directories the platform writes on a member and removes at teardown.
MUNGE_KEY = "/etc/munge/munge.key"
CONF_DIR = "/etc/slurm"
MANAGED_FILES = (
    MUNGE_KEY,
    f"{CONF_DIR}/slurm.conf",
    f"{CONF_DIR}/gres.conf",
    f"{CONF_DIR}/topology.conf",
    f"{CONF_DIR}/cgroup.conf",
    "/etc/systemd/system/slurmd.service.d/neocloud.conf",
)
MANAGED_DIRS = ("/var/spool/slurmctld", "/var/spool/slurmd", "/var/log/slurm", "/run/munge")
DAEMONS = ("slurmctld", "slurmd", "slurmstepd", "munged")
PARTITION = "main"

# Exit statuses of the scripts below, and what each means (``compute/slurm.py`` words them).
PROBE_NOT_INSTALLED = 120
INSTALL_DIRS, INSTALL_KEY, INSTALL_MUNGE, INSTALL_CTLD, INSTALL_SLURMD = 121, 122, 123, 124, 125
WAIT_TIMED_OUT = 126
TEARDOWN_RUNNING, TEARDOWN_FILES = 131, 132
DRAIN_FAILED = 133
# Node states that count as "in service" once a replacement joined: a healthy member may be
# running the tenant's jobs (mixed, allocated) while the new one comes up idle.
SERVING_STATES = ("idle", "mixed", "allocated", "completing")


class SlurmProbeError(ValueError):
    """A member's probe output cannot be read (the message says what is missing)."""


@dataclass(frozen=True, slots=True)
class NodeHardware:
    """What one member offers Slurm: ``slurmd -C``'s figures and its GPU device files."""

    hostname: str  # the machine's short hostname (``hostname -s``)
    cpus: int
    boards: int
    sockets_per_board: int
    cores_per_socket: int
    threads_per_core: int
    real_memory_mib: int
    gpu_files: int  # /dev/nvidia0 … present on the node
    login_uid: int | None  # the tenant's login user's uid there (None: no such user)


@dataclass(frozen=True, slots=True)
class SlurmNode:
    """A member as Slurm knows it: ``name`` (NodeName, the tenant's hostname) at ``address``."""

    name: str
    address: str
    hardware: NodeHardware


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters (for reasons)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def assign(**values: object) -> str:
    """Shell assignments of ``values`` (each quoted), one a line, to prefix a script."""
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())


PROBE = f"""\
for b in slurmd slurmctld munged sinfo; do
  command -v "$b" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 \
    || {{ echo "missing $b"; exit {PROBE_NOT_INSTALLED}; }}
done
id slurm >/dev/null 2>&1 || {{ echo "missing user slurm"; exit {PROBE_NOT_INSTALLED}; }}
id munge >/dev/null 2>&1 || {{ echo "missing user munge"; exit {PROBE_NOT_INSTALLED}; }}
echo "host=$(hostname -s)"
echo "hw=$(PATH="$PATH:/usr/sbin" slurmd -C 2>/dev/null | head -n 1)"
echo "gpus=$(ls /dev 2>/dev/null | grep -c -E '^nvidia[0-9]+$')"
echo "uid=$(id -u "$LOGIN" 2>/dev/null)"
"""

_HW_FIELDS = {
    "CPUs": "cpus",
    "Boards": "boards",
    "SocketsPerBoard": "sockets_per_board",
    "CoresPerSocket": "cores_per_socket",
    "ThreadsPerCore": "threads_per_core",
    "RealMemory": "real_memory_mib",
}


def parse_probe(text: str) -> NodeHardware:
    """The probe's output as hardware; ``SlurmProbeError`` naming what is missing."""
    lines = dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln.split(" ", 1)[0])
    host = lines.get("host", "").strip()
    if not host:
        raise SlurmProbeError("no hostname")
    found = dict(re.findall(r"(\w+)=(\S+)", lines.get("hw", "")))
    values: dict[str, int] = {}
    for key, field in _HW_FIELDS.items():
        if not found.get(key, "").isdigit():
            raise SlurmProbeError(f"slurmd -C gave no {key}")
        values[field] = int(found[key])
    gpus = lines.get("gpus", "0").strip()
    uid = lines.get("uid", "").strip()
    return NodeHardware(
        hostname=host,
        gpu_files=int(gpus) if gpus.isdigit() else 0,
        login_uid=int(uid) if uid.isdigit() else None,
        **values,
    )


def slurm_conf(
    cluster_name: str, controller: SlurmNode, nodes: Sequence[SlurmNode], *, topology: bool
) -> str:
    """``slurm.conf`` for ``nodes`` with ``slurmctld`` on ``controller`` (every node also in
    the partition ``main``). Processes are tracked without cgroups (``proctrack/linuxproc``,
    ``task/none``): the nodes are the tenant's whole machines; jobs are not confined to cores
    or GPUs by the kernel. Finished jobs are recorded in ``/var/log/slurm/jobcomp.log``."""
    gres = any(n.hardware.gpu_files for n in nodes)
    lines = [
        f"# Slurm for cluster {cluster_name}: {len(nodes)} nodes, generated by neocloud",
        f"ClusterName={cluster_name}",
        f"SlurmctldHost={controller.hardware.hostname}({controller.address})",
        "SlurmUser=slurm",
        "AuthType=auth/munge",
        "StateSaveLocation=/var/spool/slurmctld",
        "SlurmdSpoolDir=/var/spool/slurmd",
        "SlurmctldPidFile=/run/slurmctld.pid",
        "SlurmdPidFile=/run/slurmd.pid",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "ReturnToService=2",
        "JobCompType=jobcomp/filetxt",
        "JobCompLoc=/var/log/slurm/jobcomp.log",
        "MailProg=/bin/true",
    ]
    if topology:
        lines.append("TopologyPlugin=topology/tree")
    if gres:
        lines.append("GresTypes=gpu")
    for n in nodes:
        hw = n.hardware
        line = (
            f"NodeName={n.name} NodeAddr={n.address} CPUs={hw.cpus} Boards={hw.boards}"
            f" SocketsPerBoard={hw.sockets_per_board} CoresPerSocket={hw.cores_per_socket}"
            f" ThreadsPerCore={hw.threads_per_core} RealMemory={hw.real_memory_mib}"
        )
        if hw.gpu_files:
            line += f" Gres=gpu:{hw.gpu_files}"
        lines.append(line + " State=UNKNOWN")
    names = ",".join(n.name for n in nodes)
    lines.append(f"PartitionName={PARTITION} Nodes={names} Default=YES MaxTime=INFINITE State=UP")
    return "\n".join(lines) + "\n"


def gres_conf(nodes: Sequence[SlurmNode]) -> str:
    """``gres.conf``: each node's GPUs by device file (Slurm drops a GPU without one)."""
    lines = ["# GPUs per node, generated by neocloud"]
    for n in nodes:
        count = n.hardware.gpu_files
        if count:
            files = "/dev/nvidia0" if count == 1 else f"/dev/nvidia[0-{count - 1}]"
            lines.append(f"NodeName={n.name} Name=gpu File={files}")
    return "\n".join(lines) + "\n"


# The cgroup plugin is loaded by slurmd even when no cgroup plugin tracks or confines tasks;
# cgroup/v1 loads without a mounted hierarchy (servers and containers without one work).
CGROUP_CONF = (
    "# generated by neocloud: no cgroup confinement (see slurm.conf)\nCgroupPlugin=cgroup/v1\n"
)

_STOP = """\
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl stop slurmd slurmctld munge >/dev/null 2>&1
fi
for d in slurmctld slurmd slurmstepd munged; do pkill -x "$d" 2>/dev/null; done
i=0
while [ $i -lt 50 ] && pgrep -x 'slurmctld|slurmd|slurmstepd|munged' >/dev/null 2>&1; do
  sleep 0.2; i=$((i + 1))
done
for d in slurmctld slurmd slurmstepd munged; do pkill -9 -x "$d" 2>/dev/null; done
sleep 0.2
"""

INSTALL = (
    """\
PATH="$PATH:/usr/sbin:/sbin"
"""
    + _STOP
    + f"""\
mkdir -p /etc/munge {CONF_DIR} /var/log/slurm /var/spool/slurmd /var/spool/slurmctld \
  /run/munge /var/log/munge /var/lib/munge || exit {INSTALL_DIRS}
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
old=$(umask); umask 077
cat > {MUNGE_KEY}.new || {{ umask "$old"; exit {INSTALL_KEY}; }}
umask "$old"
[ -s {MUNGE_KEY}.new ] || exit {INSTALL_KEY}
chown munge:munge {MUNGE_KEY}.new && chmod 0400 {MUNGE_KEY}.new \
  && mv -f {MUNGE_KEY}.new {MUNGE_KEY} || exit {INSTALL_KEY}
chown munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
printf '%s' "$SLURM_CONF" > {CONF_DIR}/slurm.conf || exit {INSTALL_DIRS}
printf '%s' "$GRES_CONF" > {CONF_DIR}/gres.conf || exit {INSTALL_DIRS}
printf '%s' "$TOPOLOGY_CONF" > {CONF_DIR}/topology.conf || exit {INSTALL_DIRS}
printf '%s' "$CGROUP_CONF" > {CONF_DIR}/cgroup.conf || exit {INSTALL_DIRS}
chmod 0644 {CONF_DIR}/slurm.conf {CONF_DIR}/gres.conf {CONF_DIR}/topology.conf \
  {CONF_DIR}/cgroup.conf
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  mkdir -p /etc/systemd/system/slurmd.service.d
  printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/slurmd -D -s -N %s\\n' "$NODENAME" \
    > /etc/systemd/system/slurmd.service.d/neocloud.conf
  systemctl daemon-reload
  systemctl restart munge || exit {INSTALL_MUNGE}
  if [ "$ROLE" = controller ]; then systemctl restart slurmctld || exit {INSTALL_CTLD}; fi
  systemctl restart slurmd || exit {INSTALL_SLURMD}
else
  runuser -u munge -- munged </dev/null >/dev/null 2>&1 || exit {INSTALL_MUNGE}
  if [ "$ROLE" = controller ]; then
    slurmctld </dev/null >/dev/null 2>&1 || exit {INSTALL_CTLD}
  fi
  slurmd -N "$NODENAME" </dev/null >/dev/null 2>&1 || exit {INSTALL_SLURMD}
fi
echo started
"""
)

WAIT_IDLE = f"""\
PATH="$PATH:/usr/sbin:/sbin"
end=$(( $(date +%s) + DEADLINE ))
while :; do
  out=$(sinfo -h -N -o '%N %T' 2>&1)
  idle=$(printf '%s\\n' "$out" | awk -v re="^($STATES)$" '$2 ~ re {{print $1}}' | sort -u | wc -l)
  if [ "$idle" -ge "$COUNT" ]; then printf '%s\\n' "$out"; exit 0; fi
  if [ "$(date +%s)" -ge "$end" ]; then printf '%s\\n' "$out"; exit {WAIT_TIMED_OUT}; fi
  sleep 0.5
done
"""

TEARDOWN = (
    _STOP
    + f"""\
rm -f {" ".join(MANAGED_FILES)} {MUNGE_KEY}.new
rm -rf {" ".join(MANAGED_DIRS)}
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
  systemctl daemon-reload >/dev/null 2>&1
fi
left=$(pgrep -a -x 'slurmctld|slurmd|slurmstepd|munged')
if [ -n "$left" ]; then echo "$left"; exit {TEARDOWN_RUNNING}; fi
for f in {" ".join(MANAGED_FILES)} {" ".join(MANAGED_DIRS)}; do
  [ -e "$f" ] && {{ echo "$f"; exit {TEARDOWN_FILES}; }}
done
echo removed
"""
)


def install_script(*, node: SlurmNode, controller: bool, files: dict[str, str]) -> str:
    """The install-and-start script for ``node`` (the munge key comes on standard input)."""
    return (
        assign(
            NODENAME=node.name,
            ROLE="controller" if controller else "node",
            SLURM_CONF=files["slurm.conf"],
            GRES_CONF=files["gres.conf"],
            TOPOLOGY_CONF=files["topology.conf"],
            CGROUP_CONF=files["cgroup.conf"],
        )
        + INSTALL
    )


def wait_script(*, count: int, deadline_s: int, states: Sequence[str] = ("idle",)) -> str:
    """Wait on the controller until ``sinfo`` shows ``count`` nodes in one of ``states``
    (default idle; exit 126 at the deadline, with what ``sinfo`` showed last)."""
    return assign(COUNT=count, DEADLINE=deadline_s, STATES="|".join(states)) + WAIT_IDLE


def probe_script(login_user: str) -> str:
    return assign(LOGIN=login_user) + PROBE


# -- healing: drain a lost member, join its replacement ----------------------------------------

DRAIN = f"""\
PATH="$PATH:/usr/sbin:/sbin"
scontrol update NodeName="$NODE" State=DRAIN Reason="$REASON" 2>&1 || exit {DRAIN_FAILED}
sinfo -h -R -n "$NODE" -o '%n|%E' 2>&1
"""

_WRITE_CONF = f"""\
PATH="$PATH:/usr/sbin:/sbin"
printf '%s' "$SLURM_CONF" > {CONF_DIR}/slurm.conf.new || exit {INSTALL_DIRS}
printf '%s' "$GRES_CONF" > {CONF_DIR}/gres.conf.new || exit {INSTALL_DIRS}
printf '%s' "$TOPOLOGY_CONF" > {CONF_DIR}/topology.conf.new || exit {INSTALL_DIRS}
for f in slurm gres topology; do
  chmod 0644 {CONF_DIR}/$f.conf.new && mv -f {CONF_DIR}/$f.conf.new {CONF_DIR}/$f.conf \
    || exit {INSTALL_DIRS}
done
systemd=no
[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemd=yes
"""

# Restart one daemon by exact name, never touching slurmstepd: a running job's step daemon
# outlives slurmd's restart and reattaches to the new slurmd through the spool directory.
_RESTART = """\
restart() {  # name, then the command that starts it without systemd
  name=$1; shift
  if [ "$systemd" = yes ]; then systemctl restart "$name"; return $?; fi
  pkill -x "$name" 2>/dev/null
  i=0
  while [ $i -lt 100 ] && pgrep -x "$name" >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
  pkill -9 -x "$name" 2>/dev/null
  "$@" </dev/null >/dev/null 2>&1
}
"""

REJOIN_CTLD = (
    _WRITE_CONF
    + _RESTART
    + f"""\
# slurmctld recovers its jobs from /var/spool/slurmctld (kept): running jobs stay running
restart slurmctld slurmctld || exit {INSTALL_CTLD}
echo restarted
"""
)

REJOIN_SLURMD = (
    _WRITE_CONF
    + _RESTART
    + f"""\
restart slurmd slurmd -N "$NODENAME" || exit {INSTALL_SLURMD}
echo restarted
"""
)


def drain_script(*, node: str, reason: str) -> str:
    """Drain ``node`` with ``reason`` (run on the controller); prints ``sinfo -R``'s line."""
    return assign(NODE=node, REASON=one_line(reason, 200)) + DRAIN


def rejoin_script(*, node: str, controller: bool, files: dict[str, str]) -> str:
    """On a member that stays: the new configuration files, then a restart of ``slurmctld``
    (``controller``: Slurm 22.05 needs it when nodes are added or removed) or of ``slurmd``,
    keeping the munge key, the daemons' state and every running job step."""
    values = assign(
        NODENAME=node,
        SLURM_CONF=files["slurm.conf"],
        GRES_CONF=files["gres.conf"],
        TOPOLOGY_CONF=files["topology.conf"],
    )
    return values + (REJOIN_CTLD if controller else REJOIN_SLURMD)
