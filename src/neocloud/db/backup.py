"""Backup and restore of the whole database (``neocloud db backup FILE`` / ``db restore FILE``).

SQLite goes through its online backup API: a consistent copy page by page while the platform
keeps writing (a writer between two steps makes the copy start over, so the copy is always one
instant's state). PostgreSQL goes through ``pg_dump -Fc`` (one snapshot transaction, consistent
while the platform runs) and ``pg_restore`` in a single transaction.

Restore refuses to overwrite a database that holds any row unless ``force`` is given, and checks
the backup's schema version: a backup from a newer release (a revision this code does not know)
is refused; an older one is restored and migrated forward to this release's head.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.script import ScriptDirectory

from neocloud.db.engine import Database
from neocloud.db.migrate import alembic_config, current_revisions, upgrade
from neocloud.kernel.errors import Conflict, InvalidRequest

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
VERSION_TABLE = "alembic_version"
# Rows the migrations themselves write (schema version, the credentials counter's one row):
# a database holding only these is as empty as a fresh one.
BOOKKEEPING_TABLES = frozenset({VERSION_TABLE, "credentials_version"})
BACKUP_PAGES_PER_STEP = 256  # SQLite pages copied per step of the online backup (4 KiB each)
PG_TOOL_TIMEOUT_S = 3600  # pg_dump / pg_restore of a large database


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds: its backend, schema revisions and size in bytes."""

    dialect: str
    revisions: frozenset[str]
    size_bytes: int


