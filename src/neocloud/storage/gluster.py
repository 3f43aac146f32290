"""The shell scripts the storage reconciler runs as root through nodes' drivers
(``drivers.base.Executor``), and the parsing of their answers. Pure: text in, text out.

Values reach a script only through ``assign`` (shell-quoted variables at its top); exit
statuses name what failed (``FAILURES``)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from neocloud.drivers.ssh_commands import STATE_DIR, assign

# glusterd answering, started if it is not (systemd where it is PID 1, else directly).
ENSURE_GLUSTERD = """\
command -v glusterd >/dev/null 2>&1 || { echo "glusterfs-server is not installed"; exit 150; }
mkdir -p "$BRICKS" || exit 155
if ! gluster --mode=script pool list >/dev/null 2>&1; then
  if [ -d /run/systemd/system ]; then systemctl start glusterd >/dev/null 2>&1; fi
  if ! pgrep -x glusterd >/dev/null 2>&1; then mkdir -p /var/log/glusterfs; glusterd; fi
  i=0
  while [ $i -lt 100 ]; do
    gluster --mode=script pool list >/dev/null 2>&1 && break
    i=$((i + 1)); sleep 0.1
  done
fi
gluster --mode=script pool list >/dev/null 2>&1 || { echo "glusterd does not answer"; exit 151; }
echo ok
"""

# On the first node: probe every other node ($PEERS, space separated) and wait until each is
# "Peer in Cluster (Connected)".
PROBE_PEERS = """\
for p in $PEERS; do
  out=$(gluster --mode=script peer probe "$p" 2>&1) || { echo "peer probe $p: $out"; exit 156; }
done
n=$(echo $PEERS | wc -w)
i=0
while [ $i -lt 150 ]; do
  c=$(gluster --mode=script peer status 2>/dev/null | grep -c 'Peer in Cluster (Connected)')
  [ "$c" -ge "$n" ] && { echo "peers $c"; exit 0; }
  i=$((i + 1)); sleep 0.2
done
gluster --mode=script peer status 2>&1 | tail -20
exit 157
"""

# On the first node: the replicated volume, started, its quota set to $GB GiB ("GB" in
# gluster's quota is 1024^3 bytes), clients allowed from $ALLOW only.
CREATE_VOLUME = """\
if ! gluster --mode=script volume info "$V" >/dev/null 2>&1; then
  if [ "$REPLICA" -gt 1 ]; then
    out=$(gluster --mode=script volume create "$V" replica "$REPLICA" $BRICKLIST force 2>&1)
  else
    out=$(gluster --mode=script volume create "$V" $BRICKLIST force 2>&1)
  fi || { echo "volume create: $out"; exit 152; }
fi
if ! gluster --mode=script volume info "$V" | grep -q '^Status: Started'; then
  out=$(gluster --mode=script volume start "$V" 2>&1) || { echo "volume start: $out"; exit 153; }
fi
gluster --mode=script volume set "$V" auth.allow "$ALLOW" >/dev/null 2>&1 || true
q=$(gluster --mode=script volume get "$V" features.quota | awk '$1 == "features.quota" {print $2}')
if [ "$q" != on ]; then
  out=$(gluster --mode=script volume quota "$V" enable 2>&1) \
    || { echo "quota enable: $out"; exit 154; }
fi
out=$(gluster --mode=script volume quota "$V" limit-usage / "${GB}GB" 2>&1) \
  || { echo "quota limit-usage: $out"; exit 154; }
echo created
"""

SET_LIMIT = """\
out=$(gluster --mode=script volume quota "$V" limit-usage / "${GB}GB" 2>&1) \
  || { echo "quota limit-usage: $out"; exit 154; }
echo limit
"""

SET_ALLOW = """\
out=$(gluster --mode=script volume set "$V" auth.allow "$ALLOW" 2>&1) \
  || { echo "auth.allow: $out"; exit 158; }
echo allow
"""

# Is the volume served here: glusterd answers and the volume's brick on this node is online.
VOLUME_STATUS = """\
gluster --mode=script pool list >/dev/null 2>&1 || { echo "glusterd does not answer"; exit 151; }
gluster --mode=script volume status "$V" 2>&1 | grep '^Brick' \
  || { echo "volume $V is not started"; exit 159; }
"""

USAGE = 'gluster --mode=script --xml volume quota "$V" list / 2>&1\n'

DELETE_VOLUME = """\
if gluster --mode=script volume info "$V" >/dev/null 2>&1; then
  gluster --mode=script volume stop "$V" force >/dev/null 2>&1 || true
  out=$(gluster --mode=script volume delete "$V" 2>&1) || { echo "volume delete: $out"; exit 180; }
