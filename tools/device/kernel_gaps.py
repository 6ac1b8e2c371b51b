#!/usr/bin/env python3
"""How a denoising step's wall time splits into kernels and the gaps between them, from kernel_trace.c's CSV of a
bench_dit_step run (graphs on, as the benchmark runs): the last step is the trailing run of launches whose kernel
names repeat the run before it (as in ncu_step.py). Prints the step's span, the time some kernel ran (the union of
the kernels' intervals), the idle time between kernels, and where the idle time sits: the kernel pairs
(before → after) that wait the longest in sum."""
import collections
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_kernels import family, last_step  # noqa: E402

rows = []
with open(sys.argv[1]) as f:
    for r in csv.DictReader(f):
        rows.append((int(r["start_ns"]), int(r["end_ns"]), r["name"]))
rows.sort()
if not rows:
    sys.exit("no kernels in " + sys.argv[1])


def family_w(name):
    return family(name, 48)


names = [family_w(r[2]) for r in rows]
p, tail = last_step(names)
if not p:
    sys.exit("no repeating step found in %d kernels" % len(names))
step = rows[len(rows) - tail - p:len(rows) - tail]
span = step[-1][1] - step[0][0]
busy, cur_s, cur_e = 0, step[0][0], step[0][1]
gaps = collections.defaultdict(lambda: [0, 0])
idle_hist = [0, 0, 0, 0, 0]  # < 1 µs, 1-2, 2-4, 4-8, >= 8
for (s0, e0, n0), (s1, e1, n1) in zip(step, step[1:]):
    g = s1 - max(e0, cur_e)
    if g > 0:
        k = gaps[(family_w(n0), family_w(n1))]
        k[0] += 1
        k[1] += g
        idle_hist[0 if g < 1000 else 1 if g < 2000 else 2 if g < 4000 else 3 if g < 8000 else 4] += 1
    if s1 > cur_e:
        busy += cur_e - cur_s
        cur_s, cur_e = s1, e1
    else:
        cur_e = max(cur_e, e1)
busy += cur_e - cur_s
ksum = sum(e - s for s, e, _ in step)
print("%d kernels traced; one step = %d kernels (%d after it)" % (len(rows), p, tail))
print("step span %.3f ms; some kernel running %.3f ms; idle between kernels %.3f ms (%.1f%%); sum of kernel times %.3f ms"
      % (span / 1e6, busy / 1e6, (span - busy) / 1e6, 100.0 * (span - busy) / span, ksum / 1e6))
print("idle gaps: %d under 1 µs, %d of 1-2 µs, %d of 2-4 µs, %d of 4-8 µs, %d of 8 µs or more" % tuple(idle_hist))
print("\n| before → after | gaps | idle µs | µs per gap |\n|---|---:|---:|---:|")
for (a, b), (n, t) in sorted(gaps.items(), key=lambda kv: -kv[1][1])[:25]:
    print("| %s → %s | %d | %.0f | %.2f |" % (a, b, n, t / 1e3, t / 1e3 / n))
fam = collections.defaultdict(lambda: [0, 0])
for s, e, n in step:
    f = fam[family_w(n)]
    f[0] += 1
    f[1] += e - s
print("\n| kernel | launches | µs in the step | µs per launch |\n|---|---:|---:|---:|")
for f, (n, t) in sorted(fam.items(), key=lambda kv: -kv[1][1]):
    print("| %s | %d | %.0f | %.1f |" % (f, n, t / 1e3, t / 1e3 / n))
