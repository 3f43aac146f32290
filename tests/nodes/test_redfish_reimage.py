"""Cloud-init seeds through the BMC, and a ``redfish`` + ``ssh`` node reimaged between tenants.

Real: the ``sushy-tools`` emulator (power, boot override and virtual media calls, and its
download of every inserted image), the platform's reconciler, burn-in and scheduler, and a test
host reached over real SSH by the ssh driver. Emulated, and said so where it happens:

* the **seed server**: a loopback HTTP server holding the seeds the driver publishes (the same
  ``SeedPublisher`` port as the platform's ``/boot/seeds`` route, which
  ``tests/fleet/test_boot_seeds.py`` tests on its own);
* the **reimage itself**: the emulated BMC powers nothing real, so the test plays the server
  booting the image: it downs the test host and brings up a fresh one (a new overlay root, so
  no marker, new host keys) at the same address, whose root login takes the key the seed the
  BMC fetched carries (as cloud-init would have set it up). A server that comes back *without*
  being reimaged is played by restarting the host (``TESTHOST_REBOOT``: its disk kept).
"""

from __future__ import annotations

import email
import functools
import http.server
import importlib.util
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sushy  # type: ignore[import-untyped]
import yaml

from neocloud.client import Client
from neocloud.compute.worker import Worker
from neocloud.db.engine import Database
from neocloud.drivers.baremetal import REIMAGE_MARKER, BareMetalDriver
from neocloud.drivers.base import Drivers, Login, NodeRef, ProvisionRequest
from neocloud.drivers.nocloud import read_seed_iso
from neocloud.drivers.redfish import RedfishDriver
from neocloud.drivers.ssh import SshDriver
from neocloud.kernel.clock import VirtualClock
from neocloud.kernel.secrets import SecretBox

from .conftest import (
    BMC_PASSWORD,
    BMC_USER,
    IN_CI,
    TESTHOST_REBOOT,
    Emulator,
    Host,
    run_testhost,
    start_redfish_emulator,
    stop_emulator,
)
from .platform import running_platform, wait_for

SYSTEMS = {"seeded": "Off", "reimage": "Off", "unreimaged": "Off", "platform": "Off"}
TENANT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOqtTzXq3cqnyE4N2Tg0jU8ldqz0x+pv0PdyZQ8p7JZn t@x"
TOPOLOGY = {
    "region": "us-east-1",
    "zone": "us-east-1a",
    "fabric": "rf",
    "block": "rf-b01",
    "rack": "rf-b01-r01",
}


def tenant_client(admin: Client, slug: str) -> tuple[dict[str, Any], Client]:
    """An org whose owner holds a key, with an H100 quota; returns (org, SDK client)."""
    from fastapi.testclient import TestClient

    org = admin.orgs.create(slug.title(), slug=slug, owner_email=f"owner@{slug}.example")
    user = admin.users.list(org["id"])["data"][0]
    key = admin.keys.create("owner key", org_id=org["id"], user_id=user["id"])
    admin.quotas.set(org["id"], "H100-SXM-80GB", 64)
    http = TestClient(admin._http.app, raise_server_exceptions=False)
    return org, Client(api_key=key["secret"], http=http, retries=0)


