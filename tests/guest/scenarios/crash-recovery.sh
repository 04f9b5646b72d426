# The share's daemon is killed with SIGKILL three times while a program writes, fsyncs, re-reads and lists files
# (VdevGuestTests.DaemonKilledThreeTimes_*). The host kills it after "@@HV val phase 1" and creates $M/stop when it is
# done; the vdev starts a new daemon each time and the guest keeps its mount. hvtool crashload counts EIO from a
# create (the one request in flight at a crash that the vdev answers EIO) and fails on any other error.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
mkdir -p $M/load
hv_expect read.before hello "$(cat $M/hello.txt)"
hv_val phase 1
out=$(timeout -s KILL 600 hvtool crashload $M/load $M/stop 2>&1); rc=$?
hv_val crashload "$(echo "$out" | tail -n 1)"
hv_val crashload_log "$(echo "$out" | head -n 5 | tr '\n' '|')"
hv_expect crashload.rc 0 "$rc"
hv_expect read.after hello "$(cat $M/hello.txt)"
out=$(timeout -s KILL 30 umount $M 2>&1); rc=$?
hv_expect umount 0 "$rc"
