# Security labels (SecurityLabelGuestTests): the guest boots with SELinux (security=selinux, no policy loaded), whose
# dentry_init_security hook gives every new file a context, so FUSE_SECURITY_CTX requests carry one. Share 0
# ($HV_TAG0) is served with --security-label by a daemon that may set security.* xattrs on the host; share 1
# ($HV_TAG1) with --security-label and an xattr map that refuses security.* names, so every labelled creation there
# must fail and leave nothing.
L=/mnt/l; N=/mnt/n
hv_check mount.l hv_mount "$HV_TAG0" $L || exit 1
hv_check mount.n hv_mount "$HV_TAG1" $N || exit 1
op() { hv_val op "$1 $2"; }
for M in $L $N; do
    w=$([ $M = $L ] && echo labelled || echo refused)
    op $w.create "$(hvtool fsop x open $M/file wc)"
    op $w.mkdir "$(hvtool fsop x mkdir $M/dir)"
    op $w.symlink "$(hvtool fsop x symlink file $M/link)"
    op $w.mkfifo "$(hvtool fsop x mkfifo $M/fifo)"
    op $w.list "$(ls $M | tr '\n' ',')"
done
