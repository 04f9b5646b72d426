# Guest-side virtio-fs benchmark over every share in $HV_TAGS (one device per backend),
# run by `hv-bench guest`. Each run measures every share in turn (so slow drift hits all
# backends alike), in the reverse order on even runs (so going first or second favours
# none), and reports "@@HV val bench.TAG.METRIC VALUE"; the host takes medians.
# Parameters (exported by the host): HV_RUNS, HV_FILES, HV_LS_FILES, HV_SEQ_MIB, HV_RAND_COUNT, HV_QD,
# HV_GUEST_CPU (irq, other or any: see "Where the benchmark runs" below).
RUNS=${HV_RUNS:-3}; FILES=${HV_FILES:-2000}; LSF=${HV_LS_FILES:-10000}
MIB=${HV_SEQ_MIB:-128}; RAND=${HV_RAND_COUNT:-4000}; QD=${HV_QD:-16}; PLACE=${HV_GUEST_CPU:-irq}

rate() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%.1f", n / (ns / 1e9) }'; }
emit() { hv_val "bench.$1.$2" "$3"; }

for t in $HV_TAGS; do
    hv_check "mount.$t" hv_mount "$t" "/mnt/$t" || exit 1
    rm -rf "/mnt/$t/hvbench"
    mkdir -p "/mnt/$t/hvbench/files" "/mnt/$t/hvbench/ls"
    hvtool mkfiles "/mnt/$t/hvbench/ls" "$LSF" >/dev/null || { hv_fail "setup.$t" "cannot create $LSF files"; exit 1; }
done
hv_ok setup

# Where the benchmark runs. Each device's request interrupts go to one vCPU, chosen by the guest kernel
# (with two vCPUs and two devices, the first device's went to vCPU 0 and the second's to vCPU 1 in every
# boot). A process waiting on a request resumes at once when it runs on that vCPU, and only after an
# inter-processor interrupt when it runs on another: under TCG that alone moves a cold stat by a third.
# Left to the guest's scheduler, the two backends would each get a different mix of both cases. So every
# row of a backend runs on the vCPU that takes its device's interrupts (irq), on another vCPU (other), or
# wherever the scheduler puts it (any).
for t in $HV_TAGS; do
    cpu=$(hv_irq_cpu "/mnt/$t/hvbench/ls")
    [ -n "$cpu" ] || [ "$PLACE" = any ] || { hv_fail "irq.$t" "no virtio request interrupt counted in /proc/interrupts; use --guest-cpu any"; exit 1; }
    case $PLACE in
        irq) pin=$cpu ;;
        other) pin=$(( (cpu + 1) % $(nproc) )) ;;
        *) pin= ;;
    esac
    eval "PIN_$t=\$pin"
    hv_val "bench.$t.irq_cpu" "$cpu"
    hv_val "bench.$t.runs_on" "${pin:-any}"
done
# on TAG CMD...: runs CMD where TAG's rows run.
on() { eval "p=\$PIN_$1"; shift; if [ -n "$p" ]; then taskset -c "$p" "$@"; else "$@"; fi; }

run=1
REVERSED=; for t in $HV_TAGS; do REVERSED="$t $REVERSED"; done
while [ $run -le $RUNS ]; do
    if [ $((run % 2)) = 1 ]; then order=$HV_TAGS; else order=$REVERSED; fi
    for t in $order; do
        d=/mnt/$t/hvbench
        ns=$(on $t hvtool mkfiles $d/files "$FILES") || { hv_fail "create.$t" "mkfiles failed"; exit 1; }
        emit $t create_per_s "$(rate "$FILES" "$ns")"
        hv_drop_caches
        ns=$(on $t hvtool statfiles $d/files "$FILES") || { hv_fail "stat.$t" "statfiles failed"; exit 1; }
        emit $t stat_per_s "$(rate "$FILES" "$ns")"
        ns=$(on $t hvtool unlinkfiles $d/files "$FILES") || { hv_fail "unlink.$t" "unlinkfiles failed"; exit 1; }
        emit $t unlink_per_s "$(rate "$FILES" "$ns")"

        hv_drop_caches
        set -- $(on $t hvtool time ls -l $d/ls)
        [ "$2" = 0 ] || { hv_fail "ls.$t" "ls -l exited $2"; exit 1; }
        emit $t ls_l_ms "$(awk -v ns="$1" 'BEGIN { printf "%.1f", ns / 1e6 }')"

        set -- $(on $t hvtool seqwrite $d/seq.bin "$MIB") || { hv_fail "seqwrite.$t" "seqwrite failed"; exit 1; }
        emit $t seq_write_mib_s "$(rate "$MIB" "$1")"
        hv_drop_caches
        set -- $(on $t hvtool seqread $d/seq.bin) || { hv_fail "seqread.$t" "seqread failed"; exit 1; }
        [ "$2" = $((MIB * 1048576)) ] || { hv_fail "seqread.$t" "read $2 bytes instead of $((MIB * 1048576))"; exit 1; }
        emit $t seq_read_mib_s "$(rate "$MIB" "$1")"

        hv_drop_caches
        out=$(on $t hvtool randread $d/seq.bin "$QD" "$RAND" direct 2>&1) || { hv_fail "randread.$t" "$out"; exit 1; }
        set -- $out
        emit $t rand_read_4k_iops "$(rate "$2" "$1")"
        rm -f $d/seq.bin
    done
    run=$((run + 1))
done
hv_ok runs
for t in $HV_TAGS; do
    rm -rf "/mnt/$t/hvbench"
    hv_check "umount.$t" umount "/mnt/$t"
done
