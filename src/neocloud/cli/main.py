"""The ``neocloud`` command."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neocloud import __version__
from neocloud.cli.config import ENV_HELP
from neocloud.cli.output import err, fail, out, print_json, print_object
from neocloud.cli.progress import spinner
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client

if TYPE_CHECKING:
    from fastapi import FastAPI

    from neocloud.kernel.settings import Settings

app = typer.Typer(
    name="neocloud",
    help="neocloud: run a GPU cloud. Tenants script it; operators run it.\n\n" + ENV_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _print_version(value: bool) -> None:
    if value:
        out.print(f"neocloud {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile", "-p", help="Saved profile to use (see `login`; default: 'default')"
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    STATE.profile = profile


@app.command()
def version() -> None:
    """Print the neocloud version."""
    out.print(__version__)


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where SQLite and the admin key live")
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="PostgreSQL URL instead of SQLite")
]


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8420)")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    fleet: Annotated[
        Path | None, typer.Option("--fleet", help="Fleet spec to import into an empty fleet")
    ] = None,
    demo_fleet: Annotated[
        bool, typer.Option("--demo-fleet/--no-demo-fleet", help="Load the demo fleet if empty")
    ] = True,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Run the compute worker and invoicing in this process (--no-worker: the API "
            "alone, beside a `neocloud worker` process)",
        ),
    ] = True,
    shutdown_grace: Annotated[
        float | None,
        typer.Option(
            "--shutdown-grace",
            help="On SIGTERM, seconds the requests in flight get to finish (default 30; "
            "NEOCLOUD_SHUTDOWN_GRACE_S)",
        ),
    ] = None,
) -> None:
    """Run the platform: API, and unless --no-worker the scheduler, reconcilers (sim driver)
    and invoicing in the same process."""
    from neocloud.api.app import create_app
    from neocloud.api.platform import compute_waker, prepare, start_background
    from neocloud.kernel.clock import SystemClock
    from neocloud.kernel.settings import load_settings

    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        shutdown_grace_s=shutdown_grace,
    )
    clock = SystemClock()
    with spinner(f"migrating the database and importing {fleet}" if fleet else "starting"):
        prepared = prepare(settings, clock, fleet_file=fleet, demo_fleet=demo_fleet)
    if prepared.admin_key:
        _announce_admin_key(prepared.admin_key, prepared.admin_key_path)
    if prepared.imported_nodes:
        out.print(f"Imported {prepared.imported_nodes} nodes into the empty fleet.")
    url = f"http://{settings.host}:{settings.port}"
    out.print(f"neocloud {__version__} serving {url}  (API docs: {url}/api/v1/docs)")
    out.print(f"Log in:  neocloud login --url {url} --key-file {prepared.admin_key_path}")
    if not worker:
        out.print("No worker in this process: run `neocloud worker` on the same database.")
    app_ = create_app(settings=settings, db=prepared.db, clock=clock)
    background = start_background(settings, clock) if worker else None
    # The API wakes the scheduler after a write: this process's, and other processes' workers.
    app_.state.compute_nudge, sender = compute_waker(prepared.db, background)
    if background is not None and background.finetune is not None:
        app_.state.finetune_nudge = background.finetune.nudge  # a new job starts at once
    try:
        _serve_until_sigterm(app_, settings)
    finally:
        if sender is not None:
            sender.stop()
        if background is not None:
            background.stop()


def _serve_until_sigterm(app_: FastAPI, settings: Settings) -> None:
    """Serve until SIGTERM (or Ctrl-C): then stop accepting, let the requests in flight finish
    for at most ``settings.shutdown_grace_s``, and return, so the caller stops the background
    work and the process exits 0. (Uvicorn raises the signal again once it has shut down; a
    handler of our own takes it, where the default one would kill the process before the
    background work stopped.)"""
    import math
    import signal

    import uvicorn

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    settle_heap()
    try:
        uvicorn.run(
            app_,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def settle_heap() -> None:
    """Before serving: collect once, then move everything alive (modules, the app, its routes
    and schemas: most of the heap) out of the collector's sight. A full collection otherwise
    walked all of it every so often on the request loop: pauses of 50-350 ms, the gateway's
    worst tail (bench/studio/README.md, "The tail")."""
    import gc

    gc.collect()
    gc.freeze()


def _announce_admin_key(key: str, path: Path) -> None:
    """Show a new operator admin key once, on a terminal only: piped or redirected stdout
    goes to log collectors, which get the key file's path and never the key."""
    if sys.stdout.isatty():
        out.print(f"[bold]Operator admin key (shown once; also saved to {path}, mode 0600):[/bold]")
        out.print(key, highlight=False, soft_wrap=True)
    else:
        out.print(
            f"Operator admin key created and saved to {path} (mode 0600); not printed, as "
            "stdout is not a terminal."
        )


