#!/usr/bin/env python3
"""CPU time of each process of a vdev's start with one share, from perf's task-clock samples (one per 100 us of CPU).

usage (root, under the benchmark lock):
  flock /tmp/hv-bench.lock tests/Benchmarks/startup-cpu.py [--runs N] DIST [DIST ...]

Each DIST is a directory holding vdev, fuse_launcher and passthrough (dist/ after .ci/build, or a copy of an older
build). The runs alternate between the directories. Each run starts `DIST/vdev --socket-path S --shared-dir D` under
`perf record -k CLOCK_MONOTONIC -e task-clock -c 100000` (sample times on this script's clock), waits until the
vhost-user socket exists, connects and sends a VMM's first message (GET_FEATURES, answered once the share serves; the
vdev listens before its share has started), then disconnects, which ends the vdev and its daemon. Printed per
directory, medians over the runs, in milliseconds of CPU (user + system, every thread): the vdev until its socket
existed and until fuse_launcher exited, fuse_launcher, the daemon until fuse_launcher exited (its start until ready,
the launcher exits right after the ready line), the daemon and the vdev until the vdev answered (the daemon's Kestrel
start runs beside that and counts as far as it got); then the wall-clock time from exec until the socket existed and
until the answer.
CPU time, unlike the time from exec to ready, does not grow with the load of a shared machine.
"""
import collections, os, signal, socket, statistics, struct, subprocess, sys, tempfile, time

def run_once(dist, work, out):
    sock = os.path.join(work, "vdev.sock")
    share = os.path.join(work, "share")
    os.makedirs(share, exist_ok=True)
    for p in (sock, sock + ".ctl"):
        if os.path.exists(p): os.unlink(p)
    perf = subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-e", "task-clock", "-c", "100000", "-o", out, "--",
                             os.path.join(dist, "vdev"), "--socket-path", sock, "--shared-dir", share, "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start = time.monotonic()
    deadline = start + 20
    while not os.path.exists(sock) and time.monotonic() < deadline: time.sleep(0.001)
    listening = time.monotonic()
    # GET_FEATURES (request 1, flags: version 1, no payload); the answer is a header and a u64.
    # The file appears at bind(), a moment before listen(): refused until then.
    while True:
        vmm = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        vmm.settimeout(20)
        try:
            vmm.connect(sock)
            break
        except ConnectionRefusedError:
            vmm.close()
            if time.monotonic() > deadline: raise
            time.sleep(0.001)
    vmm.sendall(struct.pack("<III", 1, 1, 0))
    got = b""
    while len(got) < 20:
        part = vmm.recv(20 - len(got))
        if not part: raise RuntimeError("the vdev closed the connection before it answered GET_FEATURES")
        got += part
    answered = time.monotonic()
    vmm.close()
    time.sleep(0.1)
    # perf's child is the vdev; SIGTERM stops it and its daemon, then perf writes its file and exits.
    children = subprocess.run(["pgrep", "-P", str(perf.pid), "-x", "vdev"], capture_output=True, text=True).stdout.split()
    for c in children: os.kill(int(c), signal.SIGTERM)
    perf.wait(30)
    return (listening - start) * 1000, (answered - start) * 1000, listening, answered

def cpu(out, listening, answered):
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
    return {"vdev until its socket existed": ms(pids["vdev"], listening),
            "vdev until fuse_launcher exited": ms(pids["vdev"], launcher_end),
            "fuse_launcher": ms(pids["fuse_launcher"]),
            "daemon until fuse_launcher exited": ms(pids["passthrough"], launcher_end),
            "daemon until the vdev answered": ms(pids["passthrough"], answered),
            "vdev until it answered": ms(pids["vdev"], answered)}

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
                listening, answer, listened_at, answered = run_once(os.path.abspath(d), work, out)
                for k, v in cpu(out, listened_at, answered).items(): results[d][k].append(v)
                results[d]["wall: exec until the socket existed"].append(listening)
                results[d]["wall: exec until the vdev answered"].append(answer)
    for d in args:
        print(f"{d}: CPU ms, median of {runs} (each run)")
        for k, v in results[d].items():
            print(f"  {k:36} {statistics.median(v):7.1f}   " + " ".join(f"{x:.1f}" for x in v))

main()
