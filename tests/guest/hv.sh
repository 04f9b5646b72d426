# Result helpers for guest scenarios, sourced by /init and by every scenario.
#
# Console protocol (one line each, fields separated by single spaces, NAME/KEY without spaces):
#   @@HV ok NAME               a check passed
#   @@HV fail NAME DETAIL...   a check failed; DETAIL is one line
#   @@HV val KEY VALUE...      a measured or observed value for the host to check
#   @@HV end RC                the scenario finished with exit code RC (always last)

hv_ok() { echo "@@HV ok $1"; }
hv_fail() { n=$1; shift; echo "@@HV fail $n $(printf '%s' "$*" | tr '\n' ' ')"; }
hv_val() { k=$1; shift; echo "@@HV val $k $*"; }

# hv_check NAME CMD [ARG...]: runs CMD; ok if it exits 0, otherwise fail with its output.
hv_check() {
    n=$1; shift
    if "$@" >/tmp/hv.out 2>&1; then hv_ok "$n"; return 0; fi
    hv_fail "$n" "exit $? from '$*': $(tail -n 3 /tmp/hv.out)"
    return 1
}

# hv_expect NAME EXPECTED ACTUAL: string comparison.
hv_expect() {
    if [ "$2" = "$3" ]; then hv_ok "$1"; return 0; fi
    hv_fail "$1" "expected '$2' but got '$3'"
    return 1
}

# hv_mount TAG DIR [OPTIONS]: mounts a virtio-fs tag.
hv_mount() {
    mkdir -p "$2"
    if [ -n "${3:-}" ]; then mount -t virtiofs -o "$3" "$1" "$2"; else mount -t virtiofs "$1" "$2"; fi
}

# hv_drop_caches: make the next reads go to the device, not the guest page cache.
hv_drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# hv_irq_cpu DIR: the vCPU that takes the request interrupts of the virtio-fs device DIR is on: the one whose
# count of virtio request interrupts grows most while DIR is listed with cold caches. Empty when none grows.
hv_irq_counts() {
    awk '/virtio[0-9]+-requests/ { sub(/:$/, "", $1); for (i = 2; i <= NCPU + 1; i++) printf "%s:%d=%s ", $1, i - 2, $i }' \
        NCPU="$(nproc)" /proc/interrupts
}
hv_irq_cpu() {
    before=$(hv_irq_counts)
    hv_drop_caches; ls -lR "$1" >/dev/null 2>&1
    after=$(hv_irq_counts)
    echo "$before @ $after" | awk '{ for (i = 1; i <= NF; i++) { if ($i == "@") { a = 1; continue }
        split($i, kv, "="); d[kv[1]] += a ? kv[2] : -kv[2] } }
        END { best = 0; for (k in d) if (d[k] > best) { best = d[k]; key = k } if (best) { split(key, p, ":"); print p[2] } }'
}

# hv_phase N MAILBOX: tells the host "phase N" and waits (up to 60 s) until it has written "goN" into the
# MAILBOX file on a share. The mailbox is read with O_DIRECT, which always reaches the daemon, so it is never
# stale; the host keeps its size constant, since such a read stops at the guest's cached size.
hv_phase() {
    hv_val phase "$1"
    hv_n=0
    while [ $hv_n -lt 600 ]; do
        [ "$(dd if="$2" bs=4096 count=1 iflag=direct 2>/dev/null | tr -d ' \n')" = "go$1" ] && return 0
        usleep 100000
        hv_n=$((hv_n + 1))
    done
    hv_fail "phase.$1" "the host did not write go$1 to $2 within 60 s"
    return 1
}
