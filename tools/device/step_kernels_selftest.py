#!/usr/bin/env python3
"""Self-test of the device checks' step analysis (ncu_step.py, kernel_gaps.py) on synthetic traces whose answer is
known: a load phase, then steps made of an embedder, repeated blocks and a final layer, with durations and gaps drawn
fresh each run (the seed is printed). Each tool must find one step's launches exactly and sum its times and gaps to
what was drawn. Runs without a GPU (a CTest)."""
import csv
import os
import random
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
seed = int(os.environ.get("QDIT_TEST_SEED", random.randrange(1 << 30)))
print("seed", seed)
rng = random.Random(seed)
block = ["void norm_mod_bf16_kernel<2>(bool, int)", "nvjet_sm90_qqtst_128x128_128x6_2x1_v_bz_ovscale_bias_TNT",
         "void rms_rope_bf16_kernel<16, 4>(int)", "cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "void fp8_quant_parts_smem_kernel<false>(int)"]
single = block[:2] + block[3:]
step = ["void embed_kernel(int)"] + block * rng.randint(10, 19) + single * rng.randint(20, 38) + ["void final_kernel(int)"]
steps = rng.randint(2, 4)
load = ["void load_kernel<%d>(int)" % (i % 7) for i in range(rng.randint(30, 300))]
launches = load + step * (steps + 1)  # a warm-up step, then `steps`
dur = [rng.randint(1000, 400000) for _ in launches]
gap = [rng.randint(0, 5000) for _ in launches]
failures = 0


def check(what, got, want):
    global failures
    ok = got == want
    failures += not ok
    print("%s %s: %s (want %s)" % ("ok  " if ok else "FAIL", what, got, want))


with tempfile.TemporaryDirectory() as tmp:
    print("one step:", len(step), "launches;", steps + 1, "steps after", len(load), "load launches")
    # kernel_trace.c's CSV: start, end, stream, graph node, name
    trace = os.path.join(tmp, "trace.csv")
    with open(trace, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start_ns", "end_ns", "stream", "graph_node", "name"])
        t = 0
        for n, d, g in zip(launches, dur, gap):
            t += g
            w.writerow([t, t + d, 7, 0, n])
            t += d
    out = subprocess.run([sys.executable, os.path.join(here, "kernel_gaps.py"), trace], capture_output=True, text=True, check=True).stdout
    print("".join(out.splitlines(True)[:3]), end="")
    first = len(launches) - len(step)
    want_busy = sum(dur[first:]) / 1e6
    want_idle = sum(gap[first + 1:]) / 1e6
    check("kernel_gaps: the step's kernels", "one step = %d kernels (0 after it)" % len(step) in out, True)
    check("kernel_gaps: kernel time and idle time", "some kernel running %.3f ms; idle between kernels %.3f ms" % (want_busy, want_idle) in out, True)
    # ncu's CSV: one row per (launch, metric)
    ncu = os.path.join(tmp, "ncu.csv")
    with open(ncu, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size", "Grid Size", "Device", "CC",
                    "Section Name", "Metric Name", "Metric Unit", "Metric Value"])
        for i, (n, d) in enumerate(zip(launches, dur)):
            for m, u, v in (("gpu__time_duration.sum", "nsecond", "{:,}".format(d)), ("dram__bytes_read.sum", "Mbyte", "1.5"),
                            ("dram__bytes_write.sum", "Kbyte", "500"), ("sm__cycles_elapsed.avg.per_second", "Ghz", "1.98")):
                w.writerow([i, 1, "bench", "host", n, 1, 7, "(128, 1, 1)", "(4, 1, 1)", 0, "9.0", "Command line profiler metrics", m, u, v])
    out = subprocess.run([sys.executable, os.path.join(here, "ncu_step.py"), ncu], capture_output=True, text=True, check=True).stdout
    print(out.splitlines()[0])
    print([l for l in out.splitlines() if "**sum**" in l][0])
    check("ncu_step: the step's launches", "one step = %d launches (0 after it)" % len(step) in out, True)
    check("ncu_step: the step's time", "| **sum** | %d | **%.0f** |" % (len(step), sum(dur[first:]) / 1e3) in out, True)
    check("ncu_step: the step's DRAM bytes", "| %.2f |" % (len(step) * 2.0e6 / 1e9) in out, True)
sys.exit(1 if failures else 0)
