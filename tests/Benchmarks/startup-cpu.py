#!/usr/bin/env python3
"""CPU time of each process of a vdev's start with one share, from perf's task-clock samples (one per 100 us of CPU).

usage (root, under the benchmark lock):
  flock /tmp/hv-bench.lock tests/Benchmarks/startup-cpu.py [--runs N] DIST [DIST ...]

Each DIST is a directory holding vdev, fuse_launcher and passthrough (dist/ after .ci/build, or a copy of an older
build). The runs alternate between the directories. Each run starts `DIST/vdev --socket-path S --shared-dir D` under
`perf record -e task-clock -c 100000`, waits until the vhost-user socket exists, then stops the vdev with SIGTERM.
Printed per directory, medians over the runs, in milliseconds of CPU (user + system, every thread):
the vdev until fuse_launcher exited, fuse_launcher, the daemon until fuse_launcher exited (its start until ready, the
launcher exits right after the ready line), and the daemon and the vdev until the socket existed.
CPU time, unlike the time from exec to ready, does not grow with the load of a shared machine.
"""
import collections, os, signal, statistics, subprocess, sys, tempfile, time

def run_once(dist, work, out):
    sock = os.path.join(work, "vdev.sock")
    share = os.path.join(work, "share")
    os.makedirs(share, exist_ok=True)
    for p in (sock, sock + ".ctl"):
        if os.path.exists(p): os.unlink(p)
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "task-clock", "-c", "100000", "-o", out, "--",
                             os.path.join(dist, "vdev"), "--socket-path", sock, "--shared-dir", share, "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock) and time.monotonic() < deadline: time.sleep(0.005)
    time.sleep(0.1)
    # perf's child is the vdev; SIGTERM stops it and its daemon, then perf writes its file and exits.
    children = subprocess.run(["pgrep", "-P", str(perf.pid), "-x", "vdev"], capture_output=True, text=True).stdout.split()
    for c in children: os.kill(int(c), signal.SIGTERM)
    perf.wait(30)

def cpu(out):
    lines = subprocess.run(["perf", "script", "-i", out, "-F", "comm,pid,time"], capture_output=True, text=True).stdout.splitlines()
    samples = []
    for line in lines:
        parts = line.split()
        if len(parts) < 3: continue
        samples.append((" ".join(parts[:-2]), int(parts[-2]), float(parts[-1].rstrip(":"))))
    # A process is named by the command it runs most (a forked child shows its parent's name until it execs).
    counts = collections.Counter((c, p) for c, p, _ in samples if c in ("vdev", "fuse_launcher", "passthrough"))
    pids = {}
    for (c, p), _ in counts.most_common():
        if c not in pids and p not in pids.values(): pids[c] = p
    launcher_end = max(t for _, p, t in samples if p == pids["fuse_launcher"])
    ms = lambda pid, until=float("inf"): sum(1 for _, p, t in samples if p == pid and t <= until) / 10
    return {"vdev until fuse_launcher exited": ms(pids["vdev"], launcher_end),
            "fuse_launcher": ms(pids["fuse_launcher"]),
            "daemon until fuse_launcher exited": ms(pids["passthrough"], launcher_end),
            "daemon until the socket existed": ms(pids["passthrough"]),
            "vdev until the socket existed": ms(pids["vdev"])}

def main():
    args = sys.argv[1:]
    runs = 7
    if args[:1] == ["--runs"]: runs, args = int(args[1]), args[2:]
    if not args: sys.exit(__doc__)
    results = {d: collections.defaultdict(list) for d in args}
    with tempfile.TemporaryDirectory(prefix="hv-startup-cpu-") as work:
        for _ in range(runs):
            for d in args:
                out = os.path.join(work, "perf.data")
                run_once(os.path.abspath(d), work, out)
                for k, v in cpu(out).items(): results[d][k].append(v)
    for d in args:
        print(f"{d}: CPU ms, median of {runs} (each run)")
        for k, v in results[d].items():
            print(f"  {k:36} {statistics.median(v):7.1f}   " + " ".join(f"{x:.1f}" for x in v))

main()