WORKER_HELP = (
    "Run the background work alone: the compute scheduler and reconcilers (sim driver) and "
    "invoicing, until SIGTERM or Ctrl-C; then release the leader leases so that another "
    "worker takes over at once.\n\n"
    "Pair it with API processes started by `neocloud up --no-worker` on the same database, "
    "with the same settings (NEOCLOUD_* variables, --database-url, --data-dir). Several "
    "workers may run: one holds the scheduler lease, the others stand by.\n\n"
    "The API wakes the workers after each write (PostgreSQL NOTIFY, or a wake file beside a "
    "SQLite database); otherwise a worker cycles every NEOCLOUD_COMPUTE_WORKER_INTERVAL_S "
    "seconds (default 1). The database must be migrated first (`neocloud db upgrade`, or "
    "`neocloud up` once)."
)


@app.command("worker", help=WORKER_HELP)
def worker_command(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run the background work alone (see WORKER_HELP)."""
    import logging
    import signal
    import threading

    import sqlalchemy as sa

    from neocloud.api.platform import require_migrated, start_background
    from neocloud.db.engine import Database
    from neocloud.kernel.clock import SystemClock
    from neocloud.kernel.errors import NeocloudError
    from neocloud.kernel.settings import load_settings

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    url = settings.resolved_database_url()
    db = Database.from_url(url)
    try:
        require_migrated(db)
    except NeocloudError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    background = start_background(settings, SystemClock())
    shown = sa.make_url(url).render_as_string(hide_password=True)
    out.print(f"neocloud {__version__} worker on {shown}: scheduler, reconcilers, invoicing")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        background.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.print("worker stopped; leases released")


@app.command("agent")
def agent_command(
    control_plane: Annotated[
        str | None, typer.Option("--control-plane", help="The control plane's base URL")
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="The node's agent token (nca_…); prefer --token-file")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the agent token (0600)")
    ] = None,
    node_id: Annotated[str | None, typer.Option("--node-id", help="This node's id")] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between heartbeats until the control plane sets them")
    ] = 10.0,
    recorded: Annotated[
        str | None,
        typer.Option(
            help="Replay a recorded GPU source, reported as simulated: h100, h200, "
            "h100-ecc, h100-lost-gpu"
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One heartbeat, then exit")] = False,
    print_only: Annotated[
        bool,
        typer.Option("--print", help="Print inventory, telemetry and checks as JSON; post nothing"),
    ] = False,
) -> None:
    """Run the node agent on a GPU node: NVML inventory, telemetry and health checks to the
    control plane (docs/agent-node.md). `python -m neocloud.agent` is the same without the CLI."""
    import logging

    from neocloud.agent.main import AgentOptions, run

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = AgentOptions(
        node_id, control_plane, token, token_file, interval, recorded, once, print_only
    )
    raise typer.Exit(run(options))


@db_app.command("upgrade")
def db_upgrade(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Apply database migrations up to the newest."""
    from neocloud.db.engine import Database
    from neocloud.db.migrate import current_revisions, upgrade
    from neocloud.kernel.settings import load_settings

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.from_url(settings.resolved_database_url())
    upgrade(db)
    out.print(f"database at revision {', '.join(sorted(current_revisions(db)))}")


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(help="Where to write the backup (replaced whole)")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write a consistent backup of the database, safe while the platform runs: SQLite's
    online backup API, or PostgreSQL's pg_dump (custom format)."""
    from neocloud.db.backup import backup
    from neocloud.kernel.errors import NeocloudError
    from neocloud.kernel.settings import load_settings

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    try:
        info = backup(url=settings.resolved_database_url(), file=file)
    except NeocloudError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    out.print(
        f"{info.dialect} backup at revision {', '.join(sorted(info.revisions))} written to "
        f"{file} ({info.size_bytes:,} bytes)"
    )


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(help="A backup written by `neocloud db backup`")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database that already holds rows")
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Replace the database with a backup, then migrate it to this release (stop the platform
    first). Refuses a database that holds rows without --force, and a backup made by a newer
    release."""
    from neocloud.db.backup import restore
    from neocloud.kernel.errors import NeocloudError
    from neocloud.kernel.settings import load_settings

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    try:
        info = restore(url=settings.resolved_database_url(), file=file, force=force)
    except NeocloudError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    out.print(
        f"restored {file} ({info.dialect}); database at revision "
        f"{', '.join(sorted(info.revisions))}"
    )


LOGIN_HELP = (
    "Check a key against the API and save it as the profile named by the global --profile "
    "(`neocloud -p NAME login …`; default: 'default'). Replacing a saved profile says so.\n\n"
    + ENV_HELP
)


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        err.print(f"[red]error[/red] cannot read the key file {path}: {exc.strerror}")
        raise typer.Exit(2) from None


@app.command(help=LOGIN_HELP)
def login(
    url: Annotated[
        str | None,
        typer.Option(help="API base URL (default: the profile's, else http://127.0.0.1:8420)"),
    ] = None,
    key: Annotated[str | None, typer.Option(help="API key (or use --key-file)")] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="File holding the key")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print who you are as JSON")] = False,
) -> None:
    """Check a key against the API and save it as a profile (see LOGIN_HELP)."""
    from neocloud.cli.config import Profile, find_profile, profile_name, save_profile
    from neocloud.client.base import DEFAULT_URL

    name = profile_name(STATE.profile)
    before = find_profile(name)
    url = url or (before.url if before else DEFAULT_URL)
    if key_file is not None:
        key = _read_key_file(key_file)
    if not key:
        key = typer.prompt("API key", hide_input=True)
    client = Client(url, key)
    try:
        me = client.me()
    except ApiError as exc:
        raise fail(exc) from None
    path = save_profile(Profile(name, url, key))
    if before is not None and (before.url, before.api_key) != (url, key):
        err.print(f"profile '{name}' replaced (it was {before.url} with another key)")
    if as_json:
        print_json(me)
    else:
        out.print(
            f"Logged in to {url} as {me.get('user', {}).get('email', me.get('user_id'))} "
            f"(org {me.get('org_id')}, role {me.get('role')}); profile '{name}' saved to {path}"
        )


@app.command()
def whoami(
    as_json: Annotated[bool, typer.Option("--json", help="Print who you are as JSON")] = False,
) -> None:
    """Who the CLI acts as: user, org, role, API URL and profile."""
    from neocloud.cli.config import resolve

    me = STATE.me()  # first: says what to run when nothing is logged in
    profile = resolve(STATE.profile)
    org = me.get("org") or {}
    user = me.get("user") or {}
    shown = {
        "user": user.get("email") or me["user_id"],
        "user_id": me["user_id"],
        "org": org.get("slug") or me["org_id"],
        "org_id": me["org_id"],
        "role": me["role"],
        "operator": me.get("is_operator", False),
        "key_id": me.get("key_id"),
        "api_url": profile.url,
        "profile": f"{profile.name} (key from NEOCLOUD_API_KEY)"
        if profile.from_env
        else profile.name,
    }
    print_object(shown, as_json=as_json)


def _register_fleet() -> None:
    from neocloud.cli import fleet as fleet_cli

    app.add_typer(fleet_cli.fleet_app, name="fleet")
    app.add_typer(fleet_cli.nodes_app, name="nodes")


def _register_sim() -> None:
    from neocloud.cli.sim import sim_app

    app.add_typer(sim_app, name="sim")


def _register_econ() -> None:
    from neocloud.cli.econ import econ_app

    app.add_typer(econ_app, name="econ")


def _register_apps(module: str) -> Callable[[], None]:
    def register() -> None:
        apps: dict[str, typer.Typer] = importlib.import_module(f"neocloud.cli.{module}").APPS
        for name, sub in apps.items():
            app.add_typer(sub, name=name)

    return register


# Each top-level group and what registers it: a command imports only its own module (econ's
# numpy, billing's, studio's…), so that `neocloud nodes list` starts in a fraction of the time.
# tests/e2e/test_cli_startup.py checks the table against registering everything.
GROUPS: dict[str, Callable[[], None]] = {
    "fleet": _register_fleet,
    "nodes": _register_fleet,
    "sim": _register_sim,
    "econ": _register_econ,
    **dict.fromkeys(
        ("orgs", "projects", "users", "keys", "ssh-keys", "quotas", "audit"),
        _register_apps("tenancy"),
    ),
    **dict.fromkeys(
        ("reservations", "capacity", "instance-types", "instances", "clusters", "ssh"),
        _register_apps("compute"),
    ),
    "images": _register_apps("images"),
    **dict.fromkeys(("billing", "usage", "invoices"), _register_apps("billing")),
    "studio": _register_apps("studio"),
    "databases": _register_apps("databases"),
    **dict.fromkeys(("fs", "storage-pools"), _register_apps("storage")),
}


def _command_group(argv: list[str]) -> str | None:
    """The first word of ``argv`` that is not a global option or its value."""
    args = iter(argv)
    for arg in args:
        if arg in ("--profile", "-p"):
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _register_subcommands(argv: list[str] | None = None) -> None:
    """Register the group ``argv`` names, or every group (for --help, or a word not known)."""
    group = GROUPS.get(_command_group(argv) or "") if argv is not None else None
    for register in [group] if group is not None else list(dict.fromkeys(GROUPS.values())):
        register()


def main() -> None:
    _register_subcommands(sys.argv[1:])
    try:
        app()
    except ApiError as exc:
        raise SystemExit(fail(exc).exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
