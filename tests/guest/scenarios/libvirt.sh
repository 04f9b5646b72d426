# vdev started the way libvirt starts virtiofsd (VdevGuestTests.LibvirtStyle_*): the guest mounts the tag,
# reads what the host put there, writes a file and a directory, and reads them back after dropping caches.
M=/mnt/s
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
hv_expect read.host "from-host" "$(cat $M/host.txt)"
hv_check mkdir mkdir $M/dir
echo from-guest > $M/dir/guest.txt
hvtool pattern $M/dir/data.bin 4 4242
hv_drop_caches
hv_expect read.back from-guest "$(cat $M/dir/guest.txt)"
hv_val data_sha256 "$(sha256sum $M/dir/data.bin | cut -d' ' -f1)"
hv_check umount umount $M
