"""Managed databases' pure rules: the worker's decision table row by row, placement with its
reasons, the state machine, pg_hba.conf, the SCRAM verifier and the probe's parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from neocloud.databases import host
from neocloud.databases.domain import (
    PORT_FIRST,
    PRESETS,
    Action,
    DatabaseState,
    NodeRoom,
    can_move,
    decide,
    place,
)

S = DatabaseState


@pytest.mark.parametrize(
    ("state", "ever_ran", "backup_pending", "health_due", "action"),
    [
        (S.DELETING, False, False, False, Action.DELETE),
        (S.DELETING, True, True, True, Action.DELETE),
        (S.PROVISIONING, False, False, False, Action.PLACE_AND_CREATE),
        (S.RUNNING, True, True, True, Action.BACKUP),
        (S.RUNNING, True, False, True, Action.HEALTH),
        (S.RUNNING, True, False, False, None),
        (S.FAILED, True, True, True, Action.HEALTH),  # a failed server is not dumped
        (S.FAILED, True, False, False, None),
        (S.FAILED, False, False, True, None),  # never ran: waits for its deletion
        (S.DELETED, True, True, True, None),
    ],
)
def test_decide(
    state: DatabaseState,
    ever_ran: bool,
    backup_pending: bool,
    health_due: bool,
    action: Action | None,
) -> None:
    got = decide(state, ever_ran=ever_ran, backup_pending=backup_pending, health_due=health_due)
    assert got == action


def test_transitions() -> None:
    assert can_move(S.PROVISIONING, S.RUNNING)
    assert can_move(S.RUNNING, S.FAILED)
    assert can_move(S.FAILED, S.RUNNING)
    assert can_move(S.DELETING, S.DELETED)
    assert not can_move(S.DELETED, S.RUNNING)
    assert not can_move(S.DELETING, S.RUNNING)
    assert not can_move(S.RUNNING, S.PROVISIONING)


def room(node_id: str, **over: object) -> NodeRoom:
    base: dict[str, object] = {
        "node_id": node_id,
        "hostname": f"{node_id}.example",
        "vcpus": 16,
        "ram_gib": 64,
        "disk_gib": 500,
        "used_vcpus": 0,
        "used_ram_gib": 0,
        "used_disk_gib": 0,
        "versions": ("15",),
        "ports": frozenset(),
    }
    return NodeRoom(**{**base, **over})  # type: ignore[arg-type]


def test_place_picks_the_node_with_most_free_memory_and_the_first_free_port() -> None:
    nodes = [room("a", used_ram_gib=40), room("b", ports=frozenset({PORT_FIRST}))]
    chosen = place(nodes, version="15", preset=PRESETS["small"], storage_gib=10, pinned=None)
    assert not isinstance(chosen, str)
    assert (chosen[0].node_id, chosen[1]) == ("b", PORT_FIRST + 1)


def test_place_says_why_nothing_fits() -> None:
    nodes = [
        room("a", versions=("14",)),
        room("b", used_vcpus=15),
        room("c", used_disk_gib=495),
    ]
    why = place(nodes, version="15", preset=PRESETS["small"], storage_gib=10, pinned=None)
    assert why == (
        "no service node fits: a.example: no PostgreSQL 15; b.example: 1 vCPUs and 64 GiB free,"
        " small needs 2 and 4; c.example: 5 GiB of disk free"
    )
    assert place([], version="15", preset=PRESETS["small"], storage_gib=1, pinned=None) == (
        "no service node is available"
    )


def test_a_restore_is_pinned_to_its_backups_node() -> None:
    nodes = [room("a"), room("b", used_ram_gib=60)]
    chosen = place(nodes, version="15", preset=PRESETS["small"], storage_gib=1, pinned="b")
    assert not isinstance(chosen, str)
    assert chosen[0].node_id == "b"
    gone = place(nodes, version="15", preset=PRESETS["small"], storage_gib=1, pinned="z")
    assert gone == "the node holding the backup is not an available service node"


SPEC = host.ServerSpec("db_01X", "ncdb_01x", "15", 15432, "shop", "app", 100, 1024)


def test_pg_hba_allows_only_tls_with_scram_from_the_given_networks() -> None:
    text = host.hba_conf(SPEC, ["10.0.0.5/32", "192.168.1.7/24", "10.0.0.5/32"])
    rules = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert rules == [
        "local all neocloud peer map=neocloud",
        "hostssl shop app 10.0.0.5/32 scram-sha-256",
        "hostssl shop app 192.168.1.0/24 scram-sha-256",
        "host all all 0.0.0.0/0 reject",
        "host all all ::/0 reject",
    ]
    assert "trust" not in text
    assert "md5" not in text


def test_scram_verifier_is_rfc_7677_as_postgresql_stores_it() -> None:
    salt = bytes(range(16))
    verifier = host.scram_verifier("pencil", salt=salt)
    head, keys = verifier.split("$", 1)[1].split("$")
    iterations, salt_b64 = head.split(":")
    stored_b64, server_b64 = keys.split(":")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert (int(iterations), base64.b64decode(salt_b64)) == (4096, salt)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    assert base64.b64decode(stored_b64) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server_b64) == hmac.new(salted, b"Server Key", "sha256").digest()
    assert "pencil" not in verifier
    assert host.scram_verifier("pencil") != host.scram_verifier("pencil")  # a fresh salt each


def test_scripts_carry_no_secret_and_name_their_paths() -> None:
    script = host.create_script(SPEC, cert="CERT", ca_cert="CA", cidrs=["10.0.0.5/32"])
    assert "BEGIN PRIVATE KEY" not in script  # the key and the verifier come on stdin
    assert "SCRAM" not in script
    assert "/var/lib/neocloud/postgres/db_01X" in script
    assert "port = 15432" in script
    assert "ssl = on" in script
    assert host.os_user_for("db_01JABCDEFGHJKMNPQRSTVWXYZ") == "ncdb_mnpqrstvwxyz"
    assert host.parse_probe("15\n14\nnoise\n15\n") == ["14", "15"]