def uuid_of(name: str) -> str:
    return f"00000000-0000-4000-a000-{list(SYSTEMS).index(name) + 1:012d}"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the emulator keeps the images it downloads (its TMPDIR)."""
    return tmp_path_factory.mktemp("emulator-downloads")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[Emulator]:
    if importlib.util.find_spec("sushy_tools") is None:
        if IN_CI:
            pytest.fail("sushy-tools (the Redfish emulator) is a dev dependency: install it")
        pytest.skip("sushy-tools (the Redfish emulator) is not installed")
    systems = [
        {"uuid": uuid_of(name), "name": name, "power_state": state}
        for name, state in SYSTEMS.items()
    ]
    emu, proc = start_redfish_emulator(
        tmp_path_factory.mktemp("redfish-reimage"), systems, downloads=downloads
    )
    try:
        yield emu
    finally:
        stop_emulator(proc)


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves the image directory and the published seeds; records what was fetched."""

    seeds: dict[str, bytes]
    fetched: list[str]

    def do_GET(self) -> None:
        self.fetched.append(self.path)
        body = self.seeds.get(self.path)
        if body is None:
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition", 'attachment; filename="seed.iso"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class SeedServer:
    """The emulated seed server (module docstring): a ``SeedPublisher`` over loopback HTTP."""

    def __init__(self, root: Path) -> None:
        (root / "os.iso").write_bytes(b"\0" * 32768)
        self.seeds: dict[str, bytes] = {}
        self.fetched: list[str] = []
        handler = type("Handler", (_Files,), {"seeds": self.seeds, "fetched": self.fetched})
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.serial = 0

    def publish(self, *, node_id: str, workload_id: str, image: bytes) -> str:
        self.serial += 1
        path = f"/boot/seeds/{node_id}-{workload_id}-{self.serial}.iso"
        self.seeds[path] = image
        return self.url + path

    def discard(self, *, node_id: str, workload_id: str | None = None) -> None:
        prefix = f"/boot/seeds/{node_id}-{workload_id or ''}"
        for path in [p for p in self.seeds if p.startswith(prefix)]:
            del self.seeds[path]

    def fetched_seeds(self) -> list[str]:
        return [p for p in self.fetched if p.startswith("/boot/seeds/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def seeds(tmp_path: Path) -> Iterator[SeedServer]:
    server = SeedServer(tmp_path)
    try:
        yield server
    finally:
        server.close()


def media(emulator: Emulator, name: str) -> dict[str, Any]:
    system = emulator.system(uuid_of(name))
    return {
        m.identity: (m.inserted, m.image, m.image_name) for m in system.virtual_media.get_members()
    }


# -- a redfish-only node: provision inserts the image and the tenant's seed ----------------------


def test_provision_inserts_image_and_seed_and_the_bmc_fetches_the_seed(
    emulator: Emulator, seeds: SeedServer
) -> None:
    box = SecretBox(SecretBox.new_key())
    driver = RedfishDriver(box, timeout_s=5, boot_s=60, seeds=seeds)
    sealed = box.seal({"bmc_username": BMC_USER, "bmc_password": BMC_PASSWORD})
    config = {
        "bmc_url": emulator.url,
        "system_id": uuid_of("seeded"),
        "image_url": f"{seeds.url}/os.iso",
    }
    ref = NodeRef("node_seeded", "gpu-seeded", "H100", 8, "redfish", config, sealed)
    script = "#!/bin/sh\necho first boot > /root/hello\n"
    request = ProvisionRequest(
        "inst_seed1", tuple(range(8)), "trainer", Login("alice", (TENANT_KEY,)), None, script
    )
    step = driver.provision(ref, request)
    assert step.ok, step.message
    assert "virtual media Cd: image inserted" in step.notes
    assert "virtual media Floppy: cloud-init seed inserted" in step.notes
    assert "boot override: Cd once" in step.notes
    assert not any("boot/seeds" in n for n in step.notes)  # the seed's URL is its token
    system = emulator.system(uuid_of("seeded"))
    assert system.boot.target is sushy.BootSource.CD
    found = media(emulator, "seeded")
    assert found["Cd"][:2] == (True, f"{seeds.url}/os.iso")
    assert found["Floppy"][0] is True
    assert found["Floppy"][2] == "seed.iso"  # the name our server gave the download
    # The emulator downloaded the seed from the URL the driver inserted: the image it got.
    (path,) = seeds.fetched_seeds()
    assert found["Floppy"][1] == seeds.url + path
    volume, files = read_seed_iso(seeds.seeds[path])
    assert volume == "cidata"
    assert yaml.safe_load(files["meta-data"]) == {
        "instance-id": "inst_seed1",
        "local-hostname": "trainer",
    }
    text = files["user-data"].decode()
    assert "text/x-shellscript" in text
    assert "text/cloud-config" in text
    wiped = driver.wipe(ref)  # ejects both media
    assert wiped.ok, wiped.message
    assert {k: v[0] for k, v in media(emulator, "seeded").items()} == {
        "Cd": False,
        "Floppy": False,
    }


def test_through_the_platform_the_bmc_mounts_the_seed_the_api_serves(
    tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, downloads: Path
) -> None:
    """``neocloud up``: a redfish node with an image; a tenant's instance with keys and a
    script; the emulator downloads the seed from ``/boot/seeds/…`` (the file it saved is read
    back), the seed is gone once the node booted, and neither its token nor the user data is
    in the server's log."""
    images = tmp_path_factory.mktemp("platform-images")
    files = SeedServer(images)  # serves the OS image only, here
    secret = "api-token-in-user-data-5c2e"
    try:
        with running_platform(tmp_path_factory.mktemp("seedplatform")) as p:
            node = p.ok(
                "POST",
                "/nodes",
                json={
                    "hostname": "rf-platform",
                    "gpu_model": "H100",
                    "gpu_count": 8,
                    "vcpus": 224,
                    "ram_gib": 2048,
                    "topology": {**TOPOLOGY, "rack": "rf-b01-platform"},
                    "driver": "redfish",
                    "driver_config": {
                        "bmc_url": emulator.url,
                        "system_id": uuid_of("platform"),
                        "bmc_username": BMC_USER,
                        "bmc_password": BMC_PASSWORD,
                        "image_url": f"{files.url}/os.iso",
                        "power_s": 0,
                        "boot_s": 8,
                    },
                },
            )
            wait_for("burn-in", lambda: p.ok("GET", f"/nodes/{node['id']}")["state"] == "available")
            org = p.ok("POST", "/orgs", json={"name": "Seedy", "slug": "seedy",
                                              "owner_email": "o@seedy.example"})  # fmt: skip
            user = p.ok("GET", f"/orgs/{org['id']}/users")["data"][0]
            key = p.ok("POST", "/keys", json={"name": "k", "org_id": org["id"],
                                              "user_id": user["id"]})["secret"]  # fmt: skip
            p.ok("PUT", f"/orgs/{org['id']}/quotas/H100-SXM-80GB", json={"limit_gpus": 8})
            script = f"#!/bin/sh\necho {secret} > /etc/app-token\n"
            created = p.ok(
                "POST",
                "/instances",
                key,
                json={"instance_type": "8xH100", "ssh_keys": [TENANT_KEY], "user_data": script},
            )
            floppy = wait_for(
                "the seed mounted",
                lambda: (m := media(emulator, "platform")).get("Floppy", (False,))[0] and m,
            )["Floppy"]
            assert floppy[1].startswith(f"{p.url}/boot/seeds/")
            assert floppy[2] == "seed.iso"
            (saved,) = list(downloads.glob("*/seed.iso"))  # what the emulator downloaded
            volume, seed_files = read_seed_iso(saved.read_bytes())
            assert volume == "cidata"
            assert yaml.safe_load(seed_files["meta-data"])["instance-id"] == created["id"]
            text = seed_files["user-data"].decode()
            assert "text/x-shellscript" in text
            assert TENANT_KEY.split()[1] in base64_parts(text)  # the tenant key (normalized)
            assert secret in base64_parts(text)
            wait_for(
                "running",
                lambda: p.ok("GET", f"/instances/{created['id']}", key)["state"] == "running",
            )
            assert httpx.get(floppy[1], timeout=10).status_code == 404  # the boot is over
            log = p.log.read_text()
            token = floppy[1].rsplit("/", 1)[1]
            assert "/boot/seeds/***" in log  # the BMC's fetch, redacted
            assert token not in log
            assert secret not in log
    finally:
        files.close()


def base64_parts(message: str) -> str:
    """The decoded text of every part of a MIME multipart user-data."""
    parsed = email.message_from_string(message)
    return "\n".join(
        part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        for part in parsed.walk()
        if not part.is_multipart()
    )


# -- a redfish + ssh node: reimaged between tenants ------------------------------------------


def register(admin: Client, emulator: Emulator, host: Host, name: str, key: str, image: str) -> str:
    node = admin.nodes.add(
        f"rf-{name}",
        gpu_model="H100",
        gpu_count=8,
        vcpus=224,
        ram_gib=2048,
        topology={**TOPOLOGY, "rack": f"rf-b01-{name}"},
        driver="redfish",
        driver_config={
            "bmc_url": emulator.url,
            "system_id": uuid_of(name),
            "bmc_username": BMC_USER,
            "bmc_password": BMC_PASSWORD,
            "image_url": image,
            "power_s": 0,
            "boot_s": 60,
            "address": host.address,
            "private_key": key,
        },
    )
    assert node["credentials"] == ["bmc_password", "bmc_username", "private_key"]
    return str(node["id"])


def node_state(admin: Client, node_id: str) -> str:
    return str(admin.nodes.get(node_id)["state"])


def tenant_round(
    admin: Client, emulator: Emulator, clock: VirtualClock, worker: Worker, node_id: str, name: str
) -> None:
    """Burn-in, one tenant's instance on the node over SSH, terminated: the node releases."""
    for _ in range(3):
        worker.run_once()
        clock.advance(1)
    assert node_state(admin, node_id) == "available"
    system = emulator.system(uuid_of(name))  # burn-in powered it on (the fake takes 1-11 s)
    deadline = time.monotonic() + 25
    while system.power_state is not sushy.PowerState.ON and time.monotonic() < deadline:
        time.sleep(0.25)
        system.refresh(force=True)
    assert system.power_state is sushy.PowerState.ON
    _, acme = tenant_client(admin, "acme")
    inst = acme.instances.create("8xH100", ssh_keys=[TENANT_KEY])
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "running"
    acme.instances.terminate(inst["id"])
    worker.run_once()
    clock.advance(1)
    worker.run_once()
    assert acme.instances.get(inst["id"])["state"] == "terminated"


def start(
    app: Any, db: Database, clock: VirtualClock, seeds: SeedServer
) -> tuple[Worker, BareMetalDriver]:
    box = app.state.secret_box
    ssh = SshDriver(box, connect_timeout_s=3, command_timeout_s=30)
    redfish = RedfishDriver(box, timeout_s=5, seeds=seeds)
    bare = BareMetalDriver(redfish, ssh, seeds=seeds, timeout_s=300, poll_s=10)
    return Worker(db, clock, driver=Drivers({"redfish": bare}), holder="w"), bare


def bmc_calls(emulator: Emulator, uuid: str) -> dict[str, int]:
    """The requests the emulator logged for one system, by kind."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", emulator.log.read_text(errors="replace"))
    system = f"/redfish/v1/Systems/{uuid}"
    return {
        "reset": text.count(f'"POST {system}/Actions/ComputerSystem.Reset '),
        "boot": text.count(f'"PATCH {system} '),
        "insert_cd": text.count(f'"POST {system}/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia'),
        "insert_floppy": text.count(
            f'"POST {system}/VirtualMedia/Floppy/Actions/VirtualMedia.InsertMedia'
        ),
    }


def test_a_redfish_ssh_node_is_reimaged_between_tenants(
    admin: Client,
    app: Any,
    db: Database,
    clock: VirtualClock,
    emulator: Emulator,
    seeds: SeedServer,
    testhost: Any,
    operator_keypair: tuple[str, str, Path],
) -> None:
    private_key, public_key, key_path = operator_keypair
    host = testhost("rimg", gpus=8, authorized_key=public_key)
    # The emulator outlives one test (both databases' runs use system "reimage"): start from a
    # powered-off server, as a new one is, and count the BMC calls from here.
    server = emulator.system(uuid_of("reimage"))
    before = bmc_calls(emulator, uuid_of("reimage"))
    if server.power_state is not sushy.PowerState.OFF:
        server.reset_system(sushy.ResetType.FORCE_OFF)
        before["reset"] += 1  # counted once its log line lands, with the test's own below
    node_id = register(admin, emulator, host, "reimage", private_key, f"{seeds.url}/os.iso")
    worker, _ = start(app, db, clock, seeds)
    tenant_round(admin, emulator, clock, worker, node_id, "reimage")

    # Released: the reimage started, the node is not available.
    assert node_state(admin, node_id) == "wiping"
    # The emulator logs a request after answering it: give its last lines a moment to land.
    deadline = time.monotonic() + 10
    while True:
        calls = {k: n - before[k] for k, n in bmc_calls(emulator, uuid_of("reimage")).items()}
        if calls["reset"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # At least the reimage's power call; its ForceOff, burn-in's power-on and the tenant's
    # power-off are skipped when the server is already in that state, which depends on what ran
    # on this emulator before (CI saw 1, 2 and 3 resets on the same code). The boot override
    # and both media inserts below are exact.
    assert calls["reset"] >= 1
    assert calls["boot"] >= 1  # the one-time boot override
    assert calls["insert_cd"] == 1
    assert calls["insert_floppy"] == 1
    assert host.exec(f"cat {REIMAGE_MARKER}").stdout.strip() == "pending"
    system = emulator.system(uuid_of("reimage"))
    assert system.boot.target is sushy.BootSource.CD  # boot once from the image
    found = media(emulator, "reimage")
    assert found["Cd"][:2] == (True, f"{seeds.url}/os.iso")
    assert found["Floppy"][0] is True
    (path,) = seeds.fetched_seeds()  # the BMC fetched the operator's seed, and only it
    _, files = read_seed_iso(seeds.seeds[path])
    config = yaml.safe_load(files["user-data"].decode().split("\n", 1)[1])
    assert config["users"] == [
        {
            "name": "root",
            "ssh_authorized_keys": [config["users"][0]["ssh_authorized_keys"][0]],
            "lock_passwd": True,
        }
    ]
    seed_key = config["users"][0]["ssh_authorized_keys"][0]
    assert seed_key.split()[:2] == public_key.split()[:2]  # the operator's key, no tenant's
    assert TENANT_KEY not in files["user-data"].decode()

    # The boot time has passed but the server has not come back reimaged: not available.
    clock.advance(61)
    worker.run_once()
    assert node_state(admin, node_id) == "wiping"

    # Emulated reimage (module docstring): a fresh host at the same address, root's key the
    # one in the seed the BMC fetched.
    address = host.address
    assert host.exec("true").returncode == 0
    assert run_testhost("down", host.name).returncode == 0
    fresh = testhost("rimg", gpus=8, authorized_key=seed_key, address=address)
    assert fresh.exec(f"test -e {REIMAGE_MARKER}").returncode == 1
    clock.advance(10)
    worker.run_once()
    node = admin.nodes.get(node_id)
    assert node["state"] == "available"
    events = admin.get(f"nodes/{node_id}/events")["data"]
    assert any(re.match(r"reimaged: SSH answers, marker gone", e["reason"] or "") for e in events)
    assert not seeds.seeds  # the seed is gone once the node came back
    # The next tenant lands on the reimaged node over SSH (the new host key trusted anew).
    _, beta = tenant_client(admin, "beta")
    inst = beta.instances.create("8xH100", ssh_keys=[TENANT_KEY])
    worker.run_once()
    assert beta.instances.get(inst["id"])["state"] == "running"
    assert fresh.ssh(key_path, "id -u ubuntu").returncode == 0


def restart_keeping_disk(host: Host, key_path: Path) -> None:
    """Restart the test host (a new PID 1, its overlay root kept) and wait until it answers
    SSH again from its new init."""
    started = "cut -d' ' -f22 /proc/1/stat"
    before = host.ssh(key_path, started).stdout.strip()
    assert before
    host.exec(TESTHOST_REBOOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = host.ssh(key_path, started, timeout=10)
        if now.returncode == 0 and now.stdout.strip() not in ("", before):
            return
        time.sleep(0.3)
    raise AssertionError("the test host did not come back from its restart within 30 s")


def test_a_node_that_comes_back_without_a_reimage_fails_with_the_reason(
    admin: Client,
    app: Any,
    db: Database,
    clock: VirtualClock,
    emulator: Emulator,
    seeds: SeedServer,
    testhost: Any,
    operator_keypair: tuple[str, str, Path],
) -> None:
    private_key, public_key, key_path = operator_keypair
    host = testhost("unrimg", gpus=8, authorized_key=public_key)
    node_id = register(admin, emulator, host, "unreimaged", private_key, f"{seeds.url}/os.iso")
    worker, _ = start(app, db, clock, seeds)
    tenant_round(admin, emulator, clock, worker, node_id, "unreimaged")
    assert node_state(admin, node_id) == "wiping"
    # Emulated: the server restarts but keeps its disk (the image did not boot).
    restart_keeping_disk(host, key_path)
    for _ in range(4):  # checked every 10 s, still not reimaged
        clock.advance(61)
        worker.run_once()
        assert node_state(admin, node_id) == "wiping"
    clock.advance(120)  # past the reimage timeout (300 s)
    worker.run_once()
    node = admin.nodes.get(node_id)
    assert node["state"] == "failed"
    events = admin.get(f"nodes/{node_id}/events")["data"]
    reason = events[-1]["reason"] if events[-1]["to_state"] == "failed" else ""
    reasons = [e["reason"] or "" for e in events if e["to_state"] == "failed"]
    assert any("reimage failed" in r and "not reimaged" in r for r in reasons), (reason, reasons)
    assert not seeds.seeds
