# A tmpfs the host mounted at sub/ inside the share before the backend started (SubmountGuestTests): with
# announce-submounts (the vdev's default, virtiofsd's -o announce_submounts) the guest makes it a submount with a
# device number of its own; without, it shares the device number of the rest of the share.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
hv_expect sub.read on-tmpfs "$(cat $M/sub/f.txt)"
hv_expect plain.read on-share "$(cat $M/plain/g.txt)"
hv_val share_dev "$(stat -c %d $M)"
hv_val plain_dev "$(stat -c %d $M/plain)"
hv_val sub_dev "$(stat -c %d $M/sub)"
hv_val subfile_dev "$(stat -c %d $M/sub/f.txt)"
hv_val sub_mounted "$(awk -v m=$M/sub '$2==m {print $3}' /proc/mounts)"
# A write into the submount reaches the host's tmpfs.
echo from-guest > $M/sub/guest.txt
hv_drop_caches
hv_expect sub.write from-guest "$(cat $M/sub/guest.txt)"
hv_check umount umount -l $M
