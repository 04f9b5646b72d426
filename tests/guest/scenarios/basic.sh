# Basic virtio-fs scenario on one share (tag $HV_TAG0), run by /init with /lib/hv.sh sourced.
# The host prepared: host-in.bin (random, sha256 in $HV_HOST_SHA256), hostdir/ with
# $HV_HOST_FILES files. The host checks what this leaves behind after the guest powers off
# (VirtioFsGuestTests.Basic); names of checks below are asserted there too.
M=/mnt/s0
hv_check mount hv_mount "$HV_TAG0" $M || exit 1
hv_expect mount.fstype virtiofs "$(awk -v m=$M '$2==m {print $3}' /proc/mounts)"

# Host-written data read in the guest.
hv_expect host_read.sha256 "$HV_HOST_SHA256" "$(sha256sum $M/host-in.bin | cut -d' ' -f1)"
hv_expect host_dir.count "$HV_HOST_FILES" "$(ls $M/hostdir | wc -l)"
# Every name and size of the listing (READDIRPLUS built in guest memory by the daemon), as the host computed them.
hv_expect host_dir.listing_sha256 "$HV_HOST_LISTING_SHA256" "$(cd $M/hostdir && stat -c '%n %s' * | sha256sum | cut -d' ' -f1)"

# 32 MiB (by default) written by the guest, read back after dropping the guest's caches.
MIB=${HV_BIG_MIB:-32}
hvtool pattern /tmp/big.src "$MIB" 12345
src=$(sha256sum /tmp/big.src | cut -d' ' -f1)
hv_check big.write cp /tmp/big.src $M/big.bin
rm -f /tmp/big.src
hv_drop_caches
hv_expect big.size $((MIB * 1048576)) "$(stat -c %s $M/big.bin)"
hv_expect big.readback "$src" "$(sha256sum $M/big.bin | cut -d' ' -f1)"
hv_val big_sha256 "$src"
# Overwrite one block in the middle without truncating; the rest must stay intact.
dd if=/dev/zero of=$M/big.bin bs=4096 seek=1000 count=1 conv=notrunc 2>/dev/null
hv_drop_caches
hv_expect big.overwrite.size $((MIB * 1048576)) "$(stat -c %s $M/big.bin)"
hv_expect big.overwrite.zeros 0 "$(dd if=$M/big.bin bs=4096 skip=1000 count=1 2>/dev/null | tr -d '\000' | wc -c)"
hv_val big2_sha256 "$(sha256sum $M/big.bin | cut -d' ' -f1)"
# Append.
echo tail >> $M/big.bin
hv_expect big.append.size $((MIB * 1048576 + 5)) "$(stat -c %s $M/big.bin)"

# rename (same directory, across directories, over an existing file, RENAME_NOREPLACE/EXCHANGE).
echo hello > $M/a.txt
mv $M/a.txt $M/b.txt
hv_expect rename.old_gone no "$([ -e $M/a.txt ] && echo yes || echo no)"
hv_expect rename.content hello "$(cat $M/b.txt)"
mkdir -p $M/sub
echo moved > $M/m.txt
mv $M/m.txt $M/sub/m.txt
hv_expect rename.cross_dir moved "$(cat $M/sub/m.txt)"
echo one > $M/r1; echo two > $M/r2
mv -f $M/r1 $M/r2
hv_expect rename.replace one "$(cat $M/r2)"
echo x > $M/e1; echo y > $M/e2
hv_expect rename.noreplace 17 "$(hvtool rename2 $M/e1 $M/e2 noreplace)"
hv_expect rename.exchange 0 "$(hvtool rename2 $M/e1 $M/e2 exchange)"
hv_expect rename.exchanged "y x" "$(cat $M/e1) $(cat $M/e2)"

# Hard and symbolic links.
ln $M/b.txt $M/hard.txt
hv_expect link.nlink 2 "$(stat -c %h $M/b.txt)"
hv_expect link.same_inode "$(stat -c %i $M/b.txt)" "$(stat -c %i $M/hard.txt)"
ln -s b.txt $M/sym
hv_expect symlink.target b.txt "$(readlink $M/sym)"
hv_expect symlink.follow hello "$(cat $M/sym)"
hv_expect symlink.type "symbolic link" "$(stat -c %F $M/sym)"
ln -s /nonexistent/target $M/dangling
hv_expect symlink.dangling /nonexistent/target "$(readlink $M/dangling)"

