"""The ``ssh`` driver's pure parts: a node's settings, the names it puts on a server, the shell
scripts each step runs there as root, and how their output is read. No network here, so every
rule is unit-tested without a server (``drivers/ssh.py`` runs these scripts over SSH).

Every value a script needs is validated first and then passed as a shell assignment quoted with
``shlex.quote``; the script bodies themselves are constants, so nothing a tenant or an operator
sends is ever parsed as shell code. Scripts speak POSIX ``sh`` and the usual Linux tools
(``useradd``, ``pkill``, ``find``, ``timeout``), all found on root's ``PATH``.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The GECOS comment of every user the driver creates: ``wipe`` removes exactly these users,
# ``deprovision`` and ``provision`` touch only the one naming their workload.
TENANT_GECOS_PREFIX = "neocloud tenant"
STATE_DIR = "/var/lib/neocloud"  # user data scripts and their output, root only (0700)
# Shared filesystems mounted for a workload (storage's mounts): one file per workload id, one
# mount path a line. Deprovision and wipe unmount them, so no tenant's data outlives its lease
# on a node even when the storage reconciler has not caught up.
MOUNTS_DIR = f"{STATE_DIR}/mounts"
SUDOERS_DIR = "/etc/sudoers.d"
OUTPUT_TAIL_BYTES = 2048
GPU_QUERY = "nvidia-smi --query-gpu=index,name,uuid,memory.used --format=csv,noheader"
GPU_APPS_QUERY = "nvidia-smi --query-compute-apps=pid --format=csv,noheader"
DEFAULT_REBOOT_COMMAND = "systemctl reboot"
GPU_CHECKS = ("nvidia-smi", "none")

# POSIX portable user names as useradd accepts them by default (no dots: sudo ignores files in
# /etc/sudoers.d whose name has one, and the sudo rule is named after the user).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_WORKLOAD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# Directories whose contents a wipe must never delete, whatever the settings say; nor anything
# below the ones in _SYSTEM_TREES.
SYSTEM_DIRS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/snap",
        "/srv",
        "/sys",
        "/usr",
        "/var",
        "/var/lib",
        "/var/log",
        "/var/cache",
        "/var/spool",
    }
)
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sbin", "/sys", "/usr")
_HOST_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
    }
)


class SshConfigError(ValueError):
    """A node's ssh driver settings (or a value a step received) cannot be used."""


def valid_user(name: str, *, what: str = "user") -> str:
    """``name`` when it is a portable POSIX user name (lowercase, digits, ``_``, ``-``; at most
    32; not starting with a digit or ``-``), else ``SshConfigError``."""
    if not isinstance(name, str) or not _USER_RE.match(name):
        raise SshConfigError(
            f"{what} {name!r} is not a POSIX user name (a-z, 0-9, '_', '-'; at most 32;"
            " starting with a letter or '_')"
        )
    return name


def valid_workload(workload_id: str) -> str:
    """A workload id as it appears in file names and the GECOS comment."""
    if not isinstance(workload_id, str) or not _WORKLOAD_RE.match(workload_id):
        raise SshConfigError(f"workload id {workload_id!r} has characters a file name cannot")
    return workload_id


def tenant_gecos(workload_id: str) -> str:
    return f"{TENANT_GECOS_PREFIX} {valid_workload(workload_id)}"


def safe_hostname(name: str) -> str:
    """The hostname a server takes for ``name``: an RFC 1123 label (lowercase letters, digits
    and ``-``, at most 63), other characters turned into ``-``. ``SshConfigError`` when
    nothing usable is left."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.strip().lower()).strip("-")[:63].strip("-")
    if not _LABEL_RE.match(label):
        raise SshConfigError(f"hostname {name!r} has no usable letters or digits")
    return label


def valid_scratch_path(path: object) -> str:
    """An absolute, normalised directory a wipe may empty (never ``/`` or a system dir)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise SshConfigError(f"scratch path {path!r} is not an absolute path")
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    shm = "/dev/shm"  # noqa: S108 - a directory a wipe empties, never a file written here
    if norm == shm or norm.startswith(shm + "/"):
        return norm  # shared memory: world-writable like /tmp, a tenant's files can stay there
    if norm in SYSTEM_DIRS or any(norm.startswith(tree + "/") for tree in _SYSTEM_TREES):
        raise SshConfigError(
            f"scratch path {path!r} is a system directory; a wipe never empties it"
        )
    return norm


