"""Tenants' SSH keys (issue 14, item 1): parsed, validated and fingerprinted as OpenSSH does,
per org, owned by who added them; bad input is a precise 422 that changes nothing and never
repeats a private key; another org's key is unknown to every route and to compute's resolver.

Keys are made with the real ``ssh-keygen``; fingerprints are checked against ``ssh-keygen -lf``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from neocloud.client import ApiError, Client
from neocloud.db.engine import Database
from neocloud.db.metadata import all_metadata
from neocloud.kernel.errors import ValidationFailed
from neocloud.kernel.ids import is_id
from neocloud.tenancy import ssh_keys
from neocloud.tenancy.ssh_key_format import ParsedKey, parse_public_key
from neocloud.tenancy.tables import AuditEventRow, SshKeyRow

from .helpers import Tenant, add_member, client_for, make_tenant

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path

    @property
    def line(self) -> str:
        return self.public.read_text().strip()

    @property
    def private_text(self) -> str:
        return self.private.read_text()

    def keygen_print(self) -> tuple[int, str]:
        """(bits, fingerprint) as ``ssh-keygen -lf`` prints them."""
        shown = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", str(self.public)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return int(shown[0]), shown[1]


class KeyGen:
    """Makes key pairs with the real ``ssh-keygen`` in one directory."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.count = 0

    def __call__(self, kind: str, *extra: str, comment: str = "dev@laptop") -> KeyPair:
        self.count += 1
        path = self.where / f"key{self.count}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
        return KeyPair(path, path.with_name(path.name + ".pub"))


def make_keygen(tmp_path_factory: pytest.TempPathFactory) -> KeyGen:
    """A ``KeyGen`` in a fresh directory; skipped without ``ssh-keygen``, failed under CI."""
    if shutil.which("ssh-keygen") is None:
        message = "ssh-keygen (openssh-client) is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: the SSH key tests must run)")
        pytest.skip(message)
    return KeyGen(tmp_path_factory.mktemp("ssh-keys"))


@pytest.fixture(scope="module")
def keygen(tmp_path_factory: pytest.TempPathFactory) -> KeyGen:
    return make_keygen(tmp_path_factory)


@pytest.fixture(scope="module")
def ed25519(keygen: KeyGen) -> KeyPair:
    return keygen("ed25519")


ACCEPTED = [
    ("ed25519", (), "ssh-ed25519", 256),
    ("ecdsa", ("-b", "256"), "ecdsa-sha2-nistp256", 256),
    ("ecdsa", ("-b", "384"), "ecdsa-sha2-nistp384", 384),
    ("ecdsa", ("-b", "521"), "ecdsa-sha2-nistp521", 521),
    ("rsa", ("-b", "2048"), "ssh-rsa", 2048),
]


def _refused(text: str) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        parse_public_key(text)
    assert info.value.param == "public_key"
    return info.value


def _error(call: Callable[..., object], *args: object, **kwargs: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


def _count(db: Database) -> int:
    with db.transaction() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(SshKeyRow)) or 0


# ----------------------------------------------------------------------- parsing (no database)


@pytest.mark.parametrize(("kind", "extra", "key_type", "bits"), ACCEPTED)
def test_each_accepted_key_parses_as_ssh_keygen_reads_it(
    keygen: KeyGen, kind: str, extra: tuple[str, ...], key_type: str, bits: int
) -> None:
    pair = keygen(kind, *extra)
    parsed = parse_public_key(pair.line)
    assert (parsed.key_type, parsed.bits) == (key_type, bits)
    assert (parsed.bits, parsed.fingerprint) == pair.keygen_print()
    assert parsed.line == pair.line  # ssh-keygen writes the canonical line
    assert parsed.comment == "dev@laptop"


def test_the_stored_line_is_normalized(ed25519: KeyPair) -> None:
    key_type, data, _ = ed25519.line.split(" ", 2)
    messy = f"  {key_type} \t {data}   my  laptop\t(work)  \n"
    parsed = parse_public_key(messy)
    assert parsed.line == f"{key_type} {data} my laptop (work)"
    assert parse_public_key(f"{key_type} {data}").line == f"{key_type} {data}"
    long = parse_public_key(f"{key_type} {data} {'c' * 500}")
    assert len(long.comment) == 200
    # One key, one fingerprint, whatever the comment.
    assert long.fingerprint == parsed.fingerprint == ed25519.keygen_print()[1]


def test_a_short_rsa_key_says_how_short(keygen: KeyGen) -> None:
    refused = _refused(keygen("rsa", "-b", "1024").line)
    assert refused.code == "ssh_key_too_short"
    assert "RSA keys must be at least 2048 bits; this one has 1024" in refused.message


