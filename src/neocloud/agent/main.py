"""Starting the agent: options, the token, signals, and the ``--print`` report.

``neocloud agent …`` (the CLI) and ``python -m neocloud.agent …`` (argparse here: a node that
has only torch and nvidia-ml-py installed has no Typer) both end in ``run(options)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neocloud import __version__
from neocloud.agent.checks import peak_for, run_active_checks
from neocloud.agent.gpus import RECORDED, GpuSource, ReopeningSource, open_source
from neocloud.agent.loop import DEFAULT_INTERVAL_S, Agent
from neocloud.agent.wire import inventory_payload, rfc3339, telemetry_payload
from neocloud.kernel.clock import SystemClock

log = logging.getLogger("neocloud.agent")

TOKEN_PREFIX = "nca_"  # noqa: S105 - the prefix agent tokens carry, not a secret


class UsageError(Exception):
    """Options that cannot start an agent (exit status 2)."""


@dataclass(frozen=True)
class AgentOptions:
    """What ``neocloud agent`` was asked to do. The token never shows in a ``repr``."""

    node_id: str | None = None
    control_plane: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    recorded: str | None = None
    once: bool = False
    print_only: bool = False


HELP = {
    "control_plane": "The control plane's base URL (https://cloud.example)",
    "token": "The node's agent token (nca_…); --token-file keeps it out of the process list",
    "token_file": "File holding the node's agent token (mode 0600)",
    "node_id": "This node's id in the control plane (node_…)",
    "interval": "Seconds between heartbeats until the control plane's answer sets them "
    f"(default {DEFAULT_INTERVAL_S:g})",
    "recorded": "Replay a recorded GPU inventory instead of NVML (reported as simulated): "
    + ", ".join(RECORDED),
    "once": "One heartbeat (and the active checks if the node is idle), then exit",
    "print": "Print the inventory, telemetry and active-check results as JSON; post nothing",
}


def read_token(options: AgentOptions) -> str:
    """The agent token from --token or --token-file (warns when the file is readable by
    others, or the token is not an agent token — without ever showing it)."""
    if options.token and options.token_file:
        raise UsageError("give --token or --token-file, not both")
    token = options.token
    if options.token_file is not None:
        try:
            mode = options.token_file.stat().st_mode
            token = options.token_file.read_text()
        except OSError as exc:
            raise UsageError(
                f"cannot read the token file {options.token_file}: {exc.strerror}"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "token file %s is readable by others (mode %o): chmod 600 it",
                options.token_file,
                mode & 0o777,
            )
    token = (token or "").strip()
    if not token:
        raise UsageError("the agent needs its token: --token-file FILE (or --token T)")
    if not token.startswith(TOKEN_PREFIX):
        log.warning(
            "the token does not start with %r: an API key is refused on the heartbeat route",
            TOKEN_PREFIX,
        )
    return token


def report(source: GpuSource) -> dict[str, Any]:
    """``--print``'s JSON: inventory, one telemetry sample, the active checks (run now), and
    the peak figures they were compared with."""
    inventory = source.inventory()
    telemetry, unreadable = telemetry_payload(source.sample())
    checks = run_active_checks(simulated=source.simulated)
    names = sorted({gpu.name for gpu in inventory.gpus})
    peaks = {name: peak for name in names if (peak := peak_for(name)) is not None}
    return {
        "agent_version": __version__,
        "simulated": source.simulated,
        "at": rfc3339(SystemClock().now()),
        "inventory": inventory_payload(inventory),
        "telemetry": telemetry,
        "unreadable": unreadable,
        "problem": source.problem if isinstance(source, ReopeningSource) else None,
        "checks": [check.to_dict() for check in checks],
        "peaks": {
            name: {"model": p.model_id, "bf16_tflops": p.bf16_tflops, "hbm_gbps": p.hbm_gbps}
            for name, p in peaks.items()
        },
    }


def run(options: AgentOptions) -> int:
    """Run the agent as ``options`` say: 0 when it ran (or stopped on SIGTERM), 1 when
    ``--once`` could not deliver its heartbeat, 2 on unusable options."""
    if options.recorded is not None and options.recorded not in RECORDED:
        log.error("no recorded GPU source %r; known: %s", options.recorded, ", ".join(RECORDED))
        return 2
    source: GpuSource = ReopeningSource(lambda: open_source(options.recorded))
    try:
        if options.print_only:
            print(json.dumps(report(source), indent=2))
            return 0
        return _heartbeat(options, source)
    except UsageError as exc:
        log.error("%s", exc)
        return 2
    finally:
        source.close()


def _heartbeat(options: AgentOptions, source: GpuSource) -> int:
    from neocloud.agent.transport import HttpControlPlane

    if not options.control_plane or not options.node_id:
        raise UsageError("the agent needs --control-plane URL and --node-id N (or --print)")
    token = read_token(options)
    control_plane = HttpControlPlane(
        options.control_plane, token, user_agent=f"neocloud-agent/{__version__}"
    )
    agent = Agent(
        node_id=options.node_id,
        source=source,
        control_plane=control_plane,
        checks=lambda: run_active_checks(simulated=source.simulated),
        interval_s=options.interval_s,
    )
    log.info(
        "agent %s for node %s reporting to %s%s",
        __version__,
        options.node_id,
        control_plane.url,
        " (recorded GPU source: simulated)" if options.recorded else "",
    )
    previous = {
        sig: signal.signal(sig, lambda *_: agent.stop()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        return agent.run(once=options.once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        control_plane.close()
        log.info("agent stopped after %d heartbeats", agent.heartbeats)


def parser() -> argparse.ArgumentParser:
    """``python -m neocloud.agent``'s options (the same as ``neocloud agent``'s)."""
    p = argparse.ArgumentParser(
        prog="python -m neocloud.agent", description="The neocloud node agent."
    )
    p.add_argument("--control-plane", help=HELP["control_plane"])
    p.add_argument("--token", help=HELP["token"])
    p.add_argument("--token-file", type=Path, help=HELP["token_file"])
    p.add_argument("--node-id", help=HELP["node_id"])
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help=HELP["interval"])
    p.add_argument("--recorded", choices=RECORDED, help=HELP["recorded"])
    p.add_argument("--once", action="store_true", help=HELP["once"])
    p.add_argument("--print", dest="print_only", action="store_true", help=HELP["print"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return run(
        AgentOptions(
            node_id=args.node_id,
            control_plane=args.control_plane,
            token=args.token,
            token_file=args.token_file,
            interval_s=args.interval,
            recorded=args.recorded,
            once=args.once,
            print_only=args.print_only,
        )
    )
