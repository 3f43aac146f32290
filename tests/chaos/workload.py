"""The chaos and soak clients: SDK clients in threads against every API replica, creating and
terminating instances and clusters (each create with an Idempotency-Key, replayed on another
replica), and sending usage events twice (the second a replay). A call cut off by a dying
replica is retried on another replica with the same key, as a careful client does."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from neocloud.client import ApiError, Client

from .harness import Platform
from .invariants import Record

# Retried on another replica with the same key: no connection (status 0), or the key's first
# request still running (or cut off by a SIGKILL: its lease lapses, then the retry runs it, or
# is answered idempotency_outcome_unknown, counted as an answer, if it had taken effect).
TRANSIENT_CODES = {"idempotency_key_in_use"}
TYPES = ("1xH100", "2xH100", "4xH100", "8xH100")


class Tenant:
    def __init__(self, org_id: str, key: str) -> None:
        self.org_id, self.key = org_id, key


def make_tenant(admin: Client, slug: str, quota: int) -> Tenant:
    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    admin.quotas.set(org["id"], "H100-SXM-80GB", quota)
    return Tenant(org["id"], key["secret"])


class Clients:
    """One SDK client per replica for one key; ``call`` tries replicas until one answers."""

    def __init__(
        self, plat: Platform, key: str, rng: random.Random, stop: threading.Event | None = None
    ) -> None:
        self.plat, self.rng, self.stop = plat, rng, stop
        self.by_url = {
            p.url or "": Client(p.url or "", key, retries=0, timeout=20) for p in plat.apis()
        }

    def close(self) -> None:
        for client in self.by_url.values():
            client.close()

    def call(self, fn: Callable[[Client], Any], record: Record, deadline_s: float = 30) -> Any:
        urls = list(self.by_url)
        end = time.monotonic() + deadline_s
        while True:
            client = self.by_url[self.rng.choice(urls)]
            started = time.monotonic()
            try:
                answer = fn(client)
                with record.lock:
                    record.latencies_s.append((started, time.monotonic() - started))
                return answer
            except ApiError as exc:
                if exc.status != 0 and exc.status < 500 and exc.code not in TRANSIENT_CODES:
                    raise
                record.error(exc.code if exc.status else "connection_error")
                if time.monotonic() > end or (self.stop is not None and self.stop.is_set()):
                    record.error(f"gave_up.{exc.code}")  # e.g. a key a killed replica held
                    raise
                time.sleep(0.2)


def _period_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def tenant_loop(
    plat: Platform,
    tenant: Tenant,
    record: Record,
    stop: threading.Event,
    seed: int,
    *,
    clusters: bool = True,
) -> None:
    rng = random.Random(seed)
    clients = Clients(plat, tenant.key, rng, stop)
    live: list[str] = []
    live_clusters: list[str] = []
    try:
        while not stop.is_set():
            roll = rng.random()
            try:
                if roll < 0.45 or not live:
                    key = str(uuid.uuid4())
                    kind = rng.choice(TYPES)

                    def create(c: Client, k: str = key, t: str = kind) -> Any:
                        return c.instances.create(t, idempotency_key=k)

                    first = clients.call(create, record)
                    again = clients.call(create, record)
                    with record.lock:
                        record.replays.append((f"instance {key}", first["id"], again["id"]))
                        record.instances.add(first["id"])
                    live.append(first["id"])
                    record.op("instance.create")
                elif clusters and roll < 0.55:
                    key = str(uuid.uuid4())

                    def create_cluster(c: Client, k: str = key) -> Any:
                        return c.clusters.create("H100", 2, idempotency_key=k)

                    first = clients.call(create_cluster, record)
                    again = clients.call(create_cluster, record)
                    with record.lock:
                        record.replays.append((f"cluster {key}", first["id"], again["id"]))
                        record.clusters.add(first["id"])
                    live_clusters.append(first["id"])
                    record.op("cluster.create")
                elif live_clusters and roll < 0.62:
                    cid = live_clusters.pop(rng.randrange(len(live_clusters)))
                    _ended_ok(lambda c, i=cid: c.clusters.terminate(i), clients, record)
                    record.op("cluster.terminate")
                else:
                    iid = live.pop(rng.randrange(len(live)))
                    _ended_ok(lambda c, i=iid: c.instances.terminate(i), clients, record)
                    record.op("instance.terminate")
            except ApiError as exc:
                record.error(exc.code)  # no_capacity, quota: answers, not faults
            time.sleep(rng.uniform(0, 0.1))
    finally:
        clients.close()


def _ended_ok(fn: Callable[[Client], Any], clients: Clients, record: Record) -> None:
    try:
        clients.call(fn, record)
    except ApiError as exc:
        if exc.status != 409:  # already ending or ended: fine
            raise


def usage_loop(
    plat: Platform,
    admin_key: str,
    tenants: list[Tenant],
    record: Record,
    stop: threading.Event,
    seed: int,
) -> None:
    """Operator metering: batches of tokens events, each batch sent twice."""
    rng = random.Random(seed)
    clients = Clients(plat, admin_key, rng, stop)
    try:
        while not stop.is_set():
            tenant = rng.choice(tenants)
            now = datetime.now(UTC).isoformat()
            batch = [
                {
                    "id": str(uuid.uuid4()),
                    "source": "chaos",
                    "type": "tokens",
                    "subject": "neocloud/tiny-llama",
                    "time": now,
                    "data": {
                        "model": "neocloud/tiny-llama",
                        "input_tokens": rng.randint(1, 999),
                        "output_tokens": 1,
                    },
                }
                for _ in range(5)
            ]
            try:
                for _ in range(2):  # the second send is a replay: all duplicates
                    clients.call(
                        lambda c, b=batch, o=tenant.org_id: c.usage.send(b, org_id=o), record
                    )
            except ApiError as exc:
                record.error(exc.code)
                continue
            with record.lock:
                for event in batch:
                    record.usage_sent[(tenant.org_id, event["id"])] = event["data"]["input_tokens"]
            record.op("usage.batch")
            time.sleep(rng.uniform(0, 0.2))
    finally:
        clients.close()


def studio_loop(
    plat: Platform, tenant: Tenant, record: Record, stop: threading.Event, seed: int, model: str
) -> None:
    """Chat requests through any replica, counted per org as attempted and answered (a request
    cut off by a dying replica has no answer and is not retried: the caller saw an error)."""
    import httpx

    rng = random.Random(seed)
    https = [
        httpx.Client(
            base_url=p.url or "", headers={"Authorization": f"Bearer {tenant.key}"}, timeout=20
        )
        for p in plat.apis()
    ]
    body = {"model": model, "messages": [{"role": "user", "content": "count the GPUs, please"}]}
    try:
        while not stop.is_set():
            http = rng.choice(https)
            started = time.monotonic()
            with record.lock:
                record.studio_attempted[tenant.org_id] += 1
            try:
                answer = http.post("/v1/chat/completions", json=body)
            except httpx.TransportError:
                record.error("studio.connection_error")
                time.sleep(0.2)
                continue
            if answer.status_code == 200:
                with record.lock:
                    record.studio_answered[tenant.org_id] += 1
                    record.latencies_s.append((started, time.monotonic() - started))
                record.op("studio.chat")
            else:
                record.error(f"studio.{answer.status_code}")
            time.sleep(rng.uniform(0, 0.1))
    finally:
        for http in https:
            http.close()
