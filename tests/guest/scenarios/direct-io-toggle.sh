# Cache policy "always" vs direct I/O switched on at run time (VdevGuestTests.DirectIo_ToggledOverGrpc_*).
# The host rewrites data.txt in place (same size) while the guest holds it in its page cache; a new open
# still reads the old content (FOPEN_KEEP_CACHE, long attribute timeouts). When HV_TOGGLE=1 the host then
# switches direct I/O on over the control socket and a new open must read the new content from the daemon.
# Host and guest take turns: the guest prints "@@HV val phase N" and polls the mailbox file with O_DIRECT
# reads (which always reach the daemon, so the mailbox is never stale) until the host has written "goN".
# The mailbox keeps its size: an O_DIRECT read stops at the guest's cached i_size.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1

wait_for() {
    hv_val phase "$1"
    n=0
    while [ $n -lt 600 ]; do
        if [ "$(dd if=$M/mailbox bs=4096 count=1 iflag=direct 2>/dev/null | tr -d ' \n')" = "go$1" ]; then return 0; fi
        usleep 100000
        n=$((n + 1))
    done
    hv_fail "wait.$1" "the host did not write go$1 to the mailbox within 60 s"
    return 1
}

hv_expect read.first "$HV_A" "$(cat $M/data.txt)"
wait_for 1 || exit 1
# The host has rewritten data.txt with B: a new open still sees the cached A.
hv_val second_read "$(cat $M/data.txt)"
hv_expect read.stale "$HV_A" "$(cat $M/data.txt)"
if [ "$HV_TOGGLE" = 1 ]; then
    wait_for 2 || exit 1
    # Direct I/O is on now: the next open is FOPEN_DIRECT_IO and reads from the daemon.
    hv_val third_read "$(cat $M/data.txt)"
    hv_expect read.direct "$HV_B" "$(cat $M/data.txt)"
fi
hv_check umount umount $M
