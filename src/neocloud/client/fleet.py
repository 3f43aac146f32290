"""SDK resources for the fleet: ``client.fleet`` (catalog, summary, topology, imports) and
``client.nodes`` (register, list, get, events, lifecycle actions, health reports)."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]


def _filters(
    *,
    role: str | None = None,
    gpu_model: str | None = None,
    state: str | None = None,
    health: str | None = None,
    hostname: str | None = None,
    labels: dict[str, str] | None = None,
    topology: dict[str, str] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "role": role,
        "gpu_model": gpu_model,
        "state": state,
        "health": health,
        "hostname": hostname,
    }
    if labels:
        params["label"] = [f"{k}={v}" for k, v in labels.items()]
    params.update(topology or {})
    return params


class FleetResource(Resource):
    def gpu_models(self) -> list[Obj]:
        result: list[Obj] = self._c.get("gpu-models")["data"]
        return result

    def summary(
        self,
        *,
        group_by: str | None = None,
        health: bool = False,
        within: tuple[str, str] | None = None,
    ) -> Obj:
        result: Obj = self._c.get(
            "fleet/summary",
            group_by=group_by,
            health="true" if health else None,
            within_level=within[0] if within else None,
            within=within[1] if within else None,
        )
        return result

    def topology(self, *, level: str | None = None) -> Obj:
        result: Obj = self._c.get("fleet/topology", level=level)
        return result

    def import_spec(self, spec_yaml: str, *, initial_state: str | None = None) -> Obj:
        """Send a fleet spec (YAML text); the server imports all of it or nothing."""
        result: Obj = self._c.request(
            "POST",
            "fleet/imports",
            content=spec_yaml.encode("utf-8"),
            params={"initial_state": initial_state},
            headers={"Content-Type": "application/yaml"},
        )
        return result


class NodesResource(Resource):
    def add(
        self,
        hostname: str,
        *,
        gpu_model: str | None = None,
        gpu_count: int | None = None,
        vcpus: int,
        ram_gib: int,
        topology: dict[str, str],
        nvme_gib: int = 0,
        labels: dict[str, str] | None = None,
        driver: str = "ssh",
        driver_config: Obj | None = None,
        idempotency_key: str | None = None,
        role: str = "gpu",
    ) -> Obj:
        """Register a server; it starts ``enrolled`` and burn-in checks it through its driver
        before any tenant gets it. ``role``: ``gpu`` (needs ``gpu_model`` and ``gpu_count``),
        or ``storage``/``service`` (the platform's own: no GPUs, never rented).
        ``driver_config`` for ``ssh``: ``address``, ``private_key``
        (the key's text; write-only, never returned), and optionally ``port``, ``user``,
        ``gpu_check`` (``nvidia-smi`` or ``none``), ``sudo``, ``scratch_paths``, ``host_key``,
        ``reboot_command``; for ``redfish``: ``bmc_url``, ``bmc_username``, ``bmc_password``
        (write-only, never returned), and optionally ``system_id``, ``verify_tls``,
        ``image_url``, ``boot_target`` (``cd``, ``pxe``, ``hdd``), ``reboot`` (``force``,
        ``graceful``), ``power_s``, ``boot_s``."""
        body: Obj = {
            "hostname": hostname,
            "role": role,
            "vcpus": vcpus,
            "ram_gib": ram_gib,
            "nvme_gib": nvme_gib,
            "topology": topology,
            "labels": labels or {},
            "driver": driver,
        }
        if gpu_model is not None:
            body["gpu_model"] = gpu_model
        if gpu_count is not None:
            body["gpu_count"] = gpu_count
        if driver_config is not None:
            body["driver_config"] = driver_config
        result: Obj = self._c.post("nodes", body, idempotency_key=idempotency_key)
        return result

    def list(self, *, limit: int | None = None, after: str | None = None, **filters: Any) -> Obj:
        """One page; filters: role, gpu_model, state, health, hostname, labels={k: v},
        topology={level: name}."""
        result: Obj = self._c.get("nodes", limit=limit, after=after, **_filters(**filters))
        return result

    def iter(self, **filters: Any) -> Iterator[Obj]:
        return self._c.iter("nodes", **_filters(**filters))

    def get(self, node_id: str) -> Obj:
        result: Obj = self._c.get(f"nodes/{node_id}")
        return result

    def events(self, node_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get(f"nodes/{node_id}/events", limit=limit, after=after)
        return result

    def health_checks(
        self, node_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get(f"nodes/{node_id}/health-checks", limit=limit, after=after)
        return result

    def _action(self, node_id: str, action: str, reason: str | None) -> Obj:
        body = {"reason": reason} if reason else {}
        result: Obj = self._c.post(f"nodes/{node_id}/{action}", body)
        return result

    def cordon(self, node_id: str, *, reason: str | None = None) -> Obj:
        return self._action(node_id, "cordon", reason)

    def uncordon(self, node_id: str, *, reason: str | None = None) -> Obj:
        return self._action(node_id, "uncordon", reason)

    def drain(self, node_id: str, *, reason: str | None = None) -> Obj:
        return self._action(node_id, "drain", reason)

    def retire(self, node_id: str, *, reason: str | None = None) -> Obj:
        return self._action(node_id, "retire", reason)

    def transition(self, node_id: str, to: str, *, reason: str | None = None) -> Obj:
        body = {"to": to, "reason": reason} if reason else {"to": to}
        result: Obj = self._c.post(f"nodes/{node_id}/transition", body)
        return result

    def power(self, node_id: str, action: str, *, force: bool = False) -> Obj:
        """Switch the node's power now through its driver: ``on``, ``off`` or ``reset``;
        ``force`` even while a tenant's workload is on it. A failure (409 ``power_failed``)
        is not retried (a BMC locks its account after repeated failed logins)."""
        result: Obj = self._c.post(f"nodes/{node_id}/power", {"action": action, "force": force})
        return result

    def inspect(self, node_id: str) -> Obj:
        """The node's inventory, read now through its driver (its BMC, SSH, or the declared
        facts of a simulated node)."""
        result: Obj = self._c.get(f"nodes/{node_id}/inspect")
        return result

    def health(self, node_id: str, *, history: int | None = None) -> Obj:
        """The node's health: latest checks, ``history`` past results (newest first), the
        agent's last heartbeat and inventory, each GPU's latest telemetry."""
        result: Obj = self._c.get(f"nodes/{node_id}/health", history=history)
        return result

    def issue_agent_token(self, node_id: str) -> Obj:
        """A new agent token for the node (``token``: shown once); the previous one stops."""
        result: Obj = self._c.post(f"nodes/{node_id}/agent-token")
        return result

    def revoke_agent_token(self, node_id: str) -> None:
        self._c.delete(f"nodes/{node_id}/agent-token")

    def report_health(self, node_id: str, checks: builtins.list[Obj]) -> Obj:
        """``checks``: ``[{"name": "dcgm", "status": "pass|warn|fail", "message": ...}]``."""
        result: Obj = self._c.post(f"nodes/{node_id}/health", {"checks": checks})
        return result