def public_key_lines(keys: Sequence[str], *, required: bool = True) -> str:
    """The ``authorized_keys`` text for ``keys`` (one OpenSSH line each); none at all is
    refused unless not ``required`` (a service login nobody logs in with)."""
    lines = []
    for key in keys:
        line = key.strip()
        if not line:
            continue
        if any(c in line for c in "\r\n\x00"):
            raise SshConfigError("a public key spans more than one line")
        lines.append(line)
    if not lines:
        if not required:
            return ""
        raise SshConfigError("the login has no public key: nobody could log in")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class HostKey:
    """A pinned host key: its type and its base64 blob (an OpenSSH public key line)."""

    key_type: str
    blob: str


def parse_host_key(line: str) -> HostKey:
    """``TYPE BASE64 [comment]`` (or a known_hosts line, whose first field is dropped)."""
    fields = line.strip().split()
    if fields and fields[0] not in _HOST_KEY_TYPES and len(fields) >= 3:
        fields = fields[1:]  # a known_hosts line: "host[,host] TYPE BASE64"
    if len(fields) < 2 or fields[0] not in _HOST_KEY_TYPES:
        raise SshConfigError(
            "host_key must be an OpenSSH public host key line (ssh-ed25519, ecdsa-sha2-*,"
            " ssh-rsa: 'TYPE BASE64')"
        )
    if not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", fields[1]):
        raise SshConfigError("host_key's key data is not base64")
    return HostKey(fields[0], fields[1])


