"""A PostgreSQL server on a service node, as text (pure: plain data in, scripts out).

What ``databases/steps.py`` runs as root on the node through its driver
(``drivers.base.Executor``): create (a dedicated OS user, ``initdb``, TLS files, the platform's
``postgresql.conf`` additions and ``pg_hba.conf``, ``pg_ctl start``, the tenant's role and
database, and a restore from a dump when asked), health, a new ``pg_hba.conf``, a backup
(``pg_dump``), and delete (server stopped, data directory, backups and OS user gone, checked).
Every script is safe to run twice. Values reach a script as quoted shell assignments; secrets
(the server's TLS key, the role's SCRAM verifier) only on its standard input. The tenant's
password never reaches the node: the role gets its SCRAM-SHA-256 verifier
(``scram_verifier``), which PostgreSQL stores as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

ROOT = "/var/lib/neocloud/postgres"  # one directory per database: data, tls, run, log
# Every server's bootstrap superuser, reached only over its socket by its own OS user (peer,
# mapped in pg_ident.conf): one name, so one template cluster per version serves every server.
SUPERUSER = "neocloud"
TEMPLATE_USER = "neocloud-pg"  # initdb's user for the per-node templates
BACKUPS = "/var/lib/neocloud/postgres-backups"  # one directory per database: dumps
SCRAM_ITERATIONS = 4096

# Exit statuses and what they mean (``steps.py`` words them).
NOT_INSTALLED, USER_FAILED, INITDB_FAILED, START_FAILED, ROLE_FAILED, RESTORE_FAILED = (
    20,
    21,
    22,
    23,
    24,
    25,
)
NOT_RUNNING, NOT_READY = 30, 31
LEFTOVERS = 40
DUMP_FAILED = 50


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One database's server on its node."""

    database_id: str
    os_user: str
    version: str
    port: int
    db_name: str
    db_user: str
    max_connections: int
    shared_buffers_mib: int


def os_user_for(database_id: str) -> str:
    """The OS user a database's server runs as: ``ncdb_`` and the id's last 12 characters,
    lowercased (unique enough within one node; at most 17 characters)."""
    return "ncdb_" + database_id.rsplit("_", 1)[-1][-12:].lower()


def base_dir(database_id: str) -> str:
    return f"{ROOT}/{database_id}"


def backup_path(database_id: str, backup_id: str) -> str:
    return f"{BACKUPS}/{database_id}/{backup_id}.dump"


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (RFC 5802/7677, as
    ``password_encryption = scram-sha-256`` stores it): what the role gets instead of the
    password itself. ``password`` is ASCII (the platform generates it)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def hba_conf(spec: ServerSpec, cidrs: Sequence[str]) -> str:
    """``pg_hba.conf``: the server's OS user over its own socket (peer), and the tenant's role
    to its database from ``cidrs`` only, over TLS with SCRAM; everything else is rejected."""
    lines = [
        "# written by neocloud: the platform rewrites this file",
        f"local all {SUPERUSER} peer map={SUPERUSER}",
    ]
    for cidr in sorted(set(cidrs)):
        net = ipaddress.ip_network(cidr, strict=False)
        lines.append(f"hostssl {spec.db_name} {spec.db_user} {net} scram-sha-256")
    lines += ["host all all 0.0.0.0/0 reject", "host all all ::/0 reject"]
    return "\n".join(lines) + "\n"


def server_conf(spec: ServerSpec) -> str:
    """What the platform adds to ``postgresql.conf`` (``include``d from it)."""
    run = f"{base_dir(spec.database_id)}/run"
    tls = f"{base_dir(spec.database_id)}/tls"
    return (
        "# written by neocloud\n"
        "listen_addresses = '*'\n"
        f"port = {spec.port}\n"
        f"unix_socket_directories = '{run}'\n"
        f"max_connections = {spec.max_connections}\n"
        f"shared_buffers = {spec.shared_buffers_mib}MB\n"
        "dynamic_shared_memory_type = mmap\n"
        "password_encryption = 'scram-sha-256'\n"
        "ssl = on\n"
        f"ssl_cert_file = '{tls}/server.crt'\n"
        f"ssl_key_file = '{tls}/server.key'\n"
        "ssl_min_protocol_version = 'TLSv1.2'\n"
    )


