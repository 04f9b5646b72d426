# Two virtio-fs devices (tags $HV_TAG0 and $HV_TAG1) in one guest: both mount, stay separate,
# and data copied between them arrives intact. The host checks both directories afterwards
# (VirtioFsGuestTests.TwoShares).
A=/mnt/a; B=/mnt/b
hv_check mount.a hv_mount "$HV_TAG0" $A || exit 1
hv_check mount.b hv_mount "$HV_TAG1" $B || exit 1
hv_expect mounts 2 "$(grep -c ' virtiofs ' /proc/mounts)"
hv_expect host.a share-a "$(cat $A/whoami)"
hv_expect host.b share-b "$(cat $B/whoami)"
echo from-guest-a > $A/only-a
echo from-guest-b > $B/only-b
hv_expect isolated.a no "$([ -e $B/only-a ] && echo yes || echo no)"
hv_expect isolated.b no "$([ -e $A/only-b ] && echo yes || echo no)"
hvtool pattern $A/data.bin 8 777
hv_check copy cp $A/data.bin $B/data.bin
hv_drop_caches
hv_expect copy.sha256 "$(sha256sum $A/data.bin | cut -d' ' -f1)" "$(sha256sum $B/data.bin | cut -d' ' -f1)"
hv_val data_sha256 "$(sha256sum $B/data.bin | cut -d' ' -f1)"
mv $A/only-a $A/renamed-a
hv_expect cross_rename.exdev 18 "$(hvtool rename2 $B/only-b $A/only-b noreplace)"
hv_check umount.a umount $A
hv_expect b_survives from-guest-b "$(cat $B/only-b)"
hv_check umount.b umount $B
