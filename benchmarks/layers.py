"""The layers around the convolutions: fprop and bprop times at the CNN benchmark's shapes,
this working tree against a git revision, alternating fresh processes.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/layers.py \\
        [--before REV] [--rounds 3] [--repeats 15] [--threads 1]

Layers, batch 128, float32, training mode (the shapes where benchmarks/cnn.py meets them):
max pooling 2×2 (LeNet-5, small VGG), batch norm (ResNet-20), ReLU, the residual sum
(Add), the option-A shortcut (ZeroPadShortcut) and global average pooling (ResNet-20).
Each process times every layer's forward and backward ``--repeats`` times and reports
medians of process CPU time (less sensitive to other processes than wall time on a
shared machine; the wall-clock medians are printed too); ``--rounds`` processes per
version alternate, and the table gives the median over rounds and the ratio
(this tree / REV). A copy's bandwidth at the largest shape is printed as the scale:
a layer that reads its input once and writes its output once cannot beat it.

Measured (Intel Xeon @ 2.80GHz, 2 cores shared at load average 12, 1 thread, CPU ms,
this tree at c54891a vs a1d2c8c, before the 2×2 pooling and batch-norm changes):

    MaxPool2d 6×28×28      fwd 2.15 → 1.92   bwd 2.11 → 1.61
    MaxPool2d 32×32×32     fwd 19.3 → 11.1   bwd 15.8 → 11.1
    MaxPool2d 64×16×16     fwd 10.0 → 6.4    bwd 9.4 → 6.0
    BatchNorm2d 16×32×32   fwd 14.0 → 7.2    bwd 18.8 → 11.3
    BatchNorm2d 32×16×16   fwd 7.3 → 3.4     bwd 9.2 → 6.4
    BatchNorm2d 64×8×8     fwd 4.2 → 2.0     bwd 5.1 → 2.7
    ReLU 32×32×32          fwd 4.4 → 3.8     bwd 7.4 → 7.0   (unchanged code: the noise)

with a copy at 11 GB/s (a 16 MiB map read and written once: ~3 ms). ReLU's bprop
g·[y > 0] stayed as it is: a float mask, copysign, bit masks and masked copies all
measured slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from common import alternating

CHILD = r"""
import json, sys, time, statistics
import numpy as np
from threadpoolctl import threadpool_limits
config = json.loads(sys.argv[1])
threadpool_limits(config["threads"])
from ermlab import nn
from ermlab.nn.blocks import ZeroPadShortcut

def timed(fn, repeats):
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu) * 1e3, statistics.median(wall) * 1e3

rng = np.random.default_rng(0)
results = {}
for name, shape in config["cases"]:
    x = rng.standard_normal([128, *shape], dtype=np.float32)
    kind, _, arg = name.partition(" ")
    inputs = (x,)
    if kind == "MaxPool2d":
        layer = nn.MaxPool2d(2)
        x = np.maximum(x, 0)   # after a ReLU: many zero ties, as in the networks
        inputs = (x,)
    elif kind == "BatchNorm2d":
        layer = nn.BatchNorm2d(shape[0])
    elif kind == "ReLU":
        layer = nn.ReLU()
    elif kind == "Add":
        layer = nn.Add()
        inputs = (x, rng.standard_normal(x.shape, dtype=np.float32))
    elif kind == "ZeroPadShortcut":
        layer = ZeroPadShortcut(shape[0], 2 * shape[0], 2)
    else:
        layer = nn.GlobalAvgPool2d()
    y = layer.forward(*inputs)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    layer.backward(g)
    forward = timed(lambda: layer.forward(*inputs), config["repeats"])
    backward = timed(lambda: layer.backward(g), config["repeats"])
    results[f"{name} {tuple(shape)}"] = {"forward": forward, "backward": backward}
src = np.ones(128 * 32 * 32 * 32, np.float32)
dst = np.empty_like(src)
copy = timed(lambda: np.copyto(dst, src), config["repeats"])
results["copy"] = 2 * src.nbytes / (copy[0] / 1e3) / 1e9
print(json.dumps(results))
"""

CASES = [
    ("MaxPool2d", (6, 28, 28)), ("MaxPool2d", (16, 10, 10)),
    ("MaxPool2d", (32, 32, 32)), ("MaxPool2d", (64, 16, 16)),
    ("BatchNorm2d", (16, 32, 32)), ("BatchNorm2d", (32, 16, 16)), ("BatchNorm2d", (64, 8, 8)),
    ("ReLU", (16, 32, 32)), ("ReLU", (32, 32, 32)),
    ("Add", (16, 32, 32)), ("ZeroPadShortcut", (16, 32, 32)), ("GlobalAvgPool2d", (64, 8, 8)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="a git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import blas_kernel

    print(f"batch 128, float32, {args.threads} BLAS thread(s), {args.rounds} rounds × "
          f"{args.repeats} repeats, medians of process CPU time (wall in brackets), ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"BLAS: {blas_kernel()}")
    config = {"cases": CASES, "repeats": args.repeats, "threads": args.threads}
    runs = alternating(CHILD, config, args.before, args.rounds)
    versions = list(runs)
    copy = statistics.median(r["copy"] for r in runs["this tree"])
    print(f"copy bandwidth (read + write, 16 MiB): {copy:.1f} GB/s")
    header = "".join(f"{name:>22}" for name in versions)
    print(f"  {'layer':<36} {'phase':<9}{header}" + ("   ratio" if args.before else ""))
    for key in runs["this tree"][0]:
        if key == "copy":
            continue
        for phase in ("forward", "backward"):
            cells, cpu = "", []
            for name in versions:
                values = [r[key][phase] for r in runs[name]]
                c, w = (statistics.median(v[i] for v in values) for i in (0, 1))
                cpu.append(c)
                cells += f"{c:12.2f} [{w:7.2f}]"
            ratio = f"  {cpu[0] / cpu[1]:6.2f}" if args.before else ""
            print(f"  {key:<36} {phase:<9}{cells}{ratio}")


if __name__ == "__main__":
    main()
