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
