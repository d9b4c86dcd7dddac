"""Whole training steps at small batches, where the threads cost the most: this working
tree against a git revision, alternating fresh processes.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/small_batches.py \\
        [--before REV] [--batches 1 4 32] [--rounds 2] [--steps 40] [--networks vgg]

Networks (``nn.zoo``, float32, SGD with momentum 0.9 on one fixed random batch): ResNet-20
on 32×32×3 (option-A shortcuts: its only GEMM convolution is layer3.0's strided 3×3), and
a bottleneck ResNet (``zoo.resnet("bottleneck", [1, 1, 1, 1])``, one block per stage) on
64×64×3, whose 1×1 convolutions are batched GEMMs, and the small VGG (``zoo.small_vgg``)
on 32×32×3, whose 4096 → 512 head holds 8 MB of weights, and the CIFAR ResNet-18
(``zoo.resnet18`` on 32×32×3: 3×3 stem, stages of 64–512 channels down to 4×4 planes,
1×1 projection shortcuts), timed only when named (``--networks resnet-18``: ~1 s a step
at batch 128). Each process times every network at
every batch size: the median of ``--steps`` steps after 3 warm-up steps, ms, wall clock
(40 by default: the optimizer's lane tuner, ``threads.LaneTuner``, times its first probe
from the 9th step on, and a process's first two-lane steps stall for milliseconds; with 10
steps ResNet-20 at batch 4 measured 1.10–1.23× the time of a revision whose tuner probed
from the first step, with 40 steps 0.94×),
on the threads the environment gives (``ERMLAB_NUM_THREADS``, else every CPU). The table
gives the median over ``--rounds`` processes per version and the ratio (this tree / REV).

Measured (AMD EPYC Zen 5, 2 vCPUs, ``--before 5bc7804``: before the rule that one lane
runs BLAS on one thread and the 1×1 path in lanes), ms, before → after:

    ResNet-20          batch 1 6.0 → 6.0 (5 rounds), 2 37.8 → 8.1, 4 75.8 → 11.4,
                       32 43.3 → 41.5
    bottleneck ResNet  batch 1 37.5 → 38.7, 2 59.6 → 51.1, 4 121.4 → 93.3,
                       32 751.4 → 586.0

The cause was OpenBLAS's second thread: woken for a small GEMM, it spins on a core for
up to 2²⁸ cycles, and the next layers' lanes wait for a time slice.

``--networks vgg --batches 4 8 32 128 --rounds 4 --before c314208`` (the same machine):
before the rule that ``Linear``'s lanes share out the longer side of each result (at
small batches, the weight's rows or columns rather than the samples), ms:

    small VGG          batch 4 6.4 → 5.2, 8 8.4 → 7.5, 32 19.6 → 18.6, 128 87.6 → 70.5

(at batch 128 single processes took 70 or 88–92 ms whichever the version, so that
column moves by the luck of the draw: a run of 3 processes gave 70.0 → 92.3.)

The default run, ``--before c314208`` (this session's start: before the longer-side rule,
the per-example outer products and the small-plane rules of ``Conv2d._merged`` and the
Winograd blocks), 2 processes each; ResNet-20 again with 4:

    ResNet-20          batch 1 4.7 → 4.8, 4 8.8 → 8.9, 32 36.4 → 37.2 (even)
    bottleneck ResNet  batch 1 36.6 → 36.3, 4 98.7 → 49.3, 32 513.1 → 143.6
    small VGG          batch 1 4.6 → 2.6, 4 7.2 → 6.8, 32 19.5 → 19.5

Each network is built afresh for each batch size: the small VGG (no batch norm, SGD at
lr 0.01 on one random batch) trained at batch 1 and then given a batch of 4 diverged.
"""

from __future__ import annotations

import argparse
import os
import statistics

from common import alternating, blas_kernel

CHILD = r"""
import json, statistics, sys, time
import numpy as np
from ermlab import optim
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.nn import zoo

config = json.loads(sys.argv[1])
NETWORKS = {
    "ResNet-20 32x32": (lambda: zoo.resnet20(10, (3, 32, 32), shortcut="A", rng=0), (3, 32, 32)),
    "bottleneck ResNet 64x64": (lambda: zoo.resnet("bottleneck", [1, 1, 1, 1], num_classes=10,
                                                   input_shape=(3, 64, 64), rng=0), (3, 64, 64)),
    "small VGG 32x32": (lambda: zoo.small_vgg(10, (3, 32, 32), rng=0), (3, 32, 32)),
    "ResNet-18 32x32": (lambda: zoo.resnet18(10, (3, 32, 32), rng=0), (3, 32, 32)),
}
results = {}
for name, (build, shape) in NETWORKS.items():
    wanted = config["networks"] or ["resnet-20", "bottleneck", "vgg"]
    if not any(n.lower() in name.lower() for n in wanted):
        continue
    for batch in config["batches"]:  # a fresh network each: one trained on another batch
        model, loss = build(), SoftmaxCrossEntropy()  # may diverge on this one (small VGG)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        y = rng.integers(0, 10, batch)

        def step():
            loss.forward(model.forward(x), y)
            opt.zero_grad()
            model.backward(loss.backward(), input_grad=False)
            opt.step()

        for _ in range(3):
            step()
        times = []
        for _ in range(config["steps"]):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        results[f"{name}, batch {batch}"] = statistics.median(times) * 1e3
print(json.dumps(results))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="a git revision to compare with")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 32])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--networks", nargs="+", default=[],
                        help="only the networks whose names contain one of these "
                        "(resnet-20, bottleneck, vgg, resnet-18; default: all but resnet-18)")
    args = parser.parse_args()

    print(f"float32, SGD momentum 0.9, ms per step (median of {args.steps}, median of "
          f"{args.rounds} processes); ERMLAB_NUM_THREADS="
          f"{os.environ.get('ERMLAB_NUM_THREADS', 'unset')}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"BLAS: {blas_kernel()}")
    runs = alternating(CHILD, {"batches": args.batches, "steps": args.steps,
                                "networks": args.networks}, args.before,
                       args.rounds)
    versions = list(runs)
    header = "".join(f"{name:>14}" for name in versions)
    print(f"  {'network, batch':<36}{header}" + ("   ratio" if args.before else ""))
    for key in runs["this tree"][0]:
        ms = [statistics.median(r[key] for r in runs[name]) for name in versions]
        cells = "".join(f"{m:14.1f}" for m in ms)
        ratio = f"  {ms[0] / ms[1]:6.2f}" if args.before else ""
        print(f"  {key:<36}{cells}{ratio}")


if __name__ == "__main__":
    main()
