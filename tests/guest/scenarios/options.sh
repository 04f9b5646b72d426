# virtiofsd options whose effect the guest and the host see (OptionsGuestTests). Share 0 ($HV_TAG0) is served with
# --preserve-noatime --no-readdirplus --thread-pool-size 2, share 1 ($HV_TAG1) with none of them; both with direct I/O
# so that every read reaches the daemon. The host put in each: old.txt (atime in 2001), a directory "many" of 50
# files, and a mailbox. At phase 1 the host reads each share's status and daemon threads while both are mounted.
op() { hv_val op "$1 $2"; }
hv_check mount.a hv_mount "$HV_TAG0" /mnt/a || exit 1
hv_check mount.b hv_mount "$HV_TAG1" /mnt/b || exit 1
for s in a b; do
    M=/mnt/$s
    op $s.noatime "$(hvtool fsop x noatime $M/old.txt)"
    op $s.list "$(ls -l $M/many | grep -c '^-')"
    hvtool pattern $M/data.bin 8 7
    hv_drop_caches
    hv_val $s.sha "$(sha256sum $M/data.bin | cut -d' ' -f1)"
done
hv_phase 1 /mnt/a/mailbox || exit 1
hv_check umount.a umount /mnt/a
hv_check umount.b umount /mnt/b
