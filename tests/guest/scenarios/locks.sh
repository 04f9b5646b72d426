# Byte-range and flock locks on a share (VdevGuestTests.Locks_*). Always: stress-ng's lockf, flock and fcntl
# stressors with --verify, two instances each and then all three at once, each run bounded by a timeout that only a
# hang reaches; two guest processes' locks conflict as on the guest's own tmpfs (EAGAIN, GETLK naming the holder,
# EDEADLK for a cycle). With HV_HOSTLOCKS=1 (a backend whose locks reach the host) the host takes part through the
# mailbox: a guest F_SETLKW waits behind a host process's lock until the host releases it, and a waiter killed
# with SIGKILL leaves no lock behind.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
mkdir -p $M/stress

stress() {
    name=$1; shift
    t0=$(hvtool now)
    timeout 120 stress-ng "$@" --timeout 5 --verify --temp-path $M/stress >/tmp/stress.out 2>&1
    rc=$?
    t1=$(hvtool now)
    hv_val "stress_${name}_ms" $(((t1 - t0) / 1000000))
    if [ $rc -eq 0 ]; then hv_ok "stress.$name"; else hv_fail "stress.$name" "exit $rc: $(tail -n 4 /tmp/stress.out)"; fi
}
if command -v stress-ng >/dev/null; then
    hv_ok stress.present
    stress lockf --lockf 2
    stress flock --flock 2
    stress fcntl --fcntl 2
    stress all --lockf 2 --flock 2 --fcntl 2
else
    hv_fail stress.present "stress-ng is not in the initramfs: install the stress-ng package on the host"
fi

# Two guest processes, on the guest's tmpfs and on the share: every answer must be the same.
for where in local share; do
    if [ $where = local ]; then D=/tmp/locks; mkdir -p $D; else D=$M; fi
    F=$D/two.txt
    R=/tmp/two.$where
    mkdir -p $R
    echo "0123456789abcdefghij" > $F
    rm -f /tmp/release.a /tmp/a.out
    hvtool lock $F 0 10 w set /tmp/release.a > /tmp/a.out &
    A=$!
    n=0; while [ ! -s /tmp/a.out ] && [ $n -lt 300 ]; do usleep 100000; n=$((n + 1)); done
    cat /tmp/a.out > $R/a
    hvtool lock $F 5 10 w set > $R/overlap
    hvtool lock $F 0 1 r set > $R/read_overlap
    hvtool lock $F 10 5 w set > $R/disjoint
    hvtool getlk $F 5 1 w | sed "s/ $A\$/ HOLDER/" > $R/getlk
    touch /tmp/release.a
    wait $A
    hvtool lock $F 5 10 w set > $R/after_release
    hvtool deadlock $F > $R/deadlock
done
for v in a overlap read_overlap disjoint getlk after_release deadlock; do
    hv_val "two_$v" "$(cat /tmp/two.share/$v)"
    hv_expect "two.$v" "$(cat /tmp/two.local/$v)" "$(cat /tmp/two.share/$v)"
done

# A guest waiter killed with SIGKILL while another guest process holds the lock: it leaves (through the vdev only
# after the daemon's bound on waits behind guest owners, since no INTERRUPT tells the daemon), the holder keeps
# its lock, and once the holder lets go the lock is free.
F=$M/kill.txt
echo k > $F
rm -f /tmp/release.h /tmp/h.out /tmp/v.out
hvtool lock $F 0 1 w set /tmp/release.h > /tmp/h.out &
HOLDER=$!
n=0; while [ ! -s /tmp/h.out ] && [ $n -lt 300 ]; do usleep 100000; n=$((n + 1)); done
hv_expect kill.guest.holder 0 "$(cat /tmp/h.out)"
hvtool lock $F 0 1 w wait > /tmp/v.out &
V=$!
sleep 1
if [ -s /tmp/v.out ]; then hv_fail kill.guest.blocked "F_SETLKW returned $(cat /tmp/v.out) while another process held the lock"; else hv_ok kill.guest.blocked; fi
t0=$(hvtool now)
kill -9 $V
wait $V
t1=$(hvtool now)
hv_val killed_guest_waiter_ms $(((t1 - t0) / 1000000))
hv_expect kill.guest.holder_keeps 11 "$(hvtool lock $F 0 1 w set)"
touch /tmp/release.h
wait $HOLDER
hv_expect kill.guest.free 0 "$(hvtool lock $F 0 1 w set)"

if [ "${HV_HOSTLOCKS:-0}" = 1 ]; then
    H=$M/host.txt
    # Phase 1: the host holds a write lock on byte 0 of host.txt.
    hv_phase 1 $M/mailbox || exit 1
    hv_expect host.conflict 11 "$(hvtool lock $H 0 1 w set)"
    rm -f /tmp/release.w /tmp/w.out
    hvtool lock $H 0 1 w wait /tmp/release.w > /tmp/w.out &
    W=$!
    sleep 2
    if [ -s /tmp/w.out ]; then hv_fail host.blocked "F_SETLKW returned $(cat /tmp/w.out) while the host held the lock"; else hv_ok host.blocked; fi
    # Phase 2: the host releases; the waiting guest process gets the lock.
    hv_phase 2 $M/mailbox || exit 1
    n=0; while [ ! -s /tmp/w.out ] && [ $n -lt 300 ]; do usleep 100000; n=$((n + 1)); done
    hv_expect host.granted 0 "$(cat /tmp/w.out)"
    # Phase 3: the guest holds the lock now, so the host cannot take it (the host checks and reports).
    hv_phase 3 $M/mailbox || exit 1
    touch /tmp/release.w
    wait $W

    # Phase 4: the host holds the lock again; a guest waiter is killed with SIGKILL.
    hv_phase 4 $M/mailbox || exit 1
    hvtool lock $H 0 1 w wait > /tmp/k.out &
    K=$!
    sleep 2
    if [ -s /tmp/k.out ]; then hv_fail kill.blocked "F_SETLKW returned $(cat /tmp/k.out) while the host held the lock"; else hv_ok kill.blocked; fi
    kill -9 $K
    sleep 2
    # Linux's virtio-fs driver sends no INTERRUPT, so a process killed in a FUSE SETLKW stays (state D) until the
    # daemon answers; the host reads this value.
    hv_val killed_state "$(cut -d' ' -f3 /proc/$K/stat 2>/dev/null || echo gone)"
    # Phase 5: the host releases; the killed waiter is answered, exits, and its lock goes with it.
    hv_phase 5 $M/mailbox || exit 1
    wait $K
    hv_val killed_after "$(cut -d' ' -f3 /proc/$K/stat 2>/dev/null || echo gone)"
    hv_expect kill.nolock 0 "$(hvtool lock $H 0 1 w set)"
    # Phase 6: the host can take the lock: nothing of the killed waiter is left.
    hv_phase 6 $M/mailbox || exit 1
fi
hv_check umount umount $M
