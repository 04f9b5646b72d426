# Id translation (TranslateGuestTests). The vdev runs with
#   --translate-uid map:1000:2000:10 --translate-uid squash-host:5000:65534:100 --translate-uid forbid-guest:4000:10
#   --translate-gid squash-guest:500:7000:100 --translate-gid guest:100:200:5 --translate-gid host:300:400:5
#   --translate-gid forbid-guest:4000:10
# and the host made h-map (2005:0), h-squash (5050:302), h-guest (1102:202), h-none (1003:7000) and pub/ (0777).
# The guest prints the owners it sees for those ("@@HV val seen ..."), chowns files of its own and creates some as
# uid 1002 gid 101 ("@@HV val made ..."), and tries a forbidden uid and gid ("@@HV val forbidden ..."); the host
# then checks the owners on its side.
M=/mnt/s
# Guest users other than root must reach the mount point (the initramfs's root may be root's alone).
chmod 755 / /mnt
hv_check mount hv_mount "$HV_TAG0" $M || exit 1

# host -> guest: a listing first (READDIRPLUS carries the attributes), then stat of each name.
ls -ln $M | awk '$9 ~ /^h-/ { print $9, $3 ":" $4 }' | while read -r name owner; do hv_val listed "$name $owner"; done
for f in h-map h-squash h-guest h-none; do hv_val seen "$f $(stat -c %u:%g $M/$f)"; done

# guest -> host: chown by the guest's root, then what the guest sees back.
for spec in c-map:1003:0 c-squash:0:550 c-guest:0:102 c-none:77:88; do
    name=${spec%%:*}; owner=${spec#*:}
    touch $M/pub/$name
    chown $owner $M/pub/$name
    hv_val made "$name $(stat -c %u:%g $M/pub/$name)"
done

# guest -> host: the owner of what a guest user creates (CREATE, MKDIR, MKNOD, SYMLINK), and LINK's reply.
as_user() { hvtool runas 1002 101 fsop "$@"; }
hv_val made "$(as_user u-file open $M/pub/u-file wc)"
hv_val made "$(as_user u-dir mkdir $M/pub/u-dir)"
hv_val made "$(as_user u-fifo mkfifo $M/pub/u-fifo)"
hv_val made "$(as_user u-link symlink u-file $M/pub/u-link)"
ln $M/pub/u-file $M/pub/u-hard
for f in u-file u-dir u-fifo u-link u-hard; do hv_val made "$f $(stat -c %u:%g $M/pub/$f)"; done

# forbidden guest ids: no file is made with them, and no file is given them.
hv_val forbidden "$(hvtool runas 4005 0 fsop uid open $M/pub/f-uid wc)"
hv_val forbidden "$(hvtool runas 0 4005 fsop gid open $M/pub/f-gid wc)"
chown 4005 $M/pub/c-none 2>/dev/null; hv_val forbidden "chown-uid $?"
chown :4009 $M/pub/c-none 2>/dev/null; hv_val forbidden "chown-gid $?"
hv_val forbidden "c-none $(stat -c %u:%g $M/pub/c-none)"
hv_check umount umount $M