@dataclass(frozen=True, slots=True)
class SshNodeConfig:
    """A node's ``ssh`` driver settings (``NodeRef.config``), validated."""

    address: str
    port: int = 22
    user: str = "root"  # the operator login; any other user goes through ``sudo -n``
    gpu_check: str = "nvidia-smi"
    sudo: bool = True  # whether tenants get passwordless sudo
    scratch_paths: tuple[str, ...] = ()
    host_key: HostKey | None = None
    reboot_command: str = DEFAULT_REBOOT_COMMAND

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> SshNodeConfig:
        """Validate ``config``; ``SshConfigError`` names the setting that is wrong."""
        address = config.get("address")
        if not isinstance(address, str) or not address.strip():
            raise SshConfigError("driver setting 'address' is required (the server's address)")
        if any(c.isspace() for c in address.strip()) or address.startswith("-"):
            raise SshConfigError(f"driver setting 'address' {address!r} is not a host name or IP")
        port = config.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SshConfigError(f"driver setting 'port' {port!r} is not a TCP port (1-65535)")
        user = valid_user(config.get("user", "root"), what="driver setting 'user'")
        gpu_check = config.get("gpu_check", "nvidia-smi")
        if gpu_check not in GPU_CHECKS:
            raise SshConfigError(f"driver setting 'gpu_check' {gpu_check!r}: nvidia-smi or none")
        sudo = config.get("sudo", True)
        if not isinstance(sudo, bool):
            raise SshConfigError("driver setting 'sudo' must be true or false")
        scratch = config.get("scratch_paths", ())
        if isinstance(scratch, str) or not isinstance(scratch, list | tuple):
            raise SshConfigError("driver setting 'scratch_paths' must be a list of directories")
        paths = tuple(dict.fromkeys(valid_scratch_path(p) for p in scratch))
        host_key_line = config.get("host_key")
        host_key = None
        if host_key_line is not None:
            if not isinstance(host_key_line, str):
                raise SshConfigError("driver setting 'host_key' must be a public key line")
            host_key = parse_host_key(host_key_line)
        reboot = config.get("reboot_command", DEFAULT_REBOOT_COMMAND)
        if not isinstance(reboot, str) or not reboot.strip() or "\x00" in reboot:
            raise SshConfigError("driver setting 'reboot_command' must be a command line")
        return cls(address.strip(), port, user, gpu_check, sudo, paths, host_key, reboot.strip())

    @property
    def endpoint(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


# --- scripts -------------------------------------------------------------------------------------
# Each is "assignments + constant body"; exit statuses above 100 are the body's own verdicts.


def assign(**values: str | int) -> str:
    """Shell assignments of ``values``, every one quoted."""
    return "".join(f"{name}={shlex.quote(str(value))}\n" for name, value in values.items())


def as_root(script: str, operator_user: str) -> str:
    """The command line that runs ``script`` with ``sh`` as root: directly for root, through
    ``sudo -n`` (never prompting) for any other operator login."""
    command = "sh -c " + shlex.quote(script)
    if operator_user == "root":
        return command
    return "sudo -n -- " + command


HEALTH_DISK = """\
f=$(mktemp /var/tmp/neocloud-health.XXXXXX) || exit 101
if ! echo neocloud > "$f"; then rm -f "$f"; exit 102; fi
rm -f "$f" || exit 103
"""

HEALTH_GPU = "command -v nvidia-smi >/dev/null 2>&1 || exit 127\n" + GPU_QUERY + "\n"


@dataclass(frozen=True, slots=True)
class Gpu:
    index: str
    name: str
    uuid: str
    memory_used: str


def parse_gpus(output: str) -> list[Gpu]:
    """The GPUs ``nvidia-smi --query-gpu=index,name,uuid,memory.used`` lists, one per line."""
    gpus = []
    for line in output.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            parts += [""] * (4 - len(parts))
        gpus.append(Gpu(parts[0], ", ".join(parts[1:-2]) or parts[1], parts[-2], parts[-1]))
    return gpus


def describe_gpus(gpus: Sequence[Gpu]) -> str:
    if not gpus:
        return "none"
    return "; ".join(f"{g.index} {g.name} {g.uuid}" for g in gpus)


# Hostname, a login user, its keys and its sudo rule. Exit 110: the user exists and is not this
# workload's; 111: its ~/.ssh cannot be made safely; 112: visudo refused the rule; 113: sudo is
# not installed but the node gives tenants sudo; 114: the home directory is not a safe path;
# 115: sudo does not grant the rule (/etc/sudoers does not include /etc/sudoers.d); 116: a
# home directory of that name exists without its user.
PROVISION = """\
set -eu
hostname "$HOST"
printf '%s\\n' "$HOST" > /etc/hostname
if [ -f /etc/hosts ]; then
  grep -v ' # neocloud-hostname$' /etc/hosts > /etc/hosts.neocloud || true
  printf '127.0.1.1\\t%s # neocloud-hostname\\n' "$HOST" >> /etc/hosts.neocloud
  cat /etc/hosts.neocloud > /etc/hosts
  rm -f /etc/hosts.neocloud
fi
if getent passwd "$LOGIN" >/dev/null; then
  gecos=$(getent passwd "$LOGIN" | cut -d: -f5)
  [ "$gecos" = "$GECOS" ] || { printf '%s' "$gecos" >&2; exit 110; }
else
  # A home left behind without its user (another tenant's files?) is never handed over.
  [ ! -e "/home/$LOGIN" ] || exit 116
  useradd -m -s /bin/bash -c "$GECOS" "$LOGIN"
fi
home=$(getent passwd "$LOGIN" | cut -d: -f6)
case "$home" in
  /|/bin|/boot|/dev|/etc|/lib|/proc|/root|/sbin|/sys|/usr|/var|'') exit 114 ;;
  */../*|*/..) exit 114 ;;
  /*) ;;
  *) exit 114 ;;
esac
group=$(id -gn "$LOGIN")
[ -d "$home" ] || install -d -m 0750 -o "$LOGIN" -g "$group" "$home"
# A fresh ~/.ssh owned by root while it is written: a symlink planted there is removed, never
# followed (rm does not follow links).
rm -rf -- "$home/.ssh" || exit 111
install -d -m 0700 -o root -g root "$home/.ssh" || exit 111
umask 077
printf '%s' "$KEYS" > "$home/.ssh/authorized_keys"
chmod 0600 "$home/.ssh/authorized_keys"
chown "$LOGIN:$group" "$home/.ssh/authorized_keys"
chown "$LOGIN:$group" "$home/.ssh"
rule="/etc/sudoers.d/neocloud-$LOGIN"
if [ "$SUDO" = 1 ]; then
  command -v sudo >/dev/null 2>&1 || exit 113
  [ -d /etc/sudoers.d ] || install -d -m 0750 /etc/sudoers.d
  printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\\n' "$LOGIN" > "$rule.tmp"
  chmod 0440 "$rule.tmp"
  if command -v visudo >/dev/null 2>&1; then
    visudo -cf "$rule.tmp" >&2 || { rm -f "$rule.tmp"; exit 112; }
  fi
  mv -f "$rule.tmp" "$rule"
  # sudo reads /etc/sudoers.d only where /etc/sudoers includes it: ask sudo itself.
  sudo -n -l -U "$LOGIN" 2>/dev/null | grep -q 'NOPASSWD: ALL' || exit 115
else
  rm -f "$rule"
fi
"""

# Write the user data (stdin) to its file, root only. Exit 0 with "ran" on stdout when a status
# file already exists (it ran once already; user data never runs twice).
USER_DATA_WRITE = """\
set -eu
umask 077
install -d -m 0700 "$STATE"
if [ -e "$STATE/user-data-$W.status" ]; then echo ran; exit 0; fi
cat > "$STATE/user-data-$W.tmp"
chmod 0700 "$STATE/user-data-$W.tmp"
mv -f "$STATE/user-data-$W.tmp" "$STATE/user-data-$W"
"""

# Run the script once, as root, from /, its output to a file (so a daemon it starts, which keeps
# the output open, does not hold the step), under `timeout`; print its exit status.
USER_DATA_RUN_SCRIPT = """\
cd /
if [ ! -e "$STATE/user-data-$W.status" ]; then
  HOME=/root timeout --kill-after=10 "$LIMIT" "$STATE/user-data-$W" \
    </dev/null >"$STATE/user-data-$W.log" 2>&1
  echo $? > "$STATE/user-data-$W.status"
fi
cat "$STATE/user-data-$W.status"
"""

# Hand #cloud-config to cloud-init through its NoCloud seed: the workload id is the instance id
# (a new one, so cloud-init treats this as a first boot), then run its stages once.
USER_DATA_RUN_CLOUD_INIT = """\
command -v cloud-init >/dev/null 2>&1 || exit 120
cd /
if [ ! -e "$STATE/user-data-$W.status" ]; then
  seed=/var/lib/cloud/seed/nocloud
  install -d -m 0700 "$seed"
  install -m 0600 "$STATE/user-data-$W" "$seed/user-data"
  printf 'instance-id: %s\\nlocal-hostname: %s\\n' "$W" "$HOST" > "$seed/meta-data"
  timeout --kill-after=10 "$LIMIT" sh -c \
    'cloud-init clean --logs && cloud-init init --local && cloud-init init &&
     cloud-init modules --mode=config && cloud-init modules --mode=final' \
    </dev/null >"$STATE/user-data-$W.log" 2>&1
  echo $? > "$STATE/user-data-$W.status"
fi
cat "$STATE/user-data-$W.status"
"""

USER_DATA_TAIL = f'tail -c {OUTPUT_TAIL_BYTES} "$STATE/user-data-$W.log" 2>/dev/null || true\n'

# Kill every process of $LOGIN until none is left or $DEADLINE seconds pass (exit 130, printing
# the pids that survived).
KILL_USER = """\
kill_user() {
  end=$(( $(date +%s) + DEADLINE ))
  while :; do
    pkill -KILL -u "$1" 2>/dev/null || true
    pkill -KILL -U "$1" 2>/dev/null || true
    pids=$( { pgrep -u "$1"; pgrep -U "$1"; } 2>/dev/null | sort -un | tr '\\n' ' ')
    [ -z "$pids" ] && return 0
    if [ "$(date +%s)" -ge "$end" ]; then
      printf '%s' "$pids"
      return 130
    fi
    sleep 0.2
  done
}
"""

# Remove one tenant user entirely: jobs, account, home, sudo rule. Exit 131: userdel failed;
# 132: the user still exists; 133: its home is still there.
REMOVE_USER = """\
remove_user() {
  u=$1
  home=$(getent passwd "$u" | cut -d: -f6)
  crontab -r -u "$u" >/dev/null 2>&1 || true
  rm -f "/var/spool/cron/crontabs/$u" "/var/spool/cron/$u"
  if command -v atq >/dev/null 2>&1; then
    for job in $(atq 2>/dev/null | awk -v u="$u" '$NF == u {print $1}'); do
      atrm "$job" 2>/dev/null || true
    done
  fi
  userdel -r "$u" >&2 || userdel -f -r "$u" >&2 || true
  rm -f "/etc/sudoers.d/neocloud-$u" "/var/mail/$u" "/var/spool/mail/$u"
  if getent passwd "$u" >/dev/null || id "$u" >/dev/null 2>&1; then return 132; fi
  # userdel -r leaves a home it could not remove; only a plain path under /home or /srv is
  # removed here (never one with '..' in it: /etc/passwd was the tenant's to edit, with sudo).
  case "$home" in
    */../*|*/..|*/./*) ;;
    /home/?*|/srv/?*) rm -rf -- "$home" ;;
  esac
  case "$home" in
    /|/bin|/boot|/dev|/etc|/home|/lib|/proc|/root|/sbin|/srv|/sys|/usr|/var|'') ;;
    *) if [ -e "$home" ] || [ -L "$home" ]; then return 133; fi ;;
  esac
  return 0
}
"""

# Unmount what storage mounted for workload $W (paths in $STATE/mounts/$W), lazily if busy.
UNMOUNT_WORKLOAD = """\
if [ -f "$STATE/mounts/$W" ]; then
  while IFS= read -r p; do
    [ -n "$p" ] || continue
    if grep -qs " $p fuse" /proc/mounts; then umount "$p" 2>/dev/null || umount -l "$p" || true; fi
  done < "$STATE/mounts/$W"
  rm -f "$STATE/mounts/$W"
fi
"""

# Deprovision one workload's login. Prints "absent" when the user is not there, "foreign GECOS"
# (exit 0) when it is not this workload's (left alone).
DEPROVISION = (
    KILL_USER
    + REMOVE_USER
    + UNMOUNT_WORKLOAD
    + """\
rm -f "$STATE/user-data-$W" "$STATE/user-data-$W.tmp" "$STATE/user-data-$W.log" \
  "$STATE/user-data-$W.status"
if ! getent passwd "$LOGIN" >/dev/null; then
  rm -f "/etc/sudoers.d/neocloud-$LOGIN"
  echo absent
  exit 0
fi
gecos=$(getent passwd "$LOGIN" | cut -d: -f5)
if [ "$gecos" != "$GECOS" ]; then printf 'foreign %s' "$gecos"; exit 0; fi
pids=$(kill_user "$LOGIN") || { printf '%s' "$pids"; exit 130; }
remove_user "$LOGIN"
"""
)

# Undo what a failed provision did for this workload (the user it created, the rule, the files).
PROVISION_UNDO = DEPROVISION

BOOT_MARKER = (
    "cat /proc/sys/kernel/random/boot_id && sed 's/^.*) //' /proc/1/stat | cut -d' ' -f20\n"
)

# Start the reboot detached from this session (the connection drops when it happens), a second
# after this command returned.
REBOOT = """\
setsid sh -c 'sleep 1; exec sh -c "$1"' neocloud-reboot "$CMD" </dev/null >/dev/null 2>&1 &
echo started
"""


def parse_boot_marker(output: str) -> str:
    """boot_id and PID 1's start time: a new value means the server (or its PID namespace)
    started again."""
    fields = output.split()
    if len(fields) != 2:
        raise SshConfigError(f"unexpected boot marker output {output[:80]!r}")
    return f"{fields[0]}/{fields[1]}"


# Wipe: every tenant user gone (exit 140 + "name pids" lines if some process survived, 141 if a
# user could not be removed), then each path in $PATHS (newline separated) emptied: exit 142 with
# the offending path when one resolves to a system directory, 143 when missing, 144 when
# something is left in it.
WIPE_USERS = (
    KILL_USER
    + REMOVE_USER
    + """\
status=0
for f in "$STATE"/mounts/*; do
  [ -f "$f" ] || continue
  while IFS= read -r p; do
    [ -n "$p" ] || continue
    if grep -qs " $p fuse" /proc/mounts; then umount "$p" 2>/dev/null || umount -l "$p" || true; fi
  done < "$f"
  rm -f "$f"
done
uid_min=$(awk '$1 == "UID_MIN" {print $2}' /etc/login.defs 2>/dev/null || true)
case "$uid_min" in ''|*[!0-9]*) uid_min=1000 ;; esac
for entry in $(getent passwd | awk -F: -v p="$PREFIX" 'index($5, p) == 1 {print $1 ":" $3}'); do
  u=${entry%%:*}; uid=${entry##*:}
  # A tenant had root: a system account or the operator's given a tenant comment is reported
  # (the node goes to repair), never removed.
  if [ "$u" = "$OPERATOR" ] || [ "$u" = root ] || [ "$uid" -lt "$uid_min" ]; then
    printf 'user %s (uid %s) has a tenant comment but is not a tenant user\\n' "$u" "$uid"
    status=141; continue
  fi
  if ! pids=$(kill_user "$u"); then
    printf 'could not kill processes of %s: %s\\n' "$u" "$pids"; status=140; continue
  fi
  remove_user "$u"; rc=$?
  case $rc in
    0) ;;
    132) printf 'user %s still exists after userdel\\n' "$u"; status=141 ;;
    133) printf 'the home of %s is still there after userdel\\n' "$u"; status=141 ;;
    *) printf 'removing user %s failed (exit %s)\\n' "$u" "$rc"; status=141 ;;
  esac
done
rm -f "$STATE"/user-data-* 2>/dev/null || true
hostname "$HOST" 2>/dev/null || true
printf '%s\\n' "$HOST" > /etc/hostname 2>/dev/null || true
if [ -f /etc/hosts ]; then
  grep -v ' # neocloud-hostname$' /etc/hosts > /etc/hosts.neocloud || true
  cat /etc/hosts.neocloud > /etc/hosts; rm -f /etc/hosts.neocloud
fi
exit $status
"""
)

# systemd's per-service private /tmp dirs (root's, 0700) stay: removing them breaks running
# services. Everything else goes.
WIPE_PATHS = """\
status=0
printf '%s\\n' "$PATHS" | while IFS= read -r p; do
  [ -n "$p" ] || continue
  if [ ! -d "$p" ]; then printf 'missing %s\\n' "$p"; echo 143 > "$RESULT"; continue; fi
  r=$(readlink -f -- "$p")
  case "$r" in
    /dev/shm|/dev/shm/*) ;;
    /|/bin|/boot|/dev|/etc|/home|/lib|/lib32|/lib64|/libx32|/media|/mnt|/opt|/proc|/root|\
/run|/sbin|/snap|/srv|/sys|/usr|/var|/var/lib|/var/log|/var/cache|/var/spool|\
/bin/*|/boot/*|/dev/*|/etc/*|/lib/*|/proc/*|/sbin/*|/sys/*|/usr/*)
      printf 'system %s -> %s\\n' "$p" "$r"; echo 142 > "$RESULT"; continue ;;
  esac
  find "$r" -mindepth 1 -maxdepth 1 ! \\( -name 'systemd-private-*' -user root -type d \\) \
    -exec rm -rf -- {} + 2>/dev/null
  left=$(find "$r" -mindepth 1 -maxdepth 1 ! \\( -name 'systemd-private-*' -user root -type d \\) \
    | head -n 5 | tr '\\n' ' ')
  if [ -n "$left" ]; then printf 'left %s: %s\\n' "$p" "$left"; echo 144 > "$RESULT"; fi
done
"""


def wipe_paths_script(paths: Sequence[str]) -> str:
    """Empty /tmp and ``paths``; print one line per problem and exit with the worst code."""
    return (
        assign(PATHS="\n".join(["/tmp", *paths]))  # noqa: S108 - the server's, emptied
        + 'RESULT=$(mktemp /var/tmp/neocloud-wipe.XXXXXX) || exit 1\necho 0 > "$RESULT"\n'
        + WIPE_PATHS
        + 'code=$(cat "$RESULT"); rm -f "$RESULT"; exit "$code"\n'
    )


def output_tail(data: bytes, limit: int = OUTPUT_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a command's output as safe text: invalid UTF-8 replaced,
    control characters other than newline and tab dropped, surrounding blank space trimmed."""
    text = data[-limit:].decode("utf-8", errors="replace")
    return "".join(c for c in text if c in "\n\t" or (ord(c) >= 32 and ord(c) != 127)).strip()


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters (for messages)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def user_data_kind(user_data: str) -> str:
    """``script`` for ``#!``, ``cloud-config`` for ``#cloud-config``; else ``SshConfigError``."""
    if user_data.startswith("#!"):
        return "script"
    if user_data.startswith("#cloud-config"):
        return "cloud-config"
    raise SshConfigError("user data must start with '#!' (a script) or '#cloud-config'")


# --- the node agent ------------------------------------------------------------------------------
# Burn-in installs ``neocloud agent`` on the node and starts it as a service (docs/agent-node.md):
# the token in a root-only file (sent on stdin, never on a command line), the settings in an env
# file the launcher reads at each start, a systemd unit where systemd is PID 1 and otherwise a
# supervisor process (setsid, a pidfile) that restarts the agent when it exits.

AGENT_RECORDED = ("h100", "h200", "h100-ecc", "h100-lost-gpu")  # the agent's recorded sources
AGENT_INSTALL_MODES = ("wheel", "pythonpath")
AGENT_ETC = "/etc/neocloud"
AGENT_TOKEN_FILE = f"{AGENT_ETC}/agent-token"
AGENT_ENV_FILE = f"{AGENT_ETC}/agent.env"
AGENT_RUN = "/usr/local/sbin/neocloud-agent-run"
AGENT_CTL = "/usr/local/sbin/neocloud-agent-ctl"
AGENT_UNIT = "/etc/systemd/system/neocloud-agent.service"
AGENT_PIDFILE = "/run/neocloud-agent.pid"
AGENT_LOG = "/var/log/neocloud-agent.log"
AGENT_VENV = "/opt/neocloud-agent"
AGENT_WHEEL_DIR = f"{STATE_DIR}/agent"
_WHEEL_RE = re.compile(r"^[A-Za-z0-9_.+-]{1,200}\.whl$")
_NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_URL_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s]*)?$")


