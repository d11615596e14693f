#!/usr/bin/env bash
# make demo: ebsmon fencing a frozen volume, end to end, in about a minute.
# Everything it makes (loop volume, namespaces, processes) is its own and is
# removed on exit, Ctrl-C included. Firewall changes happen only inside the
# demo's namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make demo needs root (loop devices, namespaces, nftables)"; exit 1; }

EBSMON="$PWD/dist/ebsmon"
HELPERS="$PWD/test/helpers"
WORK=$(mktemp -d /tmp/ebsmon-demo.XXXXXX)
SRV=ebsmon-demo-srv-$$
CLI=ebsmon-demo-cli-$$
PORT=8080
PIDS=()
FROZEN=0
STOPPED=0
MONITOR=
T0=$(date +%s.%N)

now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
say() { printf '[%5ss] %s\n' "$(since "$T0" | sed 's/.$//')" "$*"; }

cleanup() {
  set +e
  [ "$STOPPED" = 1 ] && kill -CONT "$MONITOR"
  [ "$FROZEN" = 1 ] && fsfreeze -u "$WORK/mnt"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$SRV" 2>/dev/null; ip netns del "$CLI" 2>/dev/null
  umount "$WORK/run" 2>/dev/null
  umount "$WORK/mnt" 2>/dev/null || umount -l "$WORK/mnt" 2>/dev/null
  [ -n "${LOOP:-}" ] && losetup -d "$LOOP" 2>/dev/null
  rm -rf "$WORK"
  say "cleaned up: volume unmounted, loop device detached, namespaces deleted"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

client() { ip netns exec "$CLI" node "$HELPERS/client.mjs" 10.214.0.1 "$PORT"; }
client_says() { [ "$(client)" = "$1" ]; }
monitor_up() { [ -p "$WORK/run/ebsmon.fifo" ] && [ -f "$WORK/run/state.json" ]; }
healthy() { "$EBSMON" status --state-dir="$WORK/run" --json 2>/dev/null | grep -q '"state": "healthy"'; }

# Every wait has a bound: a step that does not happen says so, shows the logs and
# exits (the EXIT trap cleans up) instead of leaving the demo hanging.
await() { # SECONDS WHAT COMMAND [ARG...]
  local bound=$1 what=$2 deadline=$(( $(date +%s) + $1 ))
  shift 2
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "gave up: no $what within $bound s"
      tail -n 20 "$WORK/monitor.log" "$WORK/reporter.log" 2>/dev/null | sed 's/^/            log | /'
      exit 1
    fi
    sleep 0.05
  done
}

say "ebsmon demo: a TCP service on a network-like volume, watched by ebsmon"
truncate -s 64M "$WORK/volume.img"; mkfs.ext4 -q -F "$WORK/volume.img"
LOOP=$(losetup -f --show "$WORK/volume.img"); mkdir -p "$WORK/mnt/data" 2>/dev/null || mkdir -p "$WORK/mnt"
mount "$LOOP" "$WORK/mnt"; mkdir -p "$WORK/mnt/data"
say "made a 64 MB ext4 volume on $LOOP, mounted at $WORK/mnt (the service's data directory: $WORK/mnt/data)"

ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link set lo up; ip -n "$CLI" link set lo up
ip link add vdemo0 netns "$SRV" type veth peer name vdemo1 netns "$CLI"
ip -n "$SRV" addr add 10.214.0.1/24 dev vdemo0; ip -n "$CLI" addr add 10.214.0.2/24 dev vdemo1
ip -n "$SRV" link set vdemo0 up; ip -n "$CLI" link set vdemo1 up
say "made two network namespaces: server $SRV (10.214.0.1) and client $CLI (10.214.0.2)"

# The monitor's state directory is tmpfs, as /run/ebsmon is.
mkdir -p "$WORK/run"; mount -t tmpfs -o size=8m tmpfs "$WORK/run"
(cd "$WORK/mnt/data" && exec ip netns exec "$SRV" node "$HELPERS/server.mjs" "$PORT" >/dev/null) & PIDS+=($!)
ip netns exec "$SRV" "$EBSMON" monitor --fifo="$WORK/run/ebsmon.fifo" --state-dir="$WORK/run" --timeout=3 --recover=2 --log-format=text 2>"$WORK/monitor.log" & MONITOR=$!; PIDS+=($MONITOR)
await 30 "monitor running" monitor_up
"$EBSMON" report --monitor="$WORK/mnt/data" --name=demo --ports="$PORT" --fifo="$WORK/run/ebsmon.fifo" --interval=0.5 --probe-timeout=1 --log-format=text 2>"$WORK/reporter.log" & PIDS+=($!)
await 30 "healthy reporter" healthy
say "started the service on port $PORT, ebsmon monitor (--timeout=3 --recover=2) and ebsmon report (--interval=0.5)"
say "client -> service: $(client)"
say "the kernel holds the deadline: each heartbeat re-arms the port's element in table inet ebsmon"
ip netns exec "$SRV" nft list set inet ebsmon alive | grep elements | sed 's/^[[:space:]]*/             nft | /'

say "freezing the volume (fsfreeze -f): every write to it now hangs, like a stuck EBS volume"
fsfreeze -f "$WORK/mnt"; FROZEN=1; FREEZE=$(now)
await 30 "fence" client_says refused
say "client -> service: refused (TCP reset) $(since "$FREEZE") s after the freeze: clients fail fast instead of hanging"
"$EBSMON" status --state-dir="$WORK/run" | sed 's/^/          status | /'
ip netns exec "$SRV" nft list table inet ebsmon | sed 's/^/             nft | /'
say "the service still answers on loopback inside its host: $(ip netns exec "$SRV" node "$HELPERS/client.mjs" 127.0.0.1 "$PORT")"

say "thawing the volume (fsfreeze -u)"
fsfreeze -u "$WORK/mnt"; FROZEN=0; THAW=$(now)
await 30 "unfence after the thaw" client_says ok
say "client -> service: ok again $(since "$THAW") s after the thaw (after 2 fresh heartbeats)"

say "now the monitor itself is frozen (SIGSTOP), as when the root disk hangs under it, and then the volume"
kill -STOP "$MONITOR"; STOPPED=1
fsfreeze -f "$WORK/mnt"; FROZEN=1; FREEZE=$(now)
await 30 "fence by the kernel" client_says refused
say "client -> service: refused $(since "$FREEZE") s after the freeze, with the monitor stopped: the kernel fenced at the deadline by itself"
kill -CONT "$MONITOR"; STOPPED=0
fsfreeze -u "$WORK/mnt"; FROZEN=0; THAW=$(now)
await 30 "unfence after the thaw" client_says ok
say "monitor continued, volume thawed: client -> service: ok again $(since "$THAW") s after the thaw"
"$EBSMON" status --state-dir="$WORK/run" | sed 's/^/          status | /'
say "what the monitor logged:"
sed 's/^/         monitor | /' "$WORK/monitor.log"
say "demo finished"
