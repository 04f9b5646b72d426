#!/usr/bin/env python3
"""guest-perf-summary.py OUTDIR [v]: guest-perf.py's counts per file of the create, stat and unlink rows (2000 files,
hv-bench guest's default), per backend; with v, per thread as well."""
import re, sys, collections
out = sys.argv[1]
units = {"create_per_s": 2000, "stat_per_s": 2000, "unlink_per_s": 2000}
verbose = len(sys.argv) > 2
def parse(f):
    tot = collections.Counter(); per = collections.defaultdict(collections.Counter)
    for line in open(f):
        if line.startswith("#") or not line.strip(): continue
        p = line.strip().split(",")
        if len(p) < 4: continue
        try: v = float(p[1])
        except ValueError: continue
        ev = p[3]
        thread = re.sub(r"-\d+$", "", p[0])
        tot[ev] += v; per[thread][ev] += v
    return tot, per
for line in open(f"{out}/console.txt"):
    m = re.match(r"# row (\w+) (\w+) (\S+) files (.*)", line)
    if not m: continue
    tag, metric, val, files = m.groups()
    if metric not in units: continue
    d = eval(files)
    f, secs = d[tag]
    import os
    if not os.path.exists(f): continue
    tot, per = parse(f)
    n = units[metric]
    print(f"{tag:5} {metric:14} {val:>8}  task-clock {tot['task-clock']/n*1000:7.1f} us/unit  cs {tot['context-switches']/n:5.2f}/unit  migr {tot['cpu-migrations']/n:5.2f}  syscalls {tot['raw_syscalls:sys_enter']/n:5.2f}/unit  ({secs:.1f} s)")
    if verbose:
        for th, c in sorted(per.items(), key=lambda kv: -kv[1]['task-clock'])[:8]:
            if c['task-clock'] < 1: continue
            print(f"        {th:24} tc {c['task-clock']/n*1000:7.1f} us  cs {c['context-switches']/n:5.2f}  sys {c['raw_syscalls:sys_enter']/n:5.2f}")