@dataclass(frozen=True, slots=True)
class AgentInstall:
    """How burn-in puts the agent's code on a node (``NEOCLOUD_AGENT_*``). ``wheel``: the wheel
    at ``wheel`` (a file of the control plane) is copied over and pip-installed into a venv at
    /opt/neocloud-agent made with ``python``; ``pythonpath``: the node already sees neocloud's
    source at ``pythonpath`` (a shared filesystem; test hosts see the machine's) and runs it with
    ``python``."""

    mode: str
    python: str = "python3"
    pythonpath: str | None = None
    wheel: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in AGENT_INSTALL_MODES:
            raise SshConfigError(f"agent install mode {self.mode!r}: wheel or pythonpath")
        if not self.python.strip() or any(c in self.python for c in "\n\r\x00"):
            raise SshConfigError("the agent's python must be a command or a path")
        if self.mode == "pythonpath" and not (self.pythonpath or "").startswith("/"):
            raise SshConfigError("agent install pythonpath needs an absolute agent_pythonpath")
        if self.mode == "wheel" and not self.wheel:
            raise SshConfigError("agent install wheel needs agent_wheel (the wheel file)")

    @property
    def node_python(self) -> str:
        """The interpreter the launcher runs on the node."""
        return f"{AGENT_VENV}/bin/python" if self.mode == "wheel" else self.python


