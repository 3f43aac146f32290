"""SDK resources for compute: ``client.instance_types``, ``client.instances``,
``client.clusters``, ``client.reservations``, ``client.capacity``, ``client.images``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from neocloud.client.resources import Resource

Obj = dict[str, Any]
FINAL_INSTANCE_STATES = frozenset({"running", "terminated", "failed", "preempted"})


def _body(**fields: Any) -> Obj:
    return {k: v for k, v in fields.items() if v is not None}


def ssh_config_block(instance: Obj) -> str:
    """An OpenSSH ``Host`` block for a running instance (Host: its name, else its id), from
    the instance's ``ssh`` view; ``ValueError`` when it has none (it is not running). No
    ``IdentityFile``: your agent or default key applies."""
    ssh = instance.get("ssh")
    if not ssh:
        raise ValueError(
            f"instance {instance['id']} is {instance['state']}: it has an ssh login only while "
            "it runs"
        )
    lines = []
    if instance.get("simulated"):
        lines.append("# SIMULATED: a documentation-range address; no server answers it")
    host = str(ssh["host"]).replace("%", "%%")  # % starts a token in HostName
    lines += [
        f"Host {instance.get('name') or instance['id']}",
        f"    HostName {host}",
        f"    Port {ssh['port']}",
        f"    User {ssh['user']}",
    ]
    return "\n".join(lines) + "\n"


class InstanceTypesResource(Resource):
    def list(self, *, gpu_model: str | None = None) -> list[Obj]:
        result: list[Obj] = self._c.get("instance-types", gpu_model=gpu_model)["data"]
        return result


class InstancesResource(Resource):
    def create(
        self,
        instance_type: str,
        *,
        cls: str = "on_demand",
        project_id: str | None = None,
        reservation_policy: str | None = None,
        reservation_ids: list[str] | None = None,
        ssh_keys: list[str] | None = None,
        ssh_key_ids: list[str] | None = None,
        image: str | None = None,
        user_data: str | None = None,
        name: str | None = None,
        queue: bool | None = None,
        max_wait_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        """Ask for an instance; it answers ``pending`` (use ``wait`` for ``running``).

        ``image`` names an image of ``client.images`` (default: the default image);
        ``ssh_key_ids`` your org's SSH keys, ``ssh_keys`` more public key lines; ``user_data``
        a ``#!`` script or ``#cloud-config`` (at most 64 KiB). With ``queue`` (or
        ``max_wait_s``) a request that does not fit waits ``pending`` for capacity instead of
        failing with ``no_capacity``."""
        body = _body(
            queue=queue,
            max_wait_s=max_wait_s,
            instance_type=instance_type,
            project_id=project_id,
            reservation_policy=reservation_policy,
            reservation_ids=reservation_ids,
            ssh_keys=ssh_keys,
            ssh_key_ids=ssh_key_ids,
            image=image,
            user_data=user_data,
            name=name,
        )
        body["class"] = cls
        result: Obj = self._c.post("instances", body, idempotency_key=idempotency_key)
        return result

    def get(self, instance_id: str) -> Obj:
        result: Obj = self._c.get(f"instances/{instance_id}")
        return result

    def list(self, *, limit: int | None = None, after: str | None = None, **filters: Any) -> Obj:
        """One page; filters: state, project_id, cls, cluster_id."""
        if "cls" in filters:
            filters["class"] = filters.pop("cls")
        result: Obj = self._c.get("instances", limit=limit, after=after, **filters)
        return result

    def iter(self, **filters: Any) -> Iterator[Obj]:
        return self._c.iter("instances", **filters)

    def terminate(self, instance_id: str) -> Obj:
        result: Obj = self._c.post(f"instances/{instance_id}/terminate")
        return result

    def reboot(self, instance_id: str, *, idempotency_key: str | None = None) -> Obj:
        """Reboot a running instance (answers at once; the events say when it is back)."""
        result: Obj = self._c.post(
            f"instances/{instance_id}/reboot", idempotency_key=idempotency_key
        )
        return result

    def events(
        self, instance_id: str, *, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get(f"instances/{instance_id}/events", limit=limit, after=after)
        return result

    def ssh_config(self, instance_id: str) -> str:
        """The running instance's OpenSSH ``Host`` block (see ``ssh_config_block``)."""
        return ssh_config_block(self.get(instance_id))

    def metrics(self, instance_id: str, *, since: str | None = None) -> Obj:
        """The instance's GPUs: ``latest`` telemetry per GPU and the ``series`` (averages and
        maxima per ``step_s`` bucket) since ``since`` (RFC 3339; default an hour ago)."""
        result: Obj = self._c.get(f"instances/{instance_id}/metrics", since=since)
        return result

    def wait(
        self,
        instance_id: str,
        *,
        until: frozenset[str] = FINAL_INSTANCE_STATES,
        timeout_s: float = 600.0,
        poll_s: float = 0.5,
    ) -> Obj:
        """Poll until the instance reaches one of ``until`` (default: running or an end)."""
        deadline = time.monotonic() + timeout_s
        while True:
            inst = self.get(instance_id)
            if inst["state"] in until or time.monotonic() >= deadline:
                return inst
            time.sleep(poll_s)