@pytest.mark.parametrize("fmt", ["", "PEM", "PKCS8"])
def test_a_private_key_is_refused_as_one_and_never_repeated(keygen: KeyGen, fmt: str) -> None:
    pair = keygen("rsa", "-b", "2048", *(("-m", fmt) if fmt else ()))
    private = pair.private_text
    for pasted in (private, private.strip(), " ".join(private.split())):
        refused = _refused(pasted)
        assert refused.code == "private_key_given"
        assert "PRIVATE key" in refused.message
        body = [line for line in private.splitlines() if "-----" not in line]
        assert not any(line[:16] in refused.message for line in body)
    # Its body without the armour is recognized too (OpenSSH's format).
    if not fmt:
        assert _refused("".join(private.splitlines()[1:-1])).code == "private_key_given"


def test_bad_keys_are_refused_precisely(keygen: KeyGen, ed25519: KeyPair) -> None:
    key_type, data, _ = ed25519.line.split(" ", 2)
    rsa = keygen("rsa", "-b", "2048")
    rsa_data = rsa.line.split()[1]
    cases = {
        "garbage": ("not a key at all", "unsupported_key_type", "unknown key type"),
        "truncated": (f"{key_type} {data[:-7]}", "invalid_ssh_key", "base64"),
        "truncated on a 4-character boundary": (
            f"{key_type} {data[:-8]}",
            "invalid_ssh_key",
            "not a valid key",
        ),
        "truncated rsa": (f"ssh-rsa {rsa_data[:200]}", "invalid_ssh_key", "not a valid key"),
        "extra data": (f"{key_type} {data}AAAA", "invalid_ssh_key", "not a valid key"),
        "no data": (key_type, "invalid_ssh_key", "has no data"),
        "type and data disagree": (f"ssh-rsa {data}", "invalid_ssh_key", "its data is a"),
        "dsa": ("ssh-dss AAAAB3NzaC1kc3M=", "unsupported_key_type", "DSA"),
        "certificate": (
            f"ssh-ed25519-cert-v01@openssh.com {data}",
            "unsupported_key_type",
            "certificate",
        ),
        "security key": (
            f"sk-ssh-ed25519@openssh.com {data}",
            "unsupported_key_type",
            "security-key",
        ),
        "options first": (f'from="10.0.0.1" {ed25519.line}', "unsupported_key_type", "options"),
        "two keys": (f"{ed25519.line}\n{rsa.line}", "invalid_ssh_key", "one line"),
        "empty": ("   ", "invalid_ssh_key", "empty"),
        "too long": (f"{ed25519.line} {'x' * 17000}", "invalid_ssh_key", "at most 16384"),
    }
    for name, (text, code, words) in cases.items():
        refused = _refused(text)
        assert (refused.code, words in refused.message) == (code, True), (name, refused.message)


