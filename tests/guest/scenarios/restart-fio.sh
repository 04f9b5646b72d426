# fio's random read/write with verification on the share while the host replaces the share's daemon with
# `vdev ctl restart` three times (VdevGuestTests.PlannedRestartThreeTimes_*). Three jobs, each on its own 16 MiB
# file: "direct" (psync, O_DIRECT, so every read and write is a FUSE request the daemon serves, and every verify
# read compares what the host file holds), "buffered" (psync through the guest's page cache, as most programs do)
# and "aio" (libaio, O_DIRECT, 16 in flight: the guest's FUSE layer sends them as concurrent requests, so a drain
# always finds some in flight).
# verify_backlog makes fio re-read and check the crc32c of what it wrote while it runs, not only at the end.
# The host restarts after "@@HV val phase 1" and must be done before fio's time is up; the guest then reports
# fio's exit status and its whole JSON report, one "@@HV val fio_json" line per line, for the host to check.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
command -v fio >/dev/null || { hv_fail fio.present "fio is not in the initramfs: boot with GuestOptions.WithFio and install fio on the host (.ci/setup)"; exit 1; }
hv_ok fio.present
mkdir -p $M/fio
fio --output-format=json --output=/tmp/fio.json \
    --directory=$M/fio --rw=randrw --bs=4k --size=16m \
    --verify=crc32c --do_verify=1 --verify_backlog=32 --verify_fatal=1 \
    --time_based --runtime="${HV_FIO_SECONDS:-60}" \
    --name=direct --ioengine=psync --direct=1 --name=buffered --ioengine=psync --direct=0 \
    --name=aio --ioengine=libaio --iodepth=16 --direct=1 >/tmp/fio.err 2>&1 &
fio_pid=$!
hv_val phase 1
wait $fio_pid; rc=$?
hv_val fio_done "$rc"
while IFS= read -r line; do hv_val fio_json "$line"; done < /tmp/fio.json
hv_val fio_stderr "$(head -c 2000 /tmp/fio.err | tr '\n' '|')"
hv_expect fio.rc 0 "$rc"
hv_expect read.after hello "$(cat $M/hello.txt)"
out=$(timeout -s KILL 30 umount $M 2>&1); rc=$?
hv_expect umount 0 "$rc"
