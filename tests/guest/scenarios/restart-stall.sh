# The guest-visible stall of a planned restart (hv-bench restart-stall): hvtool stallwatch reads $M/mailbox with
# O_DIRECT back to back while the host writes "b N", restarts the daemon, writes "d N", and at the end "s".
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
hv_val phase 1
out=$(timeout -s KILL 900 hvtool stallwatch $M/mailbox 2>&1); rc=$?
echo "$out" | while IFS= read -r line; do hv_val stall "$line"; done
hv_expect stallwatch.rc 0 "$rc"
out=$(timeout -s KILL 30 umount $M 2>&1); rc=$?
hv_expect umount 0 "$rc"
