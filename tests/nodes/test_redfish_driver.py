"""The redfish driver against the real ``sushy-tools`` emulator (its fake-systems driver).

The emulator runs as a subprocess on a free loopback port with HTTP basic auth (an htpasswd
file), one module-wide; each test drives its own emulated system, and reads the outcome back
through an independent sushy client. The fake driver applies a power change 1 to 11 seconds
after the request, as a real server takes time: tests wait for it with a deadline. Virtual
media images are served from a loopback HTTP server (the emulator downloads what is inserted).

Without ``sushy-tools`` the tests skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import http.server
import importlib.util
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sushy  # type: ignore[import-untyped]

from neocloud.drivers.base import Driver, Login, NodeRef, ProvisionRequest
from neocloud.drivers.redfish import (
    RedfishConfigError,
    RedfishDriver,
    RedfishError,
    health_status,
    parse_config,
)
from neocloud.kernel.secrets import SecretBox

from .conftest import (
    BMC_PASSWORD,
    BMC_USER,
    Emulator,
    free_port,
    start_redfish_emulator,
    stop_emulator,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
if importlib.util.find_spec("sushy_tools") is None:
    if IN_CI:
        raise ImportError("sushy-tools (the Redfish emulator) is a dev dependency: install it")
    pytest.skip("sushy-tools (the Redfish emulator) is not installed", allow_module_level=True)

USER, PASSWORD = BMC_USER, BMC_PASSWORD  # the emulator's test login
WRONG = "Wr0ng-Battery-bmc"
POWER_WAIT_S = 25.0  # the fake driver applies a power change within 11 s

# One emulated system per test that changes state, so tests never see each other's changes.
SYSTEMS = {
    "to-off": "On",
    "to-on": "Off",
    "reset": "On",
    "graceful": "On",
    "reboot-off": "Off",
    "lifecycle": "Off",
    "pxe": "On",
    "read": "Off",
}


def system_uuid(name: str) -> str:
    index = list(SYSTEMS).index(name) + 1
    return f"00000000-0000-4000-8000-{index:012d}"


def emulated_systems() -> list[dict[str, Any]]:
    return [
        {
            "uuid": system_uuid(name),
            "name": name,
            "power_state": state,
            "nics": [{"mac": f"52:54:00:00:00:{i:02x}", "ip": "127.0.0.1"}],
        }
        for i, (name, state) in enumerate(SYSTEMS.items())
    ]


def start_emulator(tmp: Path, *, tls: tuple[Path, Path] | None = None) -> tuple[Emulator, Any]:
    return start_redfish_emulator(tmp, emulated_systems(), tls=tls)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emu, proc = start_emulator(tmp_path_factory.mktemp("redfish"))
    try:
        yield emu
    finally:
        stop_emulator(proc)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def image_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An ISO-named file served over loopback HTTP, for virtual media inserts."""
    root = tmp_path_factory.mktemp("images")
    (root / "ubuntu-24.04-gpu.iso").write_bytes(b"\0" * 32768)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ubuntu-24.04-gpu.iso"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(SecretBox.new_key())


@pytest.fixture
def driver(box: SecretBox) -> RedfishDriver:
    return RedfishDriver(box, timeout_s=5, power_s=20, boot_s=120, retry_delay_s=0.2)


def node(
    box: SecretBox,
    url: str,
    system: str | None,
    *,
    password: str = PASSWORD,
    **config: Any,
) -> NodeRef:
    cfg: dict[str, Any] = {"bmc_url": url, **config}
    if system is not None:
        cfg["system_id"] = system_uuid(system)
    sealed = box.seal({"bmc_username": USER, "bmc_password": password})
    return NodeRef(f"node_{system}", f"gpu-{system}", "H100", 8, "redfish", cfg, sealed)


