#!/bin/sh
# Builds the guest initramfs used by the virtio-fs guest tests and benchmark.
#
#   build-initramfs.sh [--with-fio] OUT.cpio.gz [SCENARIO.sh]
#
# Contents: busybox-static (with its applets linked), hvtool (hvtool.c, gcc -static),
# stress-ng with the shared libraries ldd names (when /usr/bin/stress-ng is installed),
# the virtio/FUSE modules of the guest kernel, /init and /lib/hv.sh. With --with-fio also
# /usr/bin/fio and its libraries; fio then must be installed, or the build fails. It is
# an option and not part of every image because Debian's fio links every I/O engine's
# library (ceph, gluster, rdma, ...), which makes the image about four times larger and
# every boot that unpacks it slower under TCG. If SCENARIO.sh is
# given it is baked in as /scenario.sh; otherwise the test harness appends it at boot time
# as a second (concatenated) cpio member, which the kernel unpacks over the first.
#
# Environment: HV_KVER selects the kernel version (default: the newest
# /boot/vmlinuz-*-cloud-amd64 whose modules are installed). The script prints that version
# on stdout so callers know which /boot/vmlinuz-<ver> to boot.
set -eu

with_fio=
if [ "${1:-}" = --with-fio ]; then with_fio=1; shift; fi
out=${1:?usage: build-initramfs.sh [--with-fio] OUT.cpio.gz [SCENARIO.sh]}
scenario=${2:-}
here=$(cd "$(dirname "$0")" && pwd)

if [ -z "${HV_KVER:-}" ]; then
    for k in $(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V); do
        v=${k#/boot/vmlinuz-}
        [ -d "/lib/modules/$v" ] && HV_KVER=$v
    done
fi
[ -n "${HV_KVER:-}" ] || { echo "no /boot/vmlinuz-*-cloud-amd64 with modules in /lib/modules: install linux-image-cloud-amd64 or set HV_KVER" >&2; exit 1; }
moddir=/lib/modules/$HV_KVER
[ -x /bin/busybox ] || { echo "/bin/busybox is missing: install busybox-static" >&2; exit 1; }
file -b /bin/busybox 2>/dev/null | grep -q dynamic && { echo "/bin/busybox is dynamically linked: install busybox-static" >&2; exit 1; }
if [ -n "$with_fio" ] && [ ! -x /usr/bin/fio ]; then
    echo "--with-fio: /usr/bin/fio is missing: install the fio package (.ci/setup does)" >&2; exit 1
fi

stage=$(mktemp -d)
chmod 755 "$stage" # the guest's / (mktemp makes it 0700, and then no other uid could run a program)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/sbin" "$stage/lib/modules" "$stage/proc" "$stage/sys" "$stage/dev" \
         "$stage/mnt" "$stage/tmp" "$stage/root"
cp /bin/busybox "$stage/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -s busybox "$stage/bin/$a"
done
gcc -static -O2 -pthread -Wall -o "$stage/bin/hvtool" "$here/hvtool.c"

# copy_dynamic BIN: a dynamically linked program goes in as /bin/NAME with every library ldd resolves, at the
# same paths, and the dynamic loader. A library ldd cannot find fails the build (the program could not start).
copy_dynamic() {
    libs=$(ldd "$1") || { echo "ldd $1 failed" >&2; exit 1; }
    if echo "$libs" | grep -q "not found"; then
        echo "$1 needs libraries that are not installed: $(echo "$libs" | grep "not found" | tr -s ' \t\n' ' ')" >&2; exit 1
    fi
    cp "$1" "$stage/bin/$(basename "$1")"
    for lib in $(echo "$libs" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
    done
}

# Without stress-ng the lock scenario reports it as missing instead of the image failing.
[ -x /usr/bin/stress-ng ] && copy_dynamic /usr/bin/stress-ng
# fio (the planned-restart scenario's load) only when asked for; its scenario fails when it is absent.
[ -n "$with_fio" ] && copy_dynamic /usr/bin/fio

# Loaded by /init in this order (dependencies first); .ko.xz/.ko.zst are decompressed here
# because busybox insmod loads plain ELF objects only.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci fuse virtiofs; do
    f=$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n 1)
    if [ -z "$f" ]; then
        # Built into the kernel: nothing to load.
        grep -q "/$m.ko" "$moddir/modules.builtin" 2>/dev/null && continue
        echo "module $m not found under $moddir: install the matching linux-image package" >&2; exit 1
    fi
    case $f in
        *.xz) xz -dc "$f" > "$stage/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$f" > "$stage/lib/modules/$m.ko" ;;
        *.gz) gzip -dc "$f" > "$stage/lib/modules/$m.ko" ;;
        *) cp "$f" "$stage/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$stage/lib/modules/order"
done

mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3
cp "$here/init" "$stage/init"
cp "$here/hv.sh" "$stage/lib/hv.sh"
chmod 755 "$stage/init"
[ -n "$scenario" ] && cp "$scenario" "$stage/scenario.sh"

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$out.tmp"
mv "$out.tmp" "$out"
echo "$HV_KVER"