class ClustersResource(Resource):
    def create(
        self,
        gpu_model: str,
        node_count: int,
        *,
        cls: str = "on_demand",
        topology: Obj | None = None,
        fabric: str | None = None,
        project_id: str | None = None,
        ssh_keys: list[str] | None = None,
        ssh_key_ids: list[str] | None = None,
        image: str | None = None,
        user_data: str | None = None,
        name: str | None = None,
        queue: bool | None = None,
        max_wait_s: int | None = None,
        scheduler: Obj | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        """Ask for a gang of ``node_count`` whole nodes; ``scheduler``: ``{"type": "slurm"}``
        for managed Slurm on the members; ``topology`` e.g.
        ``{"required": "fabric", "preferred": "block", "segment": 4}``; ``image``, keys,
        ``user_data`` (every member's), ``queue`` and ``max_wait_s`` as for instances."""
        body = _body(
            queue=queue,
            max_wait_s=max_wait_s,
            gpu_model=gpu_model,
            node_count=node_count,
            topology=topology,
            fabric=fabric,
            project_id=project_id,
            ssh_keys=ssh_keys,
            ssh_key_ids=ssh_key_ids,
            image=image,
            user_data=user_data,
            name=name,
            scheduler=scheduler,
        )
        body["class"] = cls
        result: Obj = self._c.post("clusters", body, idempotency_key=idempotency_key)
        return result

    def get(self, cluster_id: str) -> Obj:
        result: Obj = self._c.get(f"clusters/{cluster_id}")
        return result

    def list(self, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get("clusters", limit=limit, after=after)
        return result

    def terminate(self, cluster_id: str) -> Obj:
        result: Obj = self._c.post(f"clusters/{cluster_id}/terminate")
        return result

    def topology(self, cluster_id: str, format: str = "slurm-tree") -> str:
        """Where the placed members sit, as text: ``slurm-tree`` or ``slurm-block``
        (``topology.conf``) or ``k8s-labels`` (a script of ``kubectl label node`` lines)."""
        return self._c.get_text(f"clusters/{cluster_id}/topology", format=format)

    def events(self, cluster_id: str, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get(f"clusters/{cluster_id}/events", limit=limit, after=after)
        return result

    def hosts(self, cluster_id: str, format: str = "ssh-config") -> str:
        """The running members as text: ``ssh-config``, ``hostfile``, ``ansible``, ``dstack``
        or ``skypilot``."""
        return self._c.get_text(f"clusters/{cluster_id}/hosts", format=format)


class ReservationsResource(Resource):
    def offerings(
        self,
        gpu_model: str,
        node_count: int,
        duration_hours: int,
        *,
        start_after: str | None = None,
        start_before: str | None = None,
        fabric: str | None = None,
        org_id: str | None = None,
    ) -> list[Obj]:
        """Up to 6 priced capacity blocks, each valid for 5 minutes (``org_id``: operator
        admins quoting a contract for a tenant, up to 5 years)."""
        body = _body(
            gpu_model=gpu_model,
            node_count=node_count,
            duration_hours=duration_hours,
            start_after=start_after,
            start_before=start_before,
            fabric=fabric,
            org_id=org_id,
        )
        result: list[Obj] = self._c.post("reservations/offerings", body)["data"]
        return result

    def buy(self, offering_id: str, *, idempotency_key: str | None = None) -> Obj:
        result: Obj = self._c.post(
            "reservations", {"offering_id": offering_id}, idempotency_key=idempotency_key
        )
        return result

    def get(self, reservation_id: str) -> Obj:
        result: Obj = self._c.get(f"reservations/{reservation_id}")
        return result

    def list(self, *, limit: int | None = None, after: str | None = None) -> Obj:
        result: Obj = self._c.get("reservations", limit=limit, after=after)
        return result

    def cancel(self, reservation_id: str) -> Obj:
        result: Obj = self._c.post(f"reservations/{reservation_id}/cancel")
        return result

    def extend(self, reservation_id: str, hours: int) -> Obj:
        result: Obj = self._c.post(f"reservations/{reservation_id}/extend", {"hours": hours})
        return result

    def events(self, reservation_id: str) -> Obj:
        result: Obj = self._c.get(f"reservations/{reservation_id}/events")
        return result


class CapacityResource(Resource):
    def get(self, *, gpu_model: str | None = None) -> list[Obj]:
        """Availability per region and GPU model (exact numbers for operators)."""
        result: list[Obj] = self._c.get("capacity", gpu_model=gpu_model)["data"]
        return result


class ImagesResource(Resource):
    """The operator's OS image catalog; publish, update and retire are operator admins'."""

    def get(self, name: str) -> Obj:
        result: Obj = self._c.get(f"images/{name}")
        return result

    def publish(
        self,
        name: str,
        *,
        os: str,
        drivers: list[str],
        cuda_driver: str | None = None,
        cuda_toolkit: str | None = None,
        login_user: str | None = None,
        cloud_init: bool = False,
        is_default: bool = False,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> Obj:
        body = _body(
            name=name,
            os=os,
            drivers=drivers,
            cuda_driver=cuda_driver,
            cuda_toolkit=cuda_toolkit,
            login_user=login_user,
            description=description,
        )
        body |= {"cloud_init": cloud_init, "is_default": is_default}
        result: Obj = self._c.post("images", body, idempotency_key=idempotency_key)
        return result

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        drivers: list[str] | None = None,
        is_default: bool | None = None,
    ) -> Obj:
        body = _body(description=description, drivers=drivers, is_default=is_default)
        result: Obj = self._c.patch(f"images/{name}", body)
        return result

    def retire(self, name: str) -> Obj:
        result: Obj = self._c.delete(f"images/{name}")
        return result

    def list(
        self, *, include_retired: bool = False, limit: int | None = None, after: str | None = None
    ) -> Obj:
        result: Obj = self._c.get(
            "images", include_retired=include_retired or None, limit=limit, after=after
        )
        return result

    def iter(self, *, include_retired: bool = False) -> Iterator[Obj]:
        return self._c.iter("images", include_retired=include_retired or None)
