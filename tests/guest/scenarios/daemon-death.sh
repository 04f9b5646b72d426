# The share's passthrough daemon dies while the guest has the share mounted (VdevGuestTests.DaemonDeath_*).
# Before: lookups of fresh names reach the daemon and fail with ENOENT. After the host killed the daemon
# (it does so when it sees "@@HV val phase 1"), every new operation must fail with EIO promptly rather
# than hang; each probe runs under `timeout -s KILL` so a hang shows up as a failed check, not a stuck boot.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
hv_expect read.before hello "$(cat $M/hello.txt)"
up() { cut -d' ' -f1 /proc/uptime; }
# While the daemon lives, a fresh name is looked up by the daemon and does not exist.
out=$(timeout -s KILL 15 stat $M/probe-alive 2>&1)
case "$out" in
    *"No such file"*) hv_ok alive.enoent ;;
    *) hv_fail alive.enoent "expected ENOENT while the daemon runs, got: $out" ;;
esac

hv_val phase 1
t0=$(up)
n=0; out=""
while [ $n -lt 300 ]; do
    out=$(timeout -s KILL 15 stat $M/probe$n 2>&1)
    case "$out" in
        *"No such file"*) ;;
        *) break ;;
    esac
    usleep 100000
    n=$((n + 1))
done
t1=$(up)
hv_val probes "$n"
hv_val first_error "$out"
hv_val seconds_to_error "$(awk "BEGIN { print $t1 - $t0 }")"
case "$out" in
    *"I/O error"*|*"Input/output error"*) hv_ok stat.eio ;;
    *) hv_fail stat.eio "expected EIO from stat of a new name, got: $out" ;;
esac
t0=$(up)
out=$(timeout -s KILL 15 cat $M/never-read.txt 2>&1); rc=$?
hv_val read_seconds "$(awk "BEGIN { print $(up) - $t0 }")"
hv_val read_error "rc=$rc $out"
case "$out" in
    *"I/O error"*|*"Input/output error"*) hv_ok read.eio ;;
    *) hv_fail read.eio "expected EIO from reading a file never opened before, got rc=$rc: $out" ;;
esac
out=$(timeout -s KILL 15 umount $M 2>&1); rc=$?
hv_val umount "rc=$rc $out"
[ $rc -eq 0 ] || timeout -s KILL 15 umount -l $M
hv_expect unmounted no "$(grep -q " $M " /proc/mounts && echo yes || echo no)"
