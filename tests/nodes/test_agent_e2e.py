"""End to end: the node agent on real (test) hosts, installed by burn-in, reporting to a real
`neocloud up` over the network.

The platform runs with NEOCLOUD_AGENT_INSTALL=pythonpath (test hosts see this machine's files
through their overlay, so the agent runs from this checkout's src) and listens on the test
bridge's address, which every host reaches. Hosts register with a recorded GPU source (they
have no GPUs), so everything they report says simulated. Burn-in installs the agent over SSH
and waits for its first inventory: a healthy H100 host becomes available with 8 GPUs of
inventory, its telemetry reaches the tenant's instance metrics and /metrics; a host whose GPUs
carry an uncorrectable ECC error fails burn-in; an ECC error on a node in use fails the node and
the tenant's instance; a killed agent's node fails after the silence; one node's token cannot
report for another.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import neocloud

from .conftest import Host
from .platform import Platform, running_platform, wait_for

BRIDGE = "10.231.0.1"  # the test bridge's address on this machine: every host reaches it
SILENCE_S = 5  # NEOCLOUD_AGENT_SILENCE_S (its minimum)
TOPOLOGY = {"region": "lab", "zone": "lab-a", "fabric": "lab-ib1", "block": "b1", "rack": "r1"}
TOKEN_FILE = "etc/neocloud/agent-token"


# What the agent imports beyond the standard library (httpx and its own imports).
AGENT_DEPENDENCIES = ("httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi")


@contextmanager
def agent_bundle() -> Iterator[Path]:
    """The agent's code and its few dependencies, copied where every test host sees them.

    A test host mounts a /tmp of its own, so a checkout or a virtual environment under /tmp (a
    CI clone, say) is invisible inside it: the bundle goes under /var/lib, which hosts see
    through their overlay of /, and is removed afterwards. This is what the `pythonpath`
    install mode expects on a real server too: a directory holding `neocloud/agent`."""
    root = Path("/var/lib/neocloud-test-agent") / f"{os.getpid()}-{time.monotonic_ns()}"
    package = Path(neocloud.__file__).resolve().parent
    skip = shutil.ignore_patterns("__pycache__")
    try:
        (root / "neocloud").mkdir(parents=True)
        shutil.copy2(package / "__init__.py", root / "neocloud" / "__init__.py")
        shutil.copytree(package / "agent", root / "neocloud" / "agent", ignore=skip)
        (root / "neocloud" / "kernel").mkdir()
        for name in ("__init__.py", "clock.py"):  # the one kernel module the agent uses
            shutil.copy2(package / "kernel" / name, root / "neocloud" / "kernel" / name)
        for name in AGENT_DEPENDENCIES:
            spec = importlib.util.find_spec(name)
            assert spec is not None, name
            assert spec.origin is not None, name
            shutil.copytree(Path(spec.origin).parent, root / name, ignore=skip)
        extensions = importlib.util.find_spec("typing_extensions")
        if extensions is not None and extensions.origin is not None:
            shutil.copy2(extensions.origin, root)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.suppress(OSError):  # the parent too, once no other worker uses it
            root.parent.rmdir()


@contextmanager
def agent_platform(
    data_dir: Path, bundle: Path, *, silence_s: float = SILENCE_S
) -> Iterator[Platform]:
    """`neocloud up` on the bridge's address, installing agents at burn-in from ``bundle`` with
    this interpreter's base executable (a host must be up: the bridge exists from the first
    one); an agent silent for ``silence_s`` fails its node."""
    env = {
        "NEOCLOUD_AGENT_INSTALL": "pythonpath",
        "NEOCLOUD_AGENT_PYTHON": os.path.realpath(sys.executable),
        "NEOCLOUD_AGENT_PYTHONPATH": str(bundle),
        "NEOCLOUD_AGENT_INTERVAL_S": "1",
        "NEOCLOUD_AGENT_SILENCE_S": str(silence_s),
        "NEOCLOUD_AGENT_REPORT_TIMEOUT_S": "30",
    }
    with running_platform(data_dir, host=BRIDGE, env=env) as running:
        yield running


def register(p: Platform, host: Host, name: str, private_key: str, recorded: str) -> str:
    node = p.ok(
        "POST",
        "/nodes",
        json={
            "hostname": name,
            "gpu_model": "H100",
            "gpu_count": 8,
            "vcpus": 224,
            "ram_gib": 2048,
            "nvme_gib": 30000,
            "topology": TOPOLOGY,
            "driver": "ssh",
            "driver_config": {
                "address": host.address,
                "private_key": private_key,
                "agent_recorded": recorded,
            },
        },
    )
    return str(node["id"])


def node(p: Platform, node_id: str) -> dict[str, Any]:
    got: dict[str, Any] = p.ok("GET", f"/nodes/{node_id}")
    return got


def tenant_key(p: Platform) -> str:
    slug = f"agent-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    p.cli(None, "orgs", "create", slug, "--owner-email", f"{slug}@lab.example")
    p.cli(None, "quotas", "set", "H100-SXM-80GB", "16", "--org", slug)
    key = json.loads(p.cli(None, "keys", "create", "t", "--org", slug, "--json").stdout)
    return str(key["secret"])


def test_agents_installed_at_burn_in_report_and_fail_their_nodes(
    testhost: Callable[..., Host], operator_keypair: tuple[str, str, Path], tmp_path: Path
) -> None:
    op_private, op_public, _ = operator_keypair
    hosts = [testhost("ag", gpus=8, authorized_key=op_public) for _ in range(2)]
    ecc_host = testhost("ag", gpus=8, authorized_key=op_public)
    with agent_bundle() as bundle, agent_platform(tmp_path, bundle) as p:
        nodes = [register(p, h, f"gpu-{i}", op_private, "h100") for i, h in enumerate(hosts)]
        bad = register(p, ecc_host, "gpu-ecc", op_private, "h100-ecc")
        for node_id in nodes:
            wait_for(f"{node_id} available", lambda n=node_id: node(p, n)["state"] == "available")

        # The node appears with its inventory (recorded: simulated, never silently) and health.
        health = p.ok("GET", f"/nodes/{nodes[0]}/health")
        assert health["state"] == "available"
        # Nothing failed; the only warnings are the active checks a recorded source skips
        # (no made-up numbers).
        not_passing = {k: v for k, v in health["checks"].items() if v["status"] != "pass"}
        assert set(not_passing) == {"agent.gemm_bf16", "agent.hbm_bandwidth"}, not_passing
        assert all(v["message"].startswith("skipped: recorded") for v in not_passing.values())
        assert health["health"] == "warning"
        agent = health["agent"]
        assert agent["simulated"] is True
        assert agent["seen_at"] is not None
        assert agent["token_issued_at"] is not None
        gpus = agent["inventory"]["gpus"]
        assert len(gpus) == 8
        assert {g["name"] for g in gpus} == {"NVIDIA H100 80GB HBM3"}
        assert health["checks"]["gpu.count"]["status"] == "pass"
        assert len(health["telemetry"]) == 8

        # The token: root-only on the node, never on a command line, never in the server's log.
        token_path = hosts[0].root / TOKEN_FILE
        token = token_path.read_text().strip()
        assert token.startswith("nca_")
        mode = token_path.stat()
        assert stat.S_IMODE(mode.st_mode) == 0o600
        assert mode.st_uid == 0
        procs = hosts[0].exec("ps -eo args").stdout
        assert "neocloud.agent" in procs
        assert "--token-file" in procs
        assert token not in procs
        assert token not in p.log.read_text()

        # One node's token cannot report for another.
        beat = {
            "node_id": nodes[1],
            "agent_version": "0.1.0",
            "simulated": True,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        refused = p.api("POST", "/agent/heartbeat", key=token, json=beat)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "agent_wrong_node"

        # A host whose GPUs carry an uncorrectable ECC error fails burn-in, saying why.
        wait_for("the ECC node in repair", lambda: node(p, bad)["state"] == "repair")
        reason = node(p, bad)["state_reason"] or ""
        assert "burn-in failed" in reason, reason
        assert "gpu.ecc" in reason, reason

        # Telemetry flows to the tenant's instance metrics and to /metrics.
        key = tenant_key(p)
        public = op_public.strip()
        created = p.ok(
            "POST", "/instances", key, json={"instance_type": "8xH100", "ssh_keys": [public]}
        )
        inst = wait_for(
            "running",
            lambda: (
                (i := p.ok("GET", f"/instances/{created['id']}", key))["state"]
                in ("running", "failed")
                and i
            ),
        )
        assert inst["state"] == "running", inst
        used = nodes.index(inst["node_id"])
        metrics = p.ok("GET", f"/instances/{inst['id']}/metrics", key)
        assert metrics["node_id"] == inst["node_id"]
        assert sorted(g["gpu_index"] for g in metrics["latest"]) == list(range(8))
        assert all(g["node_id"] == inst["node_id"] for g in metrics["latest"])
        scrape = httpx.get(
            f"{p.url}/metrics", headers={"Authorization": f"Bearer {p.admin_key}"}, timeout=10
        )
        assert scrape.status_code == 200
        util = [ln for ln in scrape.text.splitlines() if ln.startswith("DCGM_FI_DEV_GPU_UTIL{")]
        assert sum(f'node="{n}"' in ln for ln in util for n in nodes) == 16, util

        # An ECC error on the node in use: its agent restarts with the recorded source changed
        # (the setting the launcher reads at each start); the node fails, and the instance.
        switched = hosts[used].exec(
            "sed -i 's/^AGENT_RECORDED=.*/AGENT_RECORDED=h100-ecc/' /etc/neocloud/agent.env"
            " && neocloud-agent-ctl restart"
        )
        assert switched.returncode == 0, switched.stderr
        failed = wait_for(
            "the instance failed",
            lambda: (i := p.ok("GET", f"/instances/{inst['id']}", key))["state"] == "failed" and i,
            timeout=30,
        )
        assert failed["state_reason"] == "node_failed", failed
        assert node(p, nodes[used])["state"] == "failed"
        assert "gpu.ecc" in (node(p, nodes[used])["state_reason"] or "")

        # A killed agent: the idle node fails after the configured silence.
        idle = 1 - used
        assert hosts[idle].exec(["pkill", "-f", "neocloud.agent"]).returncode == 0
        killed_at = time.monotonic()
        wait_for(
            "the silent node failed",
            lambda: node(p, nodes[idle])["state"] == "failed",
            timeout=SILENCE_S + 20,
        )
        assert time.monotonic() - killed_at >= SILENCE_S - 1.5
        assert "agent silent for" in (node(p, nodes[idle])["state_reason"] or "")