def _assign(spec: ServerSpec) -> str:
    values = {
        "ID": spec.database_id,
        "OSUSER": spec.os_user,
        "PORT": spec.port,
        "BIN": f"/usr/lib/postgresql/{spec.version}/bin",
        "BASE": base_dir(spec.database_id),
        "BKDIR": f"{BACKUPS}/{spec.database_id}",
        "TEMPLATE": f"{ROOT}/.template-{spec.version}",
        "DBNAME": spec.db_name,
        "DBUSER": spec.db_user,
    }
    return "".join(f"{k}={shlex.quote(str(v))}\n" for k, v in values.items())


def _heredoc(path: str, text: str, tag: str) -> str:
    assert f"\n{tag}\n" not in f"\n{text}\n"
    return f"cat > {path} <<'{tag}'\n{text}{'' if text.endswith(chr(10)) else chr(10)}{tag}\n"


# Lists the versions installed and makes each one's template cluster once (initdb is nearly
# all of a create's time; a copy of the template is a fraction of it). The template is
# initdb'd by a system user of its own (initdb refuses root), then owned by root, 0700.
PROBE = f"""\
cd /
id -u {TEMPLATE_USER} >/dev/null 2>&1 || useradd --system --no-create-home \\
  --home-dir /nonexistent --shell /usr/sbin/nologin {TEMPLATE_USER} >/dev/null 2>&1
mkdir -p {ROOT} && chmod o+x /var/lib/neocloud && chmod 711 {ROOT}
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] || continue
  v=$(basename "$(dirname "$d")")
  t={ROOT}/.template-$v
  if [ ! -f "$t/data/PG_VERSION" ]; then
    rm -rf "$t" "$t.part" && mkdir -p "$t.part" && chown {TEMPLATE_USER}: "$t.part" \\
      && runuser -u {TEMPLATE_USER} -- "$d/initdb" -D "$t.part/data" -U {SUPERUSER} -E UTF8 \\
        --locale=C --auth-local=peer --auth-host=reject >/dev/null 2>&1 \\
      && chown -R root:root "$t.part" && chmod 700 "$t.part" && mv "$t.part" "$t"
  fi
  echo "$v"
done
exit 0
"""


def parse_probe(out: str) -> list[str]:
    """The PostgreSQL major versions the probe found, in order."""
    found = {line.strip() for line in out.splitlines() if line.strip().isdigit()}
    return sorted(found, key=int)


# The tenant's role and database, created once; values are psql variables quoted by format()'s
# %I and %L (the verifier is read from a file, never from a command line).
ROLE_SQL = """\
\\set verifier `cat "$BASE/run/verifier"`
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'usr', :'verifier')
  WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'usr') \\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'usr')
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \\gexec
SELECT format('GRANT ALL ON DATABASE %I TO %I', :'db', :'usr') \\gexec
"""