def agent_env(
    *, control_plane_url: str, node_id: str, recorded: str | None, install: AgentInstall
) -> str:
    """The env file the launcher reads (shell assignments, every value quoted)."""
    if not _URL_RE.match(control_plane_url):
        raise SshConfigError(f"control plane URL {control_plane_url!r} is not an http(s) URL")
    if not _NODE_ID_RE.match(node_id):
        raise SshConfigError(f"node id {node_id!r} has characters a setting cannot")
    if recorded is not None and recorded not in AGENT_RECORDED:
        raise SshConfigError(f"agent_recorded {recorded!r}: one of {', '.join(AGENT_RECORDED)}")
    return "# written by neocloud at burn-in; `neocloud-agent-ctl restart` applies a change\n" + (
        assign(
            AGENT_CONTROL_PLANE=control_plane_url,
            AGENT_NODE_ID=node_id,
            AGENT_RECORDED=recorded or "",
            AGENT_PYTHON=install.node_python,
            AGENT_PYTHONPATH=(install.pythonpath or "") if install.mode == "pythonpath" else "",
        )
    )


def wheel_name(path: str) -> str:
    """The wheel's file name (pip reads the package's name and version from it)."""
    name = posixpath.basename(path)
    if not _WHEEL_RE.match(name):
        raise SshConfigError(f"agent wheel {name!r} is not a wheel file name (NAME-VER-….whl)")
    return name