# Attributes: chmod, chown, utimes (touch -d, guest TZ is UTC).
echo attrs > $M/attr.txt
chmod 0640 $M/attr.txt
hv_expect chmod 640 "$(stat -c %a $M/attr.txt)"
chown 1234:5678 $M/attr.txt
hv_expect chown 1234:5678 "$(stat -c %u:%g $M/attr.txt)"
truncate -s 3 $M/attr.txt
hv_expect truncate att "$(cat $M/attr.txt)"
touch -d "2001-02-03 04:05:06" $M/attr.txt
hv_expect utimes.mtime 981173106 "$(stat -c %Y $M/attr.txt)"

# Directories: mkdir/rmdir, rmdir of a non-empty directory fails, 1,500 entries.
mkdir -p $M/d1/d2/d3
hv_check mkdir.nested test -d $M/d1/d2/d3
hv_check rmdir.nonempty_refused sh -c "! rmdir $M/d1 2>/dev/null"
rmdir $M/d1/d2/d3 $M/d1/d2
hv_expect rmdir.gone no "$([ -e $M/d1/d2 ] && echo yes || echo no)"
mkdir $M/many
hv_check many.create hvtool mkfiles $M/many 1500
hv_drop_caches
hv_expect many.count 1500 "$(ls $M/many | wc -l)"
hv_expect many.ls_l 1501 "$(ls -l $M/many | wc -l)"
hv_expect many.find 1500 "$(find $M/many -type f | wc -l)"
mkdir $M/gone
hvtool mkfiles $M/gone 1000 >/dev/null
hv_check many.unlink hvtool unlinkfiles $M/gone 1000
hv_check many.rmdir rmdir $M/gone

# FIFO: a special file on the share; opening it is handled by the guest kernel.
mkfifo $M/fifo
hv_expect fifo.type fifo "$(stat -c %F $M/fifo)"
(echo ping > $M/fifo) &
hv_expect fifo.data ping "$(cat $M/fifo)"
wait

# Sparse file: 4 KiB of data at 10 MiB; holes read as zeros.
dd if=/dev/urandom of=$M/sparse bs=4096 count=1 seek=2560 2>/dev/null
hv_drop_caches
hv_expect sparse.size $((2560 * 4096 + 4096)) "$(stat -c %s $M/sparse)"
blocks=$(stat -c %b $M/sparse)
hv_check sparse.blocks test "$blocks" -lt 1024
hv_expect sparse.hole_zeros 0 "$(dd if=$M/sparse bs=1M count=10 2>/dev/null | tr -d '\000' | wc -c)"
hv_expect sparse.seek_data 10485760 "$(hvtool seek $M/sparse data 0)"
hv_expect sparse.seek_hole $((2560 * 4096 + 4096)) "$(hvtool seek $M/sparse hole 10485760)"
truncate -s 64M $M/sparse64
hv_expect sparse.truncate_size 67108864 "$(stat -c %s $M/sparse64)"

# fallocate reserves blocks and extends the size; copy_file_range copies the bytes.
fallocate -l 4194304 $M/falloc
hv_expect fallocate.size 4194304 "$(stat -c %s $M/falloc)"
hv_check fallocate.blocks test "$(stat -c %b $M/falloc)" -ge 8192
hv_expect copy_file_range.bytes 10489856 "$(hvtool copyrange $M/sparse $M/sparse.copy)"
hv_expect copy_file_range.same "$(sha256sum < $M/sparse)" "$(sha256sum < $M/sparse.copy)"

# fsync on a file and on the file system.
echo durable > $M/durable.txt
hv_expect fsync.file 0 "$(hvtool fsync $M/durable.txt)"
hv_check fsync.sync sync

# unlink
echo bye > $M/unlinked
rm $M/unlinked
hv_expect unlink.gone no "$([ -e $M/unlinked ] && echo yes || echo no)"

# statfs
hv_check statfs stat -f $M

# Unmount and mount again: everything written must come back from the backend.
echo marker > $M/marker
hv_check umount umount $M
hv_expect umount.empty 0 "$(ls $M | wc -l)"
hv_check remount hv_mount "$HV_TAG0" $M
hv_expect remount.marker marker "$(cat $M/marker)"
hv_val big3_sha256 "$(sha256sum $M/big.bin | cut -d' ' -f1)"
hv_expect remount.many 1500 "$(ls $M/many | wc -l)"
hv_expect remount.symlink b.txt "$(readlink $M/sym)"
hv_check final.umount umount $M