def wait_for(read: Callable[[], Any], expected: Any, *, timeout: float = POWER_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        value = read()
    assert value == expected, f"still {value!r} after {timeout} s, wanted {expected!r}"


def power_of(emulator: Emulator, name: str) -> Callable[[], str]:
    system = emulator.system(system_uuid(name))

    def read() -> str:
        system.refresh(force=True)
        return str(system.power_state.value)

    return read


# -- against the emulator ------------------------------------------------------------------------


def test_is_a_driver_that_never_shares_nodes(driver: RedfishDriver) -> None:
    as_driver: Driver = driver
    assert as_driver.shares_nodes is False


def test_power_off_on_reset_and_reboot_change_the_emulated_systems(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox
) -> None:
    # All four are asked at once, then awaited together: the emulator takes up to 11 s each.
    off = driver.power(node(box, emulator.url, "to-off"), on=False)
    on = driver.power(node(box, emulator.url, "to-on"), on=True)
    reset = driver.reset(node(box, emulator.url, "reset"))
    graceful = driver.reboot(
        node(box, emulator.url, "graceful", reboot="graceful"), workload_id="inst_1"
    )
    cold = driver.reboot(node(box, emulator.url, "reboot-off"), workload_id="inst_2")
    for step in (off, on, reset, graceful, cold):
        assert step.ok, step.message
    assert (off.duration_s, on.duration_s, reset.duration_s) == (20, 20, 20)
    assert graceful.duration_s == 120  # a reboot waits for the boot
    wait_for(power_of(emulator, "to-off"), "Off")
    wait_for(power_of(emulator, "to-on"), "On")
    wait_for(power_of(emulator, "reset"), "On")  # the fake passes through Off, then On
    wait_for(power_of(emulator, "graceful"), "On")
    wait_for(power_of(emulator, "reboot-off"), "On")  # rebooting an off server powers it on
    # Asking for the state a server is already in sends nothing and takes no time.
    again = driver.power(node(box, emulator.url, "to-off"), on=False)
    assert again.ok
    assert again.duration_s == 0
    assert again.notes == ("power: already off",)


def test_provision_boots_once_from_virtual_media_and_wipe_ejects_it(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox, image_url: str
) -> None:
    ref = node(box, emulator.url, "lifecycle", image_url=image_url)
    request = ProvisionRequest(
        "inst_lc",
        (0, 1, 2, 3, 4, 5, 6, 7),
        "tenant-box",
        login=Login("ubuntu", ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF tenant@laptop",)),
    )
    step = driver.provision(ref, request)
    assert step.ok, step.message
    assert step.access is None  # a redfish-only node knows no OS login
    assert step.duration_s == 120
    assert "virtual media Cd: image inserted" in step.notes
    assert "boot override: Cd once" in step.notes
    assert any("not applied" in n for n in step.notes)
    system = emulator.system(system_uuid("lifecycle"))
    assert system.boot.target is sushy.BootSource.CD
    cd = system.virtual_media.get_member(f"{system.path}/VirtualMedia/Cd")
    assert cd.inserted is True
    assert cd.image == image_url
    wait_for(power_of(emulator, "lifecycle"), "On")

    # The same image again is not inserted twice; the server, now on, is reset instead.
    again = driver.provision(ref, request)
    assert again.ok, again.message
    assert "virtual media Cd: image already inserted" in again.notes
    assert "power: reset" in again.notes
    wait_for(power_of(emulator, "lifecycle"), "On")

    gone = driver.deprovision(ref, workload_id="inst_lc", login_user="ubuntu")
    assert gone.ok, gone.message
    wait_for(power_of(emulator, "lifecycle"), "Off")
    wiped = driver.wipe(ref)
    assert wiped.ok, wiped.message
    assert "virtual media ejected: Cd" in wiped.notes
    cd.refresh(force=True)
    assert not cd.inserted
    inventory = driver.inspect(ref)
    assert inventory["power_state"] == "Off"
    assert {m["id"]: m["inserted"] for m in inventory["virtual_media"]} == {
        "Cd": False,
        "Floppy": False,
    }


def test_provision_without_an_image_boots_from_pxe(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox
) -> None:
    step = driver.provision(node(box, emulator.url, "pxe"), ProvisionRequest("inst_p", (0,), "h"))
    assert step.ok, step.message
    assert "boot override: Pxe once" in step.notes
    assert emulator.system(system_uuid("pxe")).boot.target is sushy.BootSource.PXE


def test_health_and_inventory_come_from_the_bmc(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox
) -> None:
    ref = node(box, emulator.url, "read")
    health = driver.health(ref)
    # The fake system reports Health OK; it is powered off, which is a warning, not a failure.
    assert health.ok, health.message
    assert health.checks == {"bmc": "pass", "bmc_health": "pass", "power": "warn"}
    inventory = driver.inspect(ref)
    assert inventory["system_id"] == system_uuid("read")
    assert inventory["name"] == "read"
    assert inventory["manufacturer"] == "Sushy Emulator"
    assert inventory["power_state"] == "Off"
    assert inventory["health"] == "OK"
    assert inventory["nics"] == [f"52:54:00:00:00:{list(SYSTEMS).index('read'):02x}"]
    assert inventory["boot"]["target"] in {"Hdd", "Pxe", "Cd"}
    # The fake driver reports no CPUs, memory, model or serial: the inventory says so.
    assert inventory["cpus"] is None
    assert inventory["memory_gib"] is None
    assert inventory["serial_number"] is None


def test_wrong_password_fails_precisely_and_no_password_is_logged(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = node(box, emulator.url, "read", password=WRONG)
    step = driver.power(bad, on=True)
    assert not step.ok
    assert step.message is not None
    assert "refused the credentials (401)" in step.message
    assert "gpu-read" in step.message
    assert emulator.url in step.message
    health = driver.health(bad)
    assert not health.ok
    assert health.checks == {"bmc": "fail"}
    with pytest.raises(RedfishError, match=r"refused the credentials \(401\)") as raised:
        driver.inspect(bad)
    # A good login, logged at DEBUG by sushy too, leaves no password behind either.
    assert driver.health(node(box, emulator.url, "read")).ok
    said = " ".join([caplog.text, step.message, health.message or "", str(raised.value)])
    for secret in (WRONG, PASSWORD):
        assert secret not in said
        assert base64.b64encode(f"{USER}:{secret}".encode()).decode() not in said
    assert power_of(emulator, "read")() == "Off"  # nothing was done with the bad login


def test_unreachable_bmc_fails_precisely_and_fast(driver: RedfishDriver, box: SecretBox) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    step = driver.power(node(box, url, "read"), on=True)
    assert not step.ok
    assert (
        step.message
        == f"node gpu-read: power on: BMC {url} is unreachable: the connection was refused"
    )
    assert time.monotonic() - started < 10


def test_a_bmc_that_never_answers_times_out(box: SecretBox) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        quick = RedfishDriver(box, timeout_s=0.5, retries=1)
        health = quick.health(node(box, url, "read"))
    assert not health.ok
    assert health.message is not None
    assert health.message.endswith("is unreachable: it did not answer in time")


def test_unknown_system_id_is_named_with_the_systems_there(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox
) -> None:
    ref = node(box, emulator.url, None, system_id="no-such-system")
    step = driver.reboot(ref, workload_id="inst_x")
    assert not step.ok
    assert step.message is not None
    assert "has no system 'no-such-system'" in step.message
    assert system_uuid("read") in step.message
    # Without a system id a BMC with several systems cannot choose one.
    many = driver.health(node(box, emulator.url, None))
    assert not many.ok
    assert f"lists {len(SYSTEMS)} systems" in (many.message or "")
    assert "set system_id" in (many.message or "")


def test_credentials_that_are_missing_or_sealed_with_another_key(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox
) -> None:
    ref = node(box, emulator.url, "read")
    missing = NodeRef(ref.id, ref.hostname, "H100", 8, "redfish", ref.config, None)
    step = driver.power(missing, on=True)
    assert step.message == "node gpu-read: no BMC credentials are registered"
    other = SecretBox(SecretBox.new_key()).seal({"bmc_username": USER, "bmc_password": PASSWORD})
    foreign = NodeRef(ref.id, ref.hostname, "H100", 8, "redfish", ref.config, other)
    step = driver.power(foreign, on=True)
    assert not step.ok
    assert "cannot be opened with this platform's secret key" in (step.message or "")
    incomplete = NodeRef(
        ref.id, ref.hostname, "H100", 8, "redfish", ref.config, box.seal({"bmc_username": USER})
    )
    assert "lack bmc_username/bmc_password" in (driver.power(incomplete, on=True).message or "")


def test_the_fleet_bmc_endpoint_serves_when_the_config_has_no_url(
    emulator: Emulator, driver: RedfishDriver, box: SecretBox
) -> None:
    ref = node(box, emulator.url, "read")
    config = {"system_id": ref.config["system_id"]}
    from_fleet = NodeRef(
        ref.id, ref.hostname, "H100", 8, "redfish", config, ref.sealed, {"endpoint": emulator.url}
    )
    assert driver.health(from_fleet).ok


# -- TLS -----------------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bmc.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "bmc.crt", tmp / "bmc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_self_signed_bmc_needs_verify_tls_false(
    tmp_path: Path, driver: RedfishDriver, box: SecretBox
) -> None:
    emu, proc = start_emulator(tmp_path / "tls", tls=self_signed(tmp_path))
    try:
        verified = driver.health(node(box, emu.url, "read"))
        assert not verified.ok
        assert (verified.message or "").endswith(
            "is unreachable: its TLS certificate is not trusted or TLS failed (verify_tls)"
        )
        # Trusting it is the operator's explicit choice; no warning per request follows
        # (pytest turns warnings into errors here).
        trusted = driver.health(node(box, emu.url, "read", verify_tls=False))
        assert trusted.ok, trusted.message
    finally:
        stop_emulator(proc)


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "status"),
    [
        (("OK",), "pass"),
        (("Warning",), "warn"),
        (("Critical",), "fail"),
        ((None,), "warn"),  # a BMC that reports no health
        (("OK", "Warning"), "warn"),  # the worst of health and its roll-up
        (("Warning", "Critical"), "fail"),
        (("Bogus",), "warn"),
    ],
)
def test_redfish_health_maps_to_check_status(values: tuple[str | None, ...], status: str) -> None:
    assert health_status(*values) == status


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({}, "bmc_url"),
        ({"bmc_url": "ftp://bmc"}, "bmc_url"),
        ({"bmc_url": "https://root:calvin@bmc.example"}, "bmc_url"),
        ({"bmc_url": "https://bmc", "verify_tls": "no"}, "verify_tls"),
        ({"bmc_url": "https://bmc", "system_id": "a b"}, "system_id"),
        ({"bmc_url": "https://bmc", "image_url": "file:///x.iso"}, "image_url"),
        ({"bmc_url": "https://bmc", "boot_target": "cd"}, "image_url"),
        ({"bmc_url": "https://bmc", "boot_target": "floppy"}, "boot_target"),
        ({"bmc_url": "https://bmc", "reboot": "nmi"}, "reboot"),
        ({"bmc_url": "https://bmc", "boot_s": -1}, "boot_s"),
        ({"bmc_url": "https://bmc", "power_s": True}, "power_s"),
    ],
)
def test_bad_config_names_its_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(RedfishConfigError) as raised:
        parse_config(config)
    assert raised.value.key == key
    assert "calvin" not in str(raised.value)


def test_config_defaults() -> None:
    plain = parse_config({"bmc_url": "https://bmc.example/"})
    assert (plain.bmc_url, plain.boot_target, plain.reboot_type, plain.verify_tls) == (
        "https://bmc.example",
        "Pxe",
        "ForceRestart",
        True,
    )
    assert (
        parse_config({"bmc_url": "https://b", "image_url": "https://i/x.iso"}).boot_target == "Cd"
    )


def test_a_bad_config_is_a_failed_step_not_an_exception(box: SecretBox) -> None:
    driver = RedfishDriver(box)
    ref = NodeRef("n", "gpu-x", "H100", 8, "redfish", {"bmc_url": "bmc.example"}, None)
    step = driver.wipe(ref)
    assert not step.ok
    assert step.message == (
        "node gpu-x: wipe: driver_config.bmc_url: must be an http:// or https:// URL with a host"
    )