# The token arrives on stdin and lands in a root-only file (0600 from its first byte).
AGENT_TOKEN_WRITE = f"""\
set -eu
umask 077
mkdir -p {AGENT_ETC}
chmod 0755 {AGENT_ETC}
tmp=$(mktemp {AGENT_ETC}/.agent-token.XXXXXX)
cat > "$tmp"
chown 0:0 "$tmp"
chmod 0600 "$tmp"
mv -f "$tmp" {AGENT_TOKEN_FILE}
"""

# Exit 150: neocloud's agent cannot be imported with $PY and $PP (the output says why).
AGENT_CHECK_PYTHONPATH = """\
PYTHONPATH="$PP" "$PY" -c 'import neocloud.agent.main' 2>&1 || exit 150
"""

# The wheel arrives on stdin. Exit 151: no venv could be made; 152: pip failed; 150: the
# installed agent cannot be imported.
AGENT_INSTALL_WHEEL = f"""\
set -u
umask 022
mkdir -p {AGENT_WHEEL_DIR} || exit 151
cat > "{AGENT_WHEEL_DIR}/$WHEEL" || exit 151
[ -x {AGENT_VENV}/bin/python ] || "$PY" -m venv {AGENT_VENV} 2>&1 || exit 151
out=$({AGENT_VENV}/bin/python -m pip install --quiet --disable-pip-version-check \\
  "{AGENT_WHEEL_DIR}/$WHEEL" 2>&1) || {{ printf '%s\\n' "$out" | tail -n 20; exit 152; }}
{AGENT_VENV}/bin/python -c 'import neocloud.agent.main' 2>&1 || exit 150
"""

