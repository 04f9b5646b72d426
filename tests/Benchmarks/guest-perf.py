#!/usr/bin/env python3
"""guest-perf.py VDEV OUTDIR [ROW[:sys]]: runs `hv-bench guest --runs 1 -v --vdev VDEV` under both locks and counts, per
row and per backend, perf's task-clock, context switches and system calls of the backend's processes (a new
`perf stat --per-thread -p PIDS` for each backend at every row boundary, stopped at the next "@@HV val" line).
With ROW (e.g. create_per_s), also records the vdev's processes during that row: a call graph, or with ":sys" every
system call entry. OUTDIR/console.txt keeps the console with the row boundaries; guest-perf-summary.py OUTDIR prints
the figures per unit. HVB names the hv-bench to run (default: this tree's Release build)."""
import os, re, signal, subprocess, sys, time, glob

vdev = sys.argv[1]
out = sys.argv[2]
record = sys.argv[3] if len(sys.argv) > 3 else None  # e.g. create_per_s
recargs = ["-g", "-F", "1999"]
if record and record.endswith(":sys"):
    record = record[:-4]; recargs = ["-e", "raw_syscalls:sys_enter"]
B = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin/Release/net10.0/hv-bench")
if os.environ.get("HVB"): B = os.environ["HVB"]
os.makedirs(out, exist_ok=True)

def find(tag):
    pids = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            cmd = open(d + "/cmdline", "rb").read()
        except OSError:
            continue
        if re.search(rb"hvbench-[^/\x00]*/" + tag.encode() + rb"(\x00|$|/|,)", cmd):
            pids.append(int(d[6:]))
    return sorted(pids)

EVENTS = "task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter"
perfs = {}
pids = {}
seq = [0]
rec = [None]
rows = []

def start(tag):
    seq[0] += 1
    f = f"{out}/stat-{seq[0]:03d}-{tag}.txt"
    p = subprocess.Popen(["perf", "stat", "-x", ",", "--per-thread", "-e", EVENTS, "-p", ",".join(map(str, pids[tag])), "-o", f],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    perfs[tag] = (p, f, time.time())

def stop(tag):
    p, f, t0 = perfs.pop(tag)
    p.send_signal(signal.SIGINT)
    p.wait()
    return f, time.time() - t0

log = open(f"{out}/console.txt", "w")
cmd = ["flock", "/tmp/hv-guest.lock", "flock", "/tmp/hv-bench.lock", B, "guest", "--runs", "1", "-v", "--vdev", vdev]
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1)
for line in proc.stdout:
    log.write(f"{time.time():.3f} {line}")
    log.flush()
    if line.startswith("@@HV ok setup"):
        for t in ("ref", "vdev"):
            pids[t] = find(t)
            log.write(f"# pids {t} {pids[t]}\n")
            start(t)
    m = re.match(r"@@HV val bench\.(\w+)\.(\w+) (\S+)", line)
    if m and m.group(1) in ("ref", "vdev") and m.group(1) in pids:
        tag, metric, val = m.groups()
        if metric in ("irq_cpu", "runs_on"):
            continue
        files = {}
        for t in list(perfs):
            files[t] = stop(t)
        if rec[0] is not None:
            rp, rm = rec[0]
            rp.send_signal(signal.SIGINT); rp.wait(); rec[0] = None
        rows.append((tag, metric, val, files))
        log.write(f"# row {tag} {metric} {val} files {files}\n")
        for t in ("ref", "vdev"):
            start(t)
        # The vdev's next row, to record when asked.
        order = ["create_per_s", "stat_per_s", "unlink_per_s", "ls_l_ms", "seq_write_mib_s", "seq_read_mib_s", "rand_read_4k_iops"]
        nxt = order[order.index(metric) + 1] if metric in order and order.index(metric) + 1 < len(order) else None
        if record and tag == "vdev" and nxt == record:
            rp = subprocess.Popen(["perf", "record"] + recargs + ["-o", f"{out}/perf-{record}.data", "-p", ",".join(map(str, pids["vdev"]))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rec[0] = (rp, record)
    # With one run virtiofsd goes first, so the vdev's create row follows virtiofsd's last row.
    if record == "create_per_s" and m and m.group(1) == "ref" and m.group(2) == "rand_read_4k_iops" and rec[0] is None:
        rp = subprocess.Popen(["perf", "record"] + recargs + ["-o", f"{out}/perf-{record}.data", "-p", ",".join(map(str, pids["vdev"]))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rec[0] = (rp, record)
for t in list(perfs):
    stop(t)
proc.wait()
log.write(f"# exit {proc.returncode}\n")