def create_script(
    spec: ServerSpec,
    *,
    cert: str,
    ca_cert: str,
    cidrs: Sequence[str],
    restore_from: str | None = None,
) -> str:
    """Create and start the server; stdin: the role's SCRAM verifier (one line), then the
    server's private key (PEM). ``restore_from``: a dump on this node to restore (once)."""
    restore = shlex.quote(restore_from) if restore_from else "''"
    return (
        "set -u\numask 077\ncd /\n"
        + _assign(spec)
        + "export BASE\n"
        + f"RESTORE={restore}\n"
        + f"""\
[ -x "$BIN/postgres" ] && [ -x "$BIN/initdb" ] \\
  || {{ echo "PostgreSQL is not installed at $BIN"; exit {NOT_INSTALLED}; }}
IFS= read -r VERIFIER
if ! id -u "$OSUSER" >/dev/null 2>&1; then
  useradd --system --home-dir "$BASE" --no-create-home --shell /usr/sbin/nologin \\
    --comment "neocloud database $ID" "$OSUSER" \\
    || {{ echo "useradd $OSUSER failed"; exit {USER_FAILED}; }}
elif [ "$(getent passwd "$OSUSER" | cut -d: -f6)" != "$BASE" ]; then
  echo "user $OSUSER exists and is not this database's"; exit {USER_FAILED}
fi
mkdir -p "$BASE/tls" "$BASE/run" && chmod o+x /var/lib/neocloud \\
  && chmod 711 "$(dirname "$BASE")" || exit {USER_FAILED}
cat > "$BASE/tls/server.key" || exit {USER_FAILED}
"""
        + _heredoc('"$BASE/tls/server.crt"', cert, "NEOCLOUD_CERT")
        + _heredoc('"$BASE/tls/ca.crt"', ca_cert, "NEOCLOUD_CA")
        + f"""\
chown -R "$OSUSER:" "$BASE" && chmod 700 "$BASE" "$BASE/tls" \\
  && chmod 600 "$BASE/tls/server.key" || exit {USER_FAILED}
as_db() {{ runuser -u "$OSUSER" -- "$@"; }}
if [ ! -f "$BASE/data/PG_VERSION" ]; then
  rm -rf "$BASE/data"
  if [ -f "$TEMPLATE/data/PG_VERSION" ]; then
    cp -a "$TEMPLATE/data" "$BASE/data" && chown -R "$OSUSER:" "$BASE/data" \\
      || {{ echo "copying the template cluster failed"; exit {INITDB_FAILED}; }}
  else
    as_db "$BIN/initdb" -D "$BASE/data" -U {SUPERUSER} -E UTF8 --locale=C --auth-local=peer \\
      --auth-host=reject > "$BASE/initdb.log" 2>&1 \\
      || {{ tail -n 20 "$BASE/initdb.log"; exit {INITDB_FAILED}; }}
  fi
  echo "include 'neocloud.conf'" >> "$BASE/data/postgresql.conf"
fi
printf '%s %s %s\\n' {SUPERUSER} "$OSUSER" {SUPERUSER} > "$BASE/data/pg_ident.conf"
"""
        + _heredoc('"$BASE/data/neocloud.conf"', server_conf(spec), "NEOCLOUD_CONF")
        + _heredoc('"$BASE/data/pg_hba.conf"', hba_conf(spec, cidrs), "NEOCLOUD_HBA")
        + f"""\
chown "$OSUSER:" "$BASE/data/neocloud.conf" "$BASE/data/pg_hba.conf" "$BASE/data/pg_ident.conf"
if ! as_db "$BIN/pg_ctl" -D "$BASE/data" status >/dev/null 2>&1; then
  as_db "$BIN/pg_ctl" -D "$BASE/data" -l "$BASE/server.log" -w -t 60 start >/dev/null 2>&1 \\
    || {{ tail -n 20 "$BASE/server.log"; exit {START_FAILED}; }}
fi
printf '%s\\n' "$VERIFIER" > "$BASE/run/verifier" && chown "$OSUSER:" "$BASE/run/verifier"
as_db "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$BASE/run" -p "$PORT" -U {SUPERUSER} -d postgres \\
  -v db="$DBNAME" -v usr="$DBUSER" > "$BASE/role.log" 2>&1 <<'NEOCLOUD_SQL'
"""
        + ROLE_SQL
        + f"""\
NEOCLOUD_SQL
STATUS=$?
rm -f "$BASE/run/verifier"
[ "$STATUS" = 0 ] || {{ tail -n 20 "$BASE/role.log"; exit {ROLE_FAILED}; }}
if [ -n "$RESTORE" ] && [ ! -f "$BASE/restored" ]; then
  [ -f "$RESTORE" ] || {{ echo "backup $RESTORE is not on this node"; exit {RESTORE_FAILED}; }}
  as_db "$BIN/pg_restore" -h "$BASE/run" -p "$PORT" -U {SUPERUSER} -d "$DBNAME" --no-owner \\
    --no-acl --role="$DBUSER" --exit-on-error < "$RESTORE" > "$BASE/restore.log" 2>&1 \\
    || {{ tail -n 20 "$BASE/restore.log"; exit {RESTORE_FAILED}; }}
  touch "$BASE/restored"
fi
echo ok
"""
    )