def _sqlite_path(url: sa.URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise InvalidRequest("an in-memory SQLite database cannot be backed up", param="url")
    return Path(url.database)


def libpq_url(url: sa.URL) -> str:
    """``url`` as libpq (pg_dump, pg_restore) reads it: no SQLAlchemy driver suffix."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def backup(*, url: str, file: Path) -> BackupInfo:
    """Write a consistent backup of the database at ``url`` to ``file`` (replaced whole: written
    beside it under a temporary name, then renamed). Safe while the platform runs."""
    parsed = sa.make_url(url)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.partial")
    tmp.unlink(missing_ok=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            _sqlite_backup(_sqlite_path(parsed), tmp)
        elif parsed.get_backend_name() == "postgresql":
            _run_pg_tool(
                ["pg_dump", "--format=custom", "--no-owner", "--file", str(tmp)],
                libpq_url(parsed),
            )
        else:
            raise InvalidRequest(f"cannot back up a {parsed.get_backend_name()} database")
        tmp.replace(file)
    finally:
        tmp.unlink(missing_ok=True)
    return inspect_backup(file)


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.exists():
        raise InvalidRequest(f"no SQLite database at {source}", param="url")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst, pages=BACKUP_PAGES_PER_STEP)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside
        finally:
            dst.close()
    finally:
        src.close()


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise Conflict(f"{name} is not installed (PostgreSQL client)", code="pg_tool_missing")
    return path


def _run_pg_tool(argv: list[str], dbname: str) -> str:
    """Run pg_dump / pg_restore with ``dbname`` (passed through the environment, so a password
    in the URL never shows in the process list); returns stdout, raises with stderr."""
    env = {**os.environ, "NEOCLOUD_PG_URL": dbname}
    tool, shell = _tool(argv[0]), shutil.which("sh") or "/bin/sh"
    # --dbname="$URL" expanded by a shell keeps the URL out of every process's argv.
    done = subprocess.run(  # noqa: S603 - fixed argv, URL from the environment
        [shell, "-c", 'exec "$@" --dbname="$NEOCLOUD_PG_URL"', tool, tool, *argv[1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=PG_TOOL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise Conflict(f"{argv[0]} failed: {done.stderr.strip()[-2000:]}", code="pg_tool_failed")
    return done.stdout


def inspect_backup(file: Path) -> BackupInfo:
    """Read a backup's kind and schema revisions without restoring it."""
    if not file.is_file():
        raise InvalidRequest(f"no backup file at {file}", param="file")
    with file.open("rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    size = file.stat().st_size
    if head.startswith(SQLITE_MAGIC):
        conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.DatabaseError:
            rows = []
        finally:
            conn.close()
        return BackupInfo("sqlite", frozenset(r[0] for r in rows), size)
    if head.startswith(PG_CUSTOM_MAGIC):
        done = subprocess.run(  # noqa: S603 - fixed argv
            [_tool("pg_restore"), "--data-only", f"--table={VERSION_TABLE}", "--file=-", str(file)],
            capture_output=True,
            text=True,
            timeout=PG_TOOL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise InvalidRequest(f"not a readable pg_dump archive: {done.stderr.strip()}")
        return BackupInfo("postgresql", frozenset(_copy_rows(done.stdout)), size)
    raise InvalidRequest(
        f"{file} is neither a SQLite database nor a pg_dump custom archive", param="file"
    )


def _copy_rows(sql: str) -> list[str]:
    """The values of the one-column COPY block in pg_restore's SQL output."""
    rows: list[str] = []
    inside = False
    for line in sql.splitlines():
        if line.startswith("COPY ") and f"{VERSION_TABLE} " in line:
            inside = True
        elif inside and line == "\\.":
            break
        elif inside and line:
            rows.append(line)
    return rows


def row_count(db: Database) -> int:
    """Rows in every table but the migrations' bookkeeping (0: an empty or fresh database)."""
    names = [n for n in sa.inspect(db.engine).get_table_names() if n not in BOOKKEEPING_TABLES]
    total = 0
    with db.engine.connect() as conn:
        for name in names:
            # the names come from the database's own catalogue
            count = sa.text(f'SELECT count(*) FROM "{name}"')  # noqa: S608
            total += conn.execute(count).scalar_one()
    return total


def restore(*, url: str, file: Path, force: bool = False) -> BackupInfo:
    """Replace the database at ``url`` with the backup in ``file``, then migrate it to this
    release's head. The platform must be stopped. Refuses a database holding rows unless
    ``force``, a backup of the other backend, and a backup newer than this release."""
    info = inspect_backup(file)
    parsed = sa.make_url(url)
    if info.dialect != parsed.get_backend_name():
        raise InvalidRequest(
            f"{file} is a {info.dialect} backup; the database is {parsed.get_backend_name()}",
            param="file",
        )
    db = Database.from_url(url)
    try:
        known = {
            r.revision for r in ScriptDirectory.from_config(alembic_config(db)).walk_revisions()
        }
        unknown = info.revisions - known
        if not info.revisions or unknown:
            raise Conflict(
                f"the backup's schema revision {sorted(info.revisions) or 'none'} is not one "
                "this release knows: restore it with the release that made it",
                code="backup_schema_unknown",
            )
        rows = row_count(db)
        if rows and not force:
            raise Conflict(
                f"the database holds {rows} rows; restoring would replace them (use --force)",
                code="database_not_empty",
            )
        db.engine.dispose()  # nothing of ours stays connected while the contents are replaced
        if info.dialect == "sqlite":
            _sqlite_restore(file, _sqlite_path(parsed))
        else:
            _pg_restore(db, file, parsed)
        upgrade(db)  # an older backup is brought to this release's schema
        after = current_revisions(db)
    finally:
        db.dispose()
    return BackupInfo(info.dialect, frozenset(after), info.size_bytes)


def _sqlite_restore(file: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target, timeout=30)
        try:
            src.backup(dst)  # replaces every page of ``target``, WAL included
        finally:
            dst.close()
    finally:
        src.close()


def _pg_restore(db: Database, file: Path, url: sa.URL) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    db.engine.dispose()
    _run_pg_tool(
        ["pg_restore", "--no-owner", "--exit-on-error", "--single-transaction", str(file)],
        libpq_url(url),
    )
