"""The platform's ``redfish`` entry: BMC-only nodes, and ``redfish`` + ``ssh`` nodes that reimage.

A ``redfish`` node whose settings also name an ssh ``address`` (and whose credentials hold an
operator ``private_key`` beside the BMC login) is a **redfish + ssh** node: its OS steps run
over SSH (``provision``, ``deprovision``, ``reboot``, ``run_root``, the GPU part of
``health``), power, boot and inventory through the BMC, and between tenants it is **reimaged**
instead of cleaned:

1. over SSH (best effort: the tenant may have broken it), write the marker file
   ``REIMAGE_MARKER``, which a fresh disk does not have;
2. through the BMC: power off, insert the image (``image_url``) and a cloud-init seed holding
   only the operator's key for the ssh user, boot once from the image, power on;
3. the reconciler checks back (``check_wipe``) after ``boot_s``, then every ``poll_s``: the node
   is done once SSH answers with the operator key **and** the marker is gone; SSH silent or the
   marker still there after ``timeout_s`` fails the reimage (the node goes ``failed`` with the
   reason). The host key the ssh driver trusted on first use is forgotten from step 2 until
   the check passes: a new install makes new host keys (a pinned ``host_key`` is kept, so such
   a node's image must keep its keys).

A node with BMC settings only is the ``RedfishDriver``'s, step for step.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from neocloud.drivers.base import (
    HealthResult,
    Login,
    NodeRef,
    ProvisionRequest,
    SeedPublisher,
    StepResult,
    WipeProgress,
)
from neocloud.drivers.nocloud import Seed
from neocloud.drivers.redfish import RedfishDriver
from neocloud.drivers.ssh import SshDriver
from neocloud.drivers.ssh_session import SshStepError

log = logging.getLogger(__name__)

REIMAGE_MARKER = "/var/lib/neocloud/reimage-pending"
REIMAGE_WORKLOAD = "reimage"  # the seeds' workload id prefix for a reimage
_MARK = f"mkdir -p /var/lib/neocloud && echo pending > {REIMAGE_MARKER} && sync"
_PROBE = (
    f"if [ -e {REIMAGE_MARKER} ]; then echo marker=present; else echo marker=absent; fi; "
    "echo boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
)


def has_ssh(node: NodeRef) -> bool:
    """Whether a ``redfish`` node is a redfish + ssh node (its settings name an address)."""
    return bool(node.config.get("address"))


class BareMetalDriver:
    """See the module docstring. ``timeout_s``: how long a reimage may take until SSH answers
    again; ``poll_s``: how often the reconciler looks meanwhile; ``probe_timeout_s``: one SSH
    probe or marker write."""

    def __init__(
        self,
        redfish: RedfishDriver,
        ssh: SshDriver,
        *,
        seeds: SeedPublisher | None = None,
        timeout_s: float = 1800.0,
        poll_s: float = 10.0,
        probe_timeout_s: float = 20.0,
    ) -> None:
        self.redfish, self.ssh = redfish, ssh
        self.seeds = seeds if seeds is not None else redfish.seeds
        self.timeout_s, self.poll_s, self.probe_timeout_s = timeout_s, poll_s, probe_timeout_s

    @property
    def shares_nodes(self) -> bool:
        return False

    # -- OS steps: SSH where the node has it ---------------------------------------------------

    def provision(self, node: NodeRef, request: ProvisionRequest) -> StepResult:
        if has_ssh(node):
            return self.ssh.provision(node, request)
        return self.redfish.provision(node, request)

    def deprovision(self, node: NodeRef, *, workload_id: str, login_user: str) -> StepResult:
        if self.seeds is not None:
            self.seeds.discard(node_id=node.id, workload_id=workload_id)
        if has_ssh(node):
            return self.ssh.deprovision(node, workload_id=workload_id, login_user=login_user)
        return self.redfish.deprovision(node, workload_id=workload_id, login_user=login_user)

    def reboot(self, node: NodeRef, *, workload_id: str) -> StepResult:
        if has_ssh(node):
            return self.ssh.reboot(node, workload_id=workload_id)
        return self.redfish.reboot(node, workload_id=workload_id)

    def run_root(
        self, node: NodeRef, script: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> tuple[int, str]:
        """The ssh driver's ``run_root`` (``Executor``); -1 for a BMC-only node."""
        if not has_ssh(node):
            return -1, f"node {node.hostname}: a redfish-only node has no OS login"
        return self.ssh.run_root(node, script, timeout_s=timeout_s, stdin=stdin)

    def stream_root(
        self,
        node: NodeRef,
        script: str,
        *,
        timeout_s: float,
        stdin: bytes,
        on_line: Callable[[str], None],
    ) -> tuple[int, str]:
        """The ssh driver's ``stream_root`` (``Streamer``); -1 for a BMC-only node."""
        if not has_ssh(node):
            return -1, f"node {node.hostname}: a redfish-only node has no OS login"
        return self.ssh.stream_root(node, script, timeout_s=timeout_s, stdin=stdin, on_line=on_line)

    # -- the BMC's ----------------------------------------------------------------------------

    def power(self, node: NodeRef, *, on: bool) -> StepResult:
        return self.redfish.power(node, on=on)

    def reset(self, node: NodeRef) -> StepResult:
        return self.redfish.reset(node)

    def inspect(self, node: NodeRef) -> dict[str, Any]:
        return self.redfish.inspect(node)

    def health(self, node: NodeRef) -> HealthResult:
        """The BMC's health, and for a redfish + ssh node the ssh driver's too (both pass)."""
        bmc = self.redfish.health(node)
        if not has_ssh(node) or not bmc.ok:
            return bmc
        os_health = self.ssh.health(node)
        checks = {**bmc.checks, **os_health.checks}
        message = "; ".join(m for m in (bmc.message, os_health.message) if m)
        return HealthResult(bmc.ok and os_health.ok, checks, message or None)

    # -- between tenants ------------------------------------------------------------------------

    def wipe(self, node: NodeRef) -> StepResult:
        """A BMC-only node: the redfish wipe. A redfish + ssh node: start a reimage."""
        if not has_ssh(node):
            if self.seeds is not None:
                self.seeds.discard(node_id=node.id)
            return self.redfish.wipe(node)
        return self._reimage(node)

    def _reimage(self, node: NodeRef) -> StepResult:
        notes: list[str] = []
        status, out = self.ssh.run_root(node, _MARK, timeout_s=self.probe_timeout_s)
        if status == 0:
            notes.append(f"reimage: marker {REIMAGE_MARKER} written")
        else:
            notes.append(f"reimage: marker not written (SSH: {out.strip()[:200]})")
        try:
            operator = self.ssh.operator_public_key(node)
            user = str(node.config.get("user", "root"))
        except SshStepError as exc:
            return StepResult(False, message=f"node {node.hostname}: reimage: {exc}", repair=True)
        if self.seeds is not None:
            self.seeds.discard(node_id=node.id)  # any tenant's seed left behind
        off = self.redfish.power(node, on=False)
        if not off.ok:
            return StepResult(False, message=off.message, notes=tuple(notes), repair=True)
        notes.extend(off.notes)
        seed = Seed(
            f"{REIMAGE_WORKLOAD}-{secrets.token_hex(8)}",
            node.hostname,
            Login(user, (operator,), sudo=True),
        )
        booted = self.redfish.boot_image(node, seed=seed, what="reimage")
        if not booted.ok:
            return StepResult(False, message=booted.message, notes=tuple(notes), repair=True)
        self.ssh.forget_host_key(node)
        notes.extend(booted.notes)
        log.info("reimage of node %s started", node.hostname)
        return StepResult(True, booted.duration_s, notes=tuple(notes))

    def check_wipe(self, node: NodeRef, *, elapsed_s: float) -> WipeProgress:
        """A redfish + ssh node's reimage: done once SSH answers and the marker is gone
        (``WipeChecker``); a BMC-only node's wipe is done when its duration has passed."""
        if not has_ssh(node):
            return WipeProgress(True)
        # Until the reimage is over, the host key may change at any probe (the old OS still
        # up, then the new one): trusted on first use again each time.
        self.ssh.forget_host_key(node)
        status, out = self.ssh.run_root(node, _PROBE, timeout_s=self.probe_timeout_s)
        fields = dict(
            line.split("=", 1) for line in out.splitlines() if "=" in line and status == 0
        )
        if status == 0 and fields.get("marker") == "absent":
            if self.seeds is not None:
                self.seeds.discard(node_id=node.id)
            boot = fields.get("boot_id") or "unknown"
            return WipeProgress(
                True, notes=(f"reimaged: SSH answers, marker gone, boot id {boot}",)
            )
        if elapsed_s < self.timeout_s:
            return WipeProgress(False, retry_s=self.poll_s)
        if self.seeds is not None:
            self.seeds.discard(node_id=node.id)
        if status == 0:
            why = (
                f"the node answers SSH but was not reimaged ({REIMAGE_MARKER} is still there "
                f"{elapsed_s:.0f} s after the reimage started)"
            )
        else:
            why = f"SSH did not answer within {self.timeout_s:.0f} s of the reimage: {out}"
        return WipeProgress(True, ok=False, message=f"node {node.hostname}: reimage failed: {why}")
