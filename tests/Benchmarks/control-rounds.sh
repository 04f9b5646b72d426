#!/bin/bash
# Alternated rounds of `hv-bench control` against several daemon builds (tests/Benchmarks/VdevBench.md, sections A0,
# A1, N, X). usage: control-rounds.sh ROUNDS NAME=DIST[=ENV]... ; in each round, each NAME's DIST/passthrough is started
# fresh serving a FUSE mount with a control socket (--sandbox none, except for a build named e32, the hand-written
# control plane, which has no such option), called by one client, then stopped. Prints one line per measurement with
# the load average and the daemon's utime+stime ticks over the invocation. Run as root under flock /tmp/hv-bench.lock.
# CLIENT (default: this tree's hv-bench), CALLS (20000), WARMUP (seconds, the tool's default 10), WORK (scratch).
set -u
CLIENT=${CLIENT:-$(dirname "$0")/bin/Release/net10.0/hv-bench}
CALLS=${CALLS:-20000}
WORK=${WORK:-/tmp/control-rounds}
rounds=$1; shift
start() { # name dir env
  local n=$1 d=$2 e=$3 w=$WORK/run-$1
  mkdir -p $w/share $w/mnt; rm -f $w/c.sock
  local extra="--sandbox none"
  [ "$n" = e32 ] && extra=""
  env $e $d/passthrough --shared-dir $w/share --mount $w/mnt --control-socket $w/c.sock --log-level warn $extra >$w/log 2>&1 &
  echo $! > $w/pid
  for i in $(seq 100); do [ -S $w/c.sock ] && break; sleep 0.1; done
  sleep 1
}
stop() {
  local w=$WORK/run-$1
  kill $(cat $w/pid) 2>/dev/null; wait $(cat $w/pid) 2>/dev/null
  umount $w/mnt 2>/dev/null || true
}
for r in $(seq $rounds); do
  for spec in "$@"; do
    n=${spec%%=*}; rest=${spec#*=}; d=${rest%%=*}; e=""; [ "$d" != "$rest" ] && e=${rest#*=}
    start $n $d "$e"
    pid=$(cat $WORK/run-$n/pid)
    c0=$(awk '{print $14+$15}' /proc/$pid/stat)
    out=$($CLIENT control --socket $WORK/run-$n/c.sock --calls $CALLS --warmup ${WARMUP:-10} 2>&1 | tr '\n' ' ')
    c1=$(awk '{print $14+$15}' /proc/$pid/stat)
    echo "$n load $(cut -d' ' -f1 /proc/loadavg): $out daemon-cpu-ticks $((c1-c0))"
    stop $n
  done
done