def test_other_public_key_forms_say_how_to_convert(keygen: KeyGen) -> None:
    rsa = keygen("rsa", "-b", "2048")
    for fmt, words in (("RFC4716", "ssh-keygen -i -f"), ("PKCS8", "ssh-keygen -i -m PKCS8")):
        converted = subprocess.run(
            ["ssh-keygen", "-e", "-m", fmt, "-f", str(rsa.public)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        refused = _refused(converted)
        assert (refused.code, words in refused.message) == ("unsupported_key_format", True)


# ------------------------------------------------------------------------- through the API


def test_add_list_get_delete(admin: Client, db: Database, keygen: KeyGen) -> None:
    acme = make_tenant(admin, "acme")
    pair = keygen("ed25519", comment="ada@workstation")
    bits, fingerprint = pair.keygen_print()
    added = acme.client.ssh_keys.add("laptop", pair.public.read_text())  # with its newline
    assert is_id(added["id"], "sshkey")
    assert added == {
        "id": added["id"],
        "object": "ssh_key",
        "org_id": acme.org["id"],
        "name": "laptop",
        "fingerprint": fingerprint,
        "key_type": "ssh-ed25519",
        "bits": bits,
        "public_key": pair.line,
        "created_by": acme.user["id"],
        "created_at": "2026-03-01T12:00:00Z",
    }
    assert acme.client.ssh_keys.get(added["id"]) == added
    assert acme.client.ssh_keys.list()["data"] == [added]
    assert list(acme.client.ssh_keys.iter(org_id=acme.org["id"])) == [added]
    assert admin.ssh_keys.list(org_id=acme.org["id"])["data"] == [added]  # operator staff read

    gone = acme.client.ssh_keys.delete(added["id"])
    assert gone == {
        "id": added["id"],
        "object": "ssh_key",
        "deleted": True,
        "fingerprint": fingerprint,
    }
    assert acme.client.ssh_keys.list()["data"] == []
    missing = _error(acme.client.ssh_keys.get, added["id"])
    assert (missing.status, missing.code, missing.param) == (404, "ssh_key_not_found", "ssh_key_id")
    assert _error(acme.client.ssh_keys.delete, added["id"]).status == 404

    # The audit log has the add and the delete, naming the key by id, never by its text.
    with db.transaction() as s:
        events = list(s.scalars(sa.select(AuditEventRow).where(AuditEventRow.path.contains("ssh"))))
    assert [(e.method, e.status_code, e.target_id) for e in events] == [
        ("POST", 201, added["id"]),
        ("DELETE", 200, added["id"]),
        ("DELETE", 404, None),  # the second try: refused, still audited
    ]
    body = pair.line.split()[1]
    assert not [e for e in events if body[20:60] in repr(vars(e))]


def test_duplicates_are_409_naming_the_field_and_change_nothing(
    admin: Client, db: Database, keygen: KeyGen, ed25519: KeyPair
) -> None:
    acme, globex = make_tenant(admin, "acme"), make_tenant(admin, "globex")
    first = acme.client.ssh_keys.add("laptop", ed25519.line)
    other = keygen("ecdsa", "-b", "256")
    taken = _error(acme.client.ssh_keys.add, "laptop", other.line)
    assert (taken.status, taken.code, taken.param) == (409, "ssh_key_name_taken", "name")
    # The same key under another name, or with another comment: the same key.
    relabelled = ed25519.line.rsplit(" ", 1)[0] + " another-comment"
    again = _error(acme.client.ssh_keys.add, "desktop", relabelled)
    assert (again.status, again.code, again.param) == (409, "ssh_key_exists", "public_key")
    assert first["id"] in again.message
    assert _count(db) == 1
    # Another org may hold the same key and name.
    assert globex.client.ssh_keys.add("laptop", ed25519.line)["fingerprint"] == first["fingerprint"]


def test_bad_input_is_a_precise_422_and_stores_nothing(
    admin: Client, db: Database, keygen: KeyGen, ed25519: KeyPair
) -> None:
    acme = make_tenant(admin, "acme")
    short_rsa = keygen("rsa", "-b", "1024")
    key_type, data, _ = ed25519.line.split(" ", 2)
    bad = {
        short_rsa.line: "ssh_key_too_short",
        f"{key_type} {data[:-9]}": "invalid_ssh_key",
        "garbage": "unsupported_key_type",
        ed25519.private_text: "private_key_given",
    }
    for text, code in bad.items():
        refused = _error(acme.client.ssh_keys.add, "k", text)
        assert (refused.status, refused.code, refused.param) == (422, code, "public_key")
    for name in ("", " ", "n" * 65, "tab\there"):
        refused = _error(acme.client.ssh_keys.add, name, ed25519.line)
        assert (refused.status, refused.param) == (422, "name")
    too_long = _error(acme.client.ssh_keys.add, "k", ed25519.line + " " + "x" * 16_384)
    assert (too_long.status, too_long.param) == (422, "public_key")
    assert _count(db) == 0


def test_a_pasted_private_key_is_stored_and_answered_nowhere(
    admin: Client, http: TestClient, db: Database, ed25519: KeyPair
) -> None:
    acme = make_tenant(admin, "acme")
    private = ed25519.private_text
    answer = http.post(
        "/api/v1/ssh-keys",
        json={"name": "oops", "public_key": private},
        headers={"Authorization": f"Bearer {acme.key['secret']}", "Idempotency-Key": "paste-1"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "private_key_given"
    lines = [line for line in private.splitlines() if line and "-----" not in line]
    assert not any(line[:24] in answer.text for line in lines)
    with db.engine.connect() as conn:
        for table in all_metadata().sorted_tables:
            for row in conn.execute(sa.select(table)).mappings():
                text = repr(dict(row))
                assert not any(line[:24] in text for line in lines), table.name


def test_another_orgs_key_is_unknown_everywhere(
    admin: Client, db: Database, ed25519: KeyPair, keygen: KeyGen
) -> None:
    acme, globex = make_tenant(admin, "acme"), make_tenant(admin, "globex")
    a_key = acme.client.ssh_keys.add("laptop", ed25519.line)
    b_key = globex.client.ssh_keys.add("mine", keygen("ed25519").line)
    for call in (globex.client.ssh_keys.get, globex.client.ssh_keys.delete):
        refused = _error(call, a_key["id"])
        assert (refused.status, refused.code) == (404, "ssh_key_not_found")
        assert refused.message == f"no SSH key {a_key['id']}"
    listed = _error(globex.client.ssh_keys.list, org_id=acme.org["id"])
    assert (listed.status, listed.code) == (404, "org_not_found")
    assert [k["id"] for k in globex.client.ssh_keys.list()["data"]] == [b_key["id"]]
    assert _count(db) == 2

    # Compute's resolver: another org's id reads exactly as an id that does not exist.
    b_org = globex.org["id"]
    assert ssh_keys.resolve_public_keys(db=db, org_id=b_org, ids=[b_key["id"]]) == [
        b_key["public_key"]
    ]
    unknown = "sshkey_01JZZZZZZZZZZZZZZZZZZZZZZZ"
    answers = []
    for foreign in (a_key["id"], unknown):
        with pytest.raises(ValidationFailed) as info:
            ssh_keys.resolve_public_keys(db=db, org_id=b_org, ids=[b_key["id"], foreign])
        assert (info.value.status, info.value.param) == (422, "ssh_key_ids")
        assert info.value.code == "ssh_key_not_found"
        answers.append(info.value.message.replace(foreign, "<id>"))
    assert answers[0] == answers[1] == "no SSH key <id>"


def test_resolve_answers_the_lines_in_order_once_each(
    admin: Client, db: Database, keygen: KeyGen
) -> None:
    acme = make_tenant(admin, "acme")
    made = [acme.client.ssh_keys.add(f"k{i}", keygen("ed25519").line) for i in range(3)]
    ids = [made[2]["id"], made[0]["id"], made[2]["id"]]
    lines = ssh_keys.resolve_public_keys(db=db, org_id=acme.org["id"], ids=ids)
    assert lines == [made[2]["public_key"], made[0]["public_key"]]
    assert ssh_keys.resolve_public_keys(db=db, org_id=acme.org["id"], ids=[]) == []


def test_roles_members_add_owners_and_admins_delete(
    admin: Client, db: Database, keygen: KeyGen
) -> None:
    owner = make_tenant(admin, "acme")
    member, viewer = add_member(admin, owner, "member"), add_member(admin, owner, "viewer")
    mate = admin.users.add(owner.org["id"], "mate@acme.example", role="member")
    mate_key = admin.keys.create("mate", org_id=owner.org["id"], user_id=mate["id"])
    other = Tenant(owner.org, mate, mate_key, client_for(admin, mate_key["secret"]))
    refused = _error(viewer.client.ssh_keys.add, "v", keygen("ed25519").line)
    assert (refused.status, refused.code) == (403, "insufficient_role")
    mine = member.client.ssh_keys.add("member's", keygen("ed25519").line)
    assert mine["created_by"] == member.user["id"]
    assert viewer.client.ssh_keys.get(mine["id"])["id"] == mine["id"]  # everyone in the org reads
    assert len(viewer.client.ssh_keys.list()["data"]) == 1
    for stranger in (viewer, other):  # neither its owner nor an admin
        refused = _error(stranger.client.ssh_keys.delete, mine["id"])
        assert (refused.status, refused.code) == (403, "insufficient_role")
    assert member.client.ssh_keys.delete(mine["id"])["deleted"] is True
    theirs = other.client.ssh_keys.add("mate's", keygen("ed25519").line)
    assert owner.client.ssh_keys.delete(theirs["id"])["deleted"] is True  # an admin (owner)
    assert _count(db) == 0


def test_an_org_holds_at_most_a_bounded_number_of_keys(
    admin: Client, db: Database, keygen: KeyGen, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ssh_keys.MAX_KEYS_PER_ORG == 100  # the documented bound
    monkeypatch.setattr(ssh_keys, "MAX_KEYS_PER_ORG", 2)
    acme = make_tenant(admin, "acme")
    for i in range(2):
        acme.client.ssh_keys.add(f"k{i}", keygen("ed25519").line)
    full = _error(acme.client.ssh_keys.add, "k2", keygen("ed25519").line)
    assert (full.status, full.code) == (409, "ssh_key_limit_reached")
    assert full.details == {"limit": 2, "count": 2}
    assert _count(db) == 2


def test_parsed_key_is_what_the_row_holds(admin: Client, db: Database, keygen: KeyGen) -> None:
    acme: Tenant = make_tenant(admin, "acme")
    pair = keygen("ecdsa", "-b", "384")
    added = acme.client.ssh_keys.add("ops", pair.line)
    parsed: ParsedKey = parse_public_key(pair.line)
    with db.transaction() as s:
        row = s.get(SshKeyRow, added["id"])
        assert row is not None
        stored = (row.public_key, row.fingerprint, row.key_type, row.bits, row.org_id)
    assert stored == (parsed.line, parsed.fingerprint, "ecdsa-sha2-nistp384", 384, acme.org["id"])
