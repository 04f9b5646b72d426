#!/usr/bin/env python3
"""Splits each guest request's round trip into its parts, from a scheduler trace of `hv-bench guest`.

    perf record -a -e sched:sched_switch,sched:sched_wakeup,sched:sched_waking -o guest.data -- sleep 150 &
    tests/Benchmarks/bin/Release/net10.0/hv-bench guest --runs 1
    perf script -i guest.data -F comm,tid,cpu,time,event,trace > guest.sched
    tests/Benchmarks/guest-cycles.py guest.sched

A cycle starts when a QEMU thread (the vCPU that kicked) wakes the backend's queue thread (virtiofsd's, or the
vdev's `vq1`). It then goes through the backend waking a QEMU thread (the used-ring interrupt, through QEMU's
main loop under TCG), the kicking vCPU being woken again, and ends with that vCPU's next kick:

    backend      kick -> the backend wakes QEMU (for the vdev: its worker, the daemon's dispatcher and back)
    interrupt    that wake-up -> the kicking vCPU is woken
    guest        the vCPU woken -> its next kick (the guest's own work between two requests)

Prints the quartiles of each part per backend, and how often each hand-off stayed on one host CPU.
"""
import collections
import re
import statistics
import sys

LINE = re.compile(r'^\s*(?P<comm>\S.*?)\s+(?P<tid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?P<t>[\d.]+):\s+sched:sched_waking:\s+'
                  r'comm=(?P<wcomm>\S+) pid=(?P<wpid>\d+) prio=\d+ target_cpu=(?P<wcpu>\d+)')
QEMU = 'qemu-system-x86'
BACKENDS = {'virtiofsd': 'virtiofsd', 'vq1': 'vdev'}
LONGEST = 2e-3  # a gap longer than this is the scenario between rows, not a request


def main(path):
    parts = collections.defaultdict(list)
    handoffs = collections.Counter()
    cycle = None
    with open(path, errors='replace') as trace:
        for line in trace:
            m = LINE.match(line)
            if not m:
                continue
            waker, wakee, t = m['comm'], m['wcomm'], float(m['t'])
            same = 'same CPU' if m['cpu'] == m['wcpu'] else 'other CPU'
            if waker in ('vq1', 'ring-q1') and wakee in ('vq1', 'ring-q1'):
                handoffs[('vdev', f'{waker} -> {wakee}', same)] += 1
            if waker == QEMU and wakee in BACKENDS:
                name = BACKENDS[wakee]
                handoffs[(name, 'kick', same)] += 1
                if cycle and cycle['interrupt'] is not None and cycle['name'] == name:
                    gaps = (cycle['call'] - cycle['kick'], cycle['interrupt'] - cycle['call'], t - cycle['interrupt'])
                    if t - cycle['kick'] < LONGEST:
                        for label, gap in zip(('backend', 'interrupt', 'guest', 'whole'), gaps + (t - cycle['kick'],)):
                            parts[(name, label)].append(gap * 1e6)
                cycle = {'name': name, 'kick': t, 'vcpu': m['tid'], 'call': None, 'interrupt': None}
            elif cycle and cycle['call'] is None and waker in BACKENDS and wakee == QEMU:
                cycle['call'] = t
                handoffs[(cycle['name'], 'interrupt', same)] += 1
            elif cycle and cycle['call'] is not None and cycle['interrupt'] is None and waker == QEMU and m['wpid'] == cycle['vcpu']:
                cycle['interrupt'] = t
    for (name, label), values in sorted(parts.items()):
        q = statistics.quantiles(values, n=4)
        print(f'{name:10} {label:10} n={len(values):7}  p25 {q[0]:7.1f}  median {q[1]:7.1f}  p75 {q[2]:7.1f} us')
    for key, count in sorted(handoffs.items()):
        print(f'{key[0]:10} {key[1]:20} {key[2]:10} {count:8}')


if __name__ == '__main__':
    main(sys.argv[1])
