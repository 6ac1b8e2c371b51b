#!/usr/bin/env python3
"""Where one denoising step's GPU time goes, kernel by kernel, from `ncu --csv` of bench_dit_step with graphs off
(cuda_checks.sh ncu_step). The last step's launches are found as the trailing run of launches that repeats the one
before it (the steps run the same ops in the same order); each kernel family's launches, time and DRAM bytes are
summed over it. ncu runs the kernels one at a time, so the times are the kernels' own (no launch gaps, no overlap),
at whatever clock the GPU ran them (--clock-control none), and the sum is not the step's wall time."""
import collections
import csv
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_kernels import family, last_step  # noqa: E402

rows = list(csv.reader(line for line in open(sys.argv[1]) if line.startswith('"')))
if not rows:
    sys.exit("no ncu rows in " + sys.argv[1])
head = rows[0]
id_i, name_i, metric_i, unit_i, value_i = (head.index(k) for k in ("ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"))
UNITS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3, "s": 1e6, "second": 1e6,
         "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9,
         "hz": 1.0, "Khz": 1e3, "Mhz": 1e6, "Ghz": 1e9, "cycle/second": 1.0, "cycle/nsecond": 1e9, "cycle/usecond": 1e6}
launch = collections.OrderedDict()
for r in rows[1:]:
    k = launch.setdefault(r[id_i], {"name": r[name_i]})
    try:
        k[r[metric_i]] = float(r[value_i].replace(",", "")) * UNITS.get(r[unit_i], 1.0)
    except ValueError:
        pass
seq = list(launch.values())




names = [family(k["name"]) for k in seq]
p, tail = last_step(names)
if not p:
    sys.exit("no repeating step found in %d launches" % len(names))
step = seq[len(seq) - tail - p:len(seq) - tail]
print("%d launches in all; one step = %d launches (%d after it)\n" % (len(seq), p, tail))
agg = collections.OrderedDict()
for k in step:
    f = family(k["name"])
    a = agg.setdefault(f, [0, 0.0, 0.0, 0.0])
    a[0] += 1
    a[1] += k.get("gpu__time_duration.sum", 0.0)
    a[2] += k.get("dram__bytes_read.sum", 0.0) + k.get("dram__bytes_write.sum", 0.0)
    a[3] += k.get("sm__cycles_elapsed.avg.per_second", 0.0) * k.get("gpu__time_duration.sum", 0.0)
total = sum(a[1] for a in agg.values())
print("| kernel | launches | µs | share | µs per launch | DRAM GB | GB/s | SM MHz |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for f, (n, us, by, clk) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    print("| %s | %d | %.0f | %.1f%% | %.1f | %.3f | %.0f | %.0f |" % (f, n, us, 100 * us / total, us / n, by / 1e9, by / 1e3 / us if us else 0,
                                                                   clk / us / 1e6 if us else 0))
print("| **sum** | %d | **%.0f** | | | %.2f | | |" % (len(step), total, sum(a[2] for a in agg.values()) / 1e9))
# the step's kernels in order, for reading the sequence of one block
if len(sys.argv) > 2:
    for k in step[:int(sys.argv[2])]:
        print("%-60s %8.1f µs %8.1f MB" % (family(k["name"]), k.get("gpu__time_duration.sum", 0.0),
                                           (k.get("dram__bytes_read.sum", 0.0) + k.get("dram__bytes_write.sum", 0.0)) / 1e6))
