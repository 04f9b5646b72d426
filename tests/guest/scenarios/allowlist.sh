# The allowlist over the ring (VdevGuestTests.Allowlist_*). The host lays out photos/, docs/pub/ (allowed),
# secret, secretdir/ and docs/private.txt (hidden) and enables the allowlist in phase 1; the guest then tries every
# operation that names a child against a hidden name and in directories that are only the path down to an allowed
# one, each printed as "@@HV val op NAME RESULT" for the host to compare (the same list as the /dev/fuse test,
# MountAllowlistTests). In phase 2 the host removes keep.txt from the allowlist while the guest holds it open and
# cached: new opens and changes are refused, the open descriptor keeps reading.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
# Known before the allowlist: the name stays in the guest's caches (cache always) and fd 3 stays open.
exec 3< $M/keep.txt
hv_expect keep.before K "$(cat $M/keep.txt)"
hv_phase 1 $M/mailbox || exit 1

op() { hv_val op "$(hvtool fsop "$@")"; }
op open-hidden open $M/secret r
op open-creat-hidden open $M/secret rc
op append-creat-hidden open $M/secret ac
op excl-creat-hidden open $M/secret xc
op creat-new-in-path-dir open $M/newfile wc
op mkdir-new-in-path-dir mkdir $M/newdir
op mkdir-hidden mkdir $M/secret
op mkdir-visible-existing mkdir $M/photos
op symlink-new-in-path-dir symlink photos $M/lnk
op symlink-hidden symlink photos $M/secret
op link-new-in-path-dir link $M/photos/a.jpg $M/hard
op link-over-hidden link $M/photos/a.jpg $M/secret
op mknod-new-in-path-dir mkfifo $M/fifo
op mknod-hidden mkfifo $M/secret
op unlink-hidden unlink $M/secret
op rmdir-hidden rmdir $M/secretdir
op unlink-below-hidden unlink $M/secretdir/inner
op rename-hidden-source rename $M/secret $M/photos/s
op rename-over-hidden rename $M/photos/a.jpg $M/secret
op rename-to-new-in-path-dir rename $M/photos/a.jpg $M/moved
op exchange-with-hidden exchange $M/photos/a.jpg $M/secret
op noreplace-over-hidden noreplace $M/photos/a.jpg $M/secret
op creat-in-nested-path-dir open $M/docs/new.txt wc
op open-hidden-in-nested-path-dir open $M/docs/private.txt r
op mkdir-in-nested-path-dir mkdir $M/docs/d
op rename-out-of-allowed rename $M/docs/pub/p.txt $M/docs/p2
op setxattr-hidden setxattr $M/secret
op tmpfile-in-path-dir tmpfile $M
op creat-in-allowed open $M/photos/new.jpg wc
op mkdir-in-allowed mkdir $M/photos/sub
op creat-in-nested-allowed open $M/docs/pub/q.txt wc
hv_val op "list-root $(ls $M | sort | tr '\n' ',' | sed 's/,$//')"
hv_val op "list-docs $(ls $M/docs | sort | tr '\n' ',' | sed 's/,$//')"

hv_phase 2 $M/mailbox || exit 1
# keep.txt is no longer allowed; the guest still has its dentry (cache always) and fd 3.
op removed-open open $M/keep.txt r
op removed-setxattr setxattr $M/keep.txt
op removed-chmod chmod $M/keep.txt
hv_expect removed.fdread K "$(cat <&3)"
exec 3<&-
hv_check umount umount $M