AGENT_RUN_SCRIPT = f"""\
#!/bin/sh
# The neocloud node agent's launcher (written by neocloud at burn-in). It reads {AGENT_ENV_FILE}
# at each start; the token stays in its file (never on a command line).
set -eu
. {AGENT_ENV_FILE}
token={AGENT_TOKEN_FILE}
[ -z "${{CREDENTIALS_DIRECTORY:-}}" ] || token="$CREDENTIALS_DIRECTORY/agent-token"
set -- --control-plane "$AGENT_CONTROL_PLANE" --node-id "$AGENT_NODE_ID" --token-file "$token"
[ -z "${{AGENT_RECORDED:-}}" ] || set -- "$@" --recorded "$AGENT_RECORDED"
[ -z "${{AGENT_PYTHONPATH:-}}" ] || export PYTHONPATH="$AGENT_PYTHONPATH"
exec "$AGENT_PYTHON" -m neocloud.agent "$@"
"""

AGENT_CTL_SCRIPT = f"""\
#!/bin/sh
# neocloud-agent-ctl start|stop|restart|status (written by neocloud at burn-in): the agent as a
# systemd unit where systemd runs the node, else under a supervisor that restarts it when it
# exits (pidfile {AGENT_PIDFILE}, log {AGENT_LOG}).
PIDFILE={AGENT_PIDFILE}
LOG={AGENT_LOG}
systemd_runs() {{ [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }}
running() {{ [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }}
stop_supervised() {{
  running || {{ rm -f "$PIDFILE"; return 0; }}
  pid=$(cat "$PIDFILE")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i + 1)); done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}}
case "${{1:-}}" in
  supervise)
    echo $$ > "$PIDFILE"
    child=
    trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; rm -f "$PIDFILE"; exit 0' TERM INT
    while :; do
      {AGENT_RUN} </dev/null & child=$!
      wait "$child" || true
      echo "$(date -u +%FT%TZ) neocloud-agent-ctl: the agent exited; restarting in 5 s"
      sleep 5 & wait $!
    done ;;
  start)
    if systemd_runs; then
      systemctl daemon-reload && systemctl enable --quiet neocloud-agent \\
        && systemctl restart neocloud-agent && echo systemd
      exit $?
    fi
    stop_supervised
    setsid "$0" supervise </dev/null >>"$LOG" 2>&1 &
    i=0
    while ! running && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    running && echo supervised ;;
  stop)
    if systemd_runs; then systemctl stop neocloud-agent; exit $?; fi
    stop_supervised ;;
  restart) "$0" stop && exec "$0" start ;;
  status)
    if systemd_runs; then systemctl is-active neocloud-agent; exit $?; fi
    if running; then echo "running (supervisor $(cat "$PIDFILE"))"; else echo stopped; exit 3; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
"""