def health_script(spec: ServerSpec) -> str:
    """Exit 0 and the data directory's size in MiB when the server accepts connections."""
    return (
        "set -u\ncd /\n"
        + _assign(spec)
        + f"""\
runuser -u "$OSUSER" -- "$BIN/pg_ctl" -D "$BASE/data" status >/dev/null 2>&1 \\
  || {{ echo "the server is not running"; tail -n 5 "$BASE/server.log" 2>/dev/null;
       exit {NOT_RUNNING}; }}
"$BIN/pg_isready" -q -h "$BASE/run" -p "$PORT" \\
  || {{ echo "the server does not accept connections"; exit {NOT_READY}; }}
du -sm "$BASE/data" | cut -f1
"""
    )


def hba_script(spec: ServerSpec, cidrs: Sequence[str]) -> str:
    """Write a new ``pg_hba.conf`` and have the server reload it."""
    return (
        "set -u\numask 077\ncd /\n"
        + _assign(spec)
        + _heredoc('"$BASE/data/pg_hba.conf.new"', hba_conf(spec, cidrs), "NEOCLOUD_HBA")
        + f"""\
chown "$OSUSER:" "$BASE/data/pg_hba.conf.new" \\
  && mv "$BASE/data/pg_hba.conf.new" "$BASE/data/pg_hba.conf" || exit {NOT_RUNNING}
runuser -u "$OSUSER" -- "$BIN/pg_ctl" -D "$BASE/data" reload >/dev/null || exit {NOT_RUNNING}
"""
    )


def backup_script(spec: ServerSpec, backup_id: str) -> str:
    """``pg_dump`` (custom format) of the tenant's database to a file on the node; prints its
    size in bytes."""
    return (
        "set -u\numask 077\ncd /\n"
        + _assign(spec)
        + f"OUT={shlex.quote(backup_path(spec.database_id, backup_id))}\n"
        + f"""\
mkdir -p "$BKDIR" && chmod 700 "$BKDIR" || exit {DUMP_FAILED}
runuser -u "$OSUSER" -- "$BIN/pg_dump" -h "$BASE/run" -p "$PORT" -U {SUPERUSER} -Fc -d "$DBNAME" \\
  > "$OUT.part" 2> "$BKDIR/dump.log" \\
  || {{ rm -f "$OUT.part"; tail -n 20 "$BKDIR/dump.log"; exit {DUMP_FAILED}; }}
mv "$OUT.part" "$OUT" && stat -c %s "$OUT"
"""
    )


def delete_script(spec: ServerSpec) -> str:
    """Stop the server, remove its data directory, backups and OS user; check none is left."""
    return (
        "set -u\ncd /\n"
        + _assign(spec)
        + f"""\
if id -u "$OSUSER" >/dev/null 2>&1; then
  if [ -f "$BASE/data/PG_VERSION" ]; then
    runuser -u "$OSUSER" -- "$BIN/pg_ctl" -D "$BASE/data" -m fast -w -t 30 stop >/dev/null 2>&1 \\
      || runuser -u "$OSUSER" -- "$BIN/pg_ctl" -D "$BASE/data" -m immediate -w -t 10 stop \\
        >/dev/null 2>&1
  fi
  pkill -KILL -u "$OSUSER" 2>/dev/null
  sleep 0.2
  userdel "$OSUSER" 2>/dev/null
fi
rm -rf "$BASE" "$BKDIR"
LEFT=""
id -u "$OSUSER" >/dev/null 2>&1 && LEFT="$LEFT user $OSUSER;"
[ -e "$BASE" ] && LEFT="$LEFT $BASE;"
[ -e "$BKDIR" ] && LEFT="$LEFT $BKDIR;"
pgrep -u "$OSUSER" >/dev/null 2>&1 && LEFT="$LEFT processes of $OSUSER;"
[ -z "$LEFT" ] || {{ echo "left behind:$LEFT"; exit {LEFTOVERS}; }}
echo removed
"""
    )


def delete_backup_script(database_id: str, backup_id: str) -> str:
    return f"rm -f {shlex.quote(backup_path(database_id, backup_id))}\n"
