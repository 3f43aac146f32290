"""Storage's pure parts: input checks, volume names, and reading the gluster CLI's answers."""

from __future__ import annotations

import pytest

from neocloud.kernel.errors import ValidationFailed
from neocloud.storage import gluster as g
from neocloud.storage.domain import Backend, check_mount_path, check_replica, volume_name

QUOTA_XML = """\
<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<cliOutput>
  <opRet>0</opRet>
  <volQuota>
    <limit>
      <path>/</path>
      <hard_limit>1073741824</hard_limit>
      <used_space>104858112</used_space>
    </limit>
  </volQuota>
</cliOutput>
"""


def test_used_bytes_are_read_from_the_quota_listing() -> None:
    assert g.parse_used(QUOTA_XML) == 104858112
    assert g.parse_used("noise before\n" + QUOTA_XML) == 104858112
    assert g.parse_used("quota command failed") is None
    assert g.parse_used(QUOTA_XML.replace("104858112", "")) is None


def test_a_scripts_failure_is_explained_in_one_line() -> None:
    assert g.explain(151, "glusterd does not answer\n") == "glusterd does not answer"
    said = g.explain(162, "Mounting glusterfs on /mnt/x failed.\nlog: [E] no route to host\n")
    assert said.startswith("the FUSE mount failed: ")
    assert "no route to host" in said
    assert g.explain(-1, "node st-1: connect timed out") == "node st-1: connect timed out"
    assert g.explain(99, "") == "exit 99"
    assert len(g.explain(152, "x" * 5000)) < 400


def test_values_reach_a_script_quoted() -> None:
    script = g.script(g.MOUNT, MP="/mnt/a b", SERVERS="10.0.0.1 10.0.0.2", V="nc-fs-1", RO=0, W="i")
    assert "MP='/mnt/a b'" in script
    assert script.startswith("set -u\n")


@pytest.mark.parametrize("path", ["/mnt/data", "/data/ckpt", "/scratch/team-a/x.1", "/mnt/data/"])
def test_good_mount_paths(path: str) -> None:
    assert check_mount_path(path) == path.rstrip("/")


@pytest.mark.parametrize(
    "path",
    ["mnt", "/", "/etc", "/etc/x", "/usr/local/x", "/home/ubuntu", "/a/../etc", "/a//b",
     "/a b", "/a;rm", "/" + "a" * 200, "/proc/1", "/var/lib/x", "/tmp/x"],
)  # fmt: skip
def test_bad_mount_paths_are_refused_naming_the_field(path: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_mount_path(path)
    assert info.value.param == "mount_path"


def test_replica_and_node_counts() -> None:
    check_replica(Backend.GLUSTERFS, 2, 2)
    check_replica(Backend.GLUSTERFS, 4, 2)
    check_replica(Backend.GLUSTERFS, 1, 1)
    check_replica(Backend.LOCAL, 0, 1)
    for backend, nodes, replica, param in [
        (Backend.GLUSTERFS, 1, 2, "node_ids"),
        (Backend.GLUSTERFS, 3, 2, "node_ids"),
        (Backend.GLUSTERFS, 0, 1, "node_ids"),
        (Backend.LOCAL, 0, 2, "replica"),
    ]:
        with pytest.raises(ValidationFailed) as info:
            check_replica(backend, nodes, replica)
        assert info.value.param == param


def test_volume_names_are_glusters() -> None:
    assert volume_name("fs_01M95642VCE87SQS2Q66CA0GDG") == "nc-fs-01m95642vce87sqs2q66ca0gdg"