AGENT_UNIT_TEXT = f"""\
# The neocloud node agent (written by neocloud at burn-in).
[Unit]
Description=neocloud node agent
After=network-online.target nvidia-persistenced.service
Wants=network-online.target

[Service]
Type=simple
# systemd hands the service a private copy of the root-only token file.
LoadCredential=agent-token:{AGENT_TOKEN_FILE}
ExecStart={AGENT_RUN}
Restart=always
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=30
NoNewPrivileges=true
ProtectSystem=full
ProtectHome=read-only
PrivateTmp=true

[Install]
WantedBy=multi-user.target
"""

# Writes the env file, the launcher, the control script and (where systemd runs) the unit, then
# (re)starts the agent; prints "systemd" or "supervised". Exit 153: it did not start.
AGENT_CONFIGURE = f"""\
set -eu
umask 022
mkdir -p {AGENT_ETC} /usr/local/sbin
put() {{ printf '%s' "$2" > "$1.new" && chmod "$3" "$1.new" && mv -f "$1.new" "$1"; }}
put {AGENT_ENV_FILE} "$ENVFILE" 0644
put {AGENT_RUN} "$RUN" 0755
put {AGENT_CTL} "$CTL" 0755
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  printf '%s' "$UNIT" > {AGENT_UNIT}
fi
{AGENT_CTL} restart || exit 153
"""


def agent_configure_script(env: str) -> str:
    return (
        assign(ENVFILE=env, RUN=AGENT_RUN_SCRIPT, CTL=AGENT_CTL_SCRIPT, UNIT=AGENT_UNIT_TEXT)
        + AGENT_CONFIGURE
    )
