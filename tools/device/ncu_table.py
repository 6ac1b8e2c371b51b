#!/usr/bin/env python3
"""Mean duration of each kernel per FLUX shape from `ncu --csv --metrics gpu__time_duration.sum` of
`BENCH_ONLY=<scheme> bench_cuda_ops` (cuda_checks.sh ncu): the bench runs the scheme's linear 4 times per shape, in
the order of its shape list, so the launches split evenly into the shapes."""
import collections
import csv
import sys

SHAPES = ["3072x3072", "3072x9216", "3072x12288", "12288x3072", "15360x3072", "3072x21504"]
rows = list(csv.reader(line for line in open(sys.argv[1]) if line.startswith('"')))
if not rows:
    sys.exit("no ncu rows in " + sys.argv[1])
head = rows[0]
name_i, value_i, unit_i = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
launches = []
for r in rows[1:]:
    scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(r[unit_i], 1e-3)
    launches.append((r[name_i].split("(")[0].replace("void ", "")[:48], float(r[value_i].replace(",", "")) * scale))
per = len(launches) // len(SHAPES)
print("| shape (K x N), M = 4608 | kernel | µs (mean of 4) |\n|---|---|---:|")
for si, shape in enumerate(SHAPES):
    by = collections.OrderedDict()
    for name, us in launches[si * per:(si + 1) * per]:
        by.setdefault(name, []).append(us)
    total = 0.0
    for name, v in by.items():
        mean = sum(v) / len(v)
        total += mean
        print("| %s | %s | %.1f |" % (shape, name, mean))
    print("| %s | **sum** | **%.1f** |" % (shape, total))
