"""The ``neocloud`` command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neocloud import __version__
from neocloud.cli.output import err, fail, out, print_json
from neocloud.cli.state import STATE
from neocloud.client import ApiError, Client

if TYPE_CHECKING:
    from fastapi import FastAPI

    from neocloud.kernel.settings import Settings

app = typer.Typer(
    name="neocloud",
    help="neocloud: run a GPU cloud. Tenants script it; operators run it.",
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
        str | None, typer.Option("--profile", "-p", help="Saved profile to use (see `login`)")
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
    prepared = prepare(settings, clock, fleet_file=fleet, demo_fleet=demo_fleet)
    if prepared.admin_key:
        out.print(
            "[bold]Operator admin key (shown once; also saved to "
            f"{prepared.admin_key_path}, mode 0600):[/bold]"
        )
        out.print(prepared.admin_key, highlight=False, soft_wrap=True)
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


@app.command()
def login(
    url: Annotated[str, typer.Option(help="API base URL")] = "http://127.0.0.1:8420",
    key: Annotated[str | None, typer.Option(help="API key (or use --key-file)")] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="File holding the key")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Profile name to save")] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print who you are as JSON")] = False,
) -> None:
    """Check a key against the API and save it as a profile."""
    from neocloud.cli.config import Profile, save_profile

    if key_file is not None:
        key = key_file.read_text().strip()
    if not key:
        key = typer.prompt("API key", hide_input=True)
    client = Client(url, key)
    try:
        me = client.get("me")
    except ApiError as exc:
        raise fail(exc) from None
    path = save_profile(Profile(name, url, key))
    if as_json:
        print_json(me)
    else:
        out.print(
            f"Logged in to {url} as {me.get('user', {}).get('email', me.get('user_id'))} "
            f"(org {me.get('org_id')}, role {me.get('role')}); profile '{name}' saved to {path}"
        )


def _register_subcommands() -> None:
    from neocloud.cli import compute as compute_cli
    from neocloud.cli import fleet as fleet_cli
    from neocloud.cli import tenancy as tenancy_cli

    app.add_typer(fleet_cli.fleet_app, name="fleet")
    app.add_typer(fleet_cli.nodes_app, name="nodes")
    from neocloud.cli.sim import sim_app

    app.add_typer(sim_app, name="sim")
    from neocloud.cli.econ import econ_app

    app.add_typer(econ_app, name="econ")
    for name, sub in tenancy_cli.APPS.items():
        app.add_typer(sub, name=name)
    for name, sub in compute_cli.APPS.items():
        app.add_typer(sub, name=name)
    from neocloud.cli import billing as billing_cli

    for name, sub in billing_cli.APPS.items():
        app.add_typer(sub, name=name)
    from neocloud.cli import studio as studio_cli

    for name, sub in studio_cli.APPS.items():
        app.add_typer(sub, name=name)


def main() -> None:
    _register_subcommands()
    try:
        app()
    except ApiError as exc:
        raise SystemExit(fail(exc).exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