fi
echo deleted
"""

# On each pool node, after the volume is gone: its brick directory.
REMOVE_BRICK = """\
case "$DIR" in /*/*) ;; *) echo "refusing to remove $DIR"; exit 181 ;; esac
rm -rf -- "$DIR" || exit 181
echo removed
"""

# On a member: the FUSE mount at $MP ($SERVERS: the volfile servers, first one primary), its
# path recorded for the driver's deprovision and wipe, a fresh volume's root made 1777.
MOUNT = """\
[ -x /sbin/mount.glusterfs ] || command -v mount.glusterfs >/dev/null 2>&1 \
  || { echo "glusterfs-client is not installed on the member"; exit 160; }
[ -c /dev/fuse ] || { echo "/dev/fuse is missing on the member"; exit 161; }
mkdir -p "$MP" || exit 163
if ! grep -qs " $MP fuse.glusterfs " /proc/mounts; then
  primary=${SERVERS%% *}
  rest=$(echo "${SERVERS#"$primary"}" | sed 's/^ *//' | tr ' ' ':')
  opts=""
  [ -n "$rest" ] && opts="backup-volfile-servers=$rest"
  [ "$RO" = 1 ] && opts="${opts:+$opts,}ro"
  log="/var/log/glusterfs/$(echo "${MP#/}" | tr / -).log"
  if ! mount -t glusterfs ${opts:+-o "$opts"} "$primary:/$V" "$MP" 2>&1; then
    tail -n 3 "$log" 2>/dev/null | sed 's/^/log: /'
    exit 162
  fi
fi
if [ "$RO" = 0 ] && [ "$(stat -c %a "$MP")" = 755 ] && [ -z "$(ls -A "$MP")" ]; then
  chmod 1777 "$MP"
fi
mkdir -p "$STATE/mounts" && chmod 700 "$STATE/mounts"
grep -qxF "$MP" "$STATE/mounts/$W" 2>/dev/null || printf '%s\\n' "$MP" >> "$STATE/mounts/$W"
echo mounted
"""

UNMOUNT = """\
if grep -qs " $MP fuse.glusterfs " /proc/mounts; then
  umount "$MP" 2>/dev/null || umount -l "$MP" || { echo "umount $MP failed"; exit 170; }
fi
rmdir "$MP" 2>/dev/null || true
if [ -f "$STATE/mounts/$W" ]; then
  grep -vxF "$MP" "$STATE/mounts/$W" > "$STATE/mounts/$W.new" || true
  mv "$STATE/mounts/$W.new" "$STATE/mounts/$W"
  [ -s "$STATE/mounts/$W" ] || rm -f "$STATE/mounts/$W"
fi
echo unmounted
"""

FAILURES = {
    150: "glusterfs-server is not installed",
    151: "glusterd does not answer",
    152: "creating the volume failed",
    153: "starting the volume failed",
    154: "setting the volume's quota failed",
    155: "cannot create the brick directory",
    156: "peer probe failed",
    157: "the peers did not connect",
    158: "setting the volume's allowed clients failed",
    159: "the volume is not started",
    160: "glusterfs-client is not installed",
    161: "/dev/fuse is missing",
    162: "the FUSE mount failed",
    163: "cannot create the mount path",
    170: "umount failed",
    180: "deleting the volume failed",
    181: "removing the brick failed",
}


def script(body: str, **values: str | int) -> str:
    return "set -u\n" + assign(STATE=STATE_DIR, **values) + body


def explain(status: int, output: str, limit: int = 300) -> str:
    """What a script's exit status and last output lines say, in one line."""
    what = FAILURES.get(status)
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    tail = " | ".join(lines[-3:])
    if len(tail) > limit:
        tail = tail[: limit - 1] + "…"
    if status == -1:
        return tail or "the node could not be reached"
    head = what or f"exit {status}"
    return f"{head}: {tail}" if tail and tail != what else head


_USED = re.compile(r"<used_space>(\d+)</used_space>")


def parse_used(xml_text: str) -> int | None:
    """Bytes used from ``gluster --xml volume quota V list /`` (None when not there)."""
    start = xml_text.find("<?xml")
    if start < 0:
        return None
    try:
        root = ET.fromstring(xml_text[start:])  # noqa: S314 - trusted storage node output
    except ET.ParseError:
        match = _USED.search(xml_text)
        return int(match.group(1)) if match else None
    node = root.find(".//used_space")
    if node is None or node.text is None or not node.text.strip().isdigit():
        return None
    return int(node.text.strip())
