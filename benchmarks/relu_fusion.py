"""A ReLU run inside the box before it (``Module.forward_relu``) against the two boxes run
apart: each pair alone, then whole training steps, float32, batch 128, same run.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/relu_fusion.py \
        [--threads 2] [--rounds 12] [--steps 3] [--only pairs|steps]

Pairs (forward + bprop of ``Sequential(box, ReLU)``, or of a ``Graph`` summing two inputs
and rectifying the sum), at the shapes of the benchmarked networks: ``BatchNorm2d`` on
ResNet-20's three stages, ``Conv2d`` on direct sums (the small VGG's 3→32 and LeNet-5's
C1) and on Winograd's F(2×2, 3×3) (the small VGG's 32→32 and 64→64), and ResNet-20's
residual sums. Steps: LeNet-5, the small VGG and ResNet-20 as in ``cnn.py`` (forward,
softmax cross-entropy, backward, SGD with momentum). "apart" turns the fusion off as a
box without it would (``forward_relu`` answering None), so the composite runs the ReLU
itself. Rounds alternate between the two so that machine load affects both alike; the
best (min) and the median of ``--rounds`` are printed, and the ratio of the medians
(fused / apart; < 1: the fusion is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from common import blas_kernel

from ermlab import nn
from ermlab.nn import conv, merge, normalization

BATCH = 128
OFF = {  # a box without the fusion: forward_relu answers None
    (normalization._BatchNorm, "forward_relu"): lambda self, x: None,
    (conv.Conv2d, "forward_relu"): lambda self, x: None,
    (merge.Add, "forward_relu"): lambda self, *inputs: None,
}
ON = {key: getattr(*key) for key in OFF}


def fused(on: bool) -> None:
    for (cls, name), method in (ON if on else OFF).items():
        setattr(cls, name, method)


def pairs(rng: np.random.Generator) -> dict:
    """name → (model, inputs, ∂L/∂y, input_grad)."""
    cases = {}  # name → (model, number of inputs, input shape, output shape, input_grad)
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        cases[f"BatchNorm2d({c}) + ReLU, {c}×{hw}×{hw}"] = (
            nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()), 1, (c, hw, hw), (c, hw, hw), True)
    for c, o, hw, k, algorithm in ((3, 32, 32, 3, "direct"), (1, 6, 28, 5, "direct"),
                                   (32, 32, 32, 3, "winograd"), (64, 64, 16, 3, "winograd")):
        layer = nn.Conv2d(c, o, k, padding=k // 2, rng=0, algorithm=algorithm)
        cases[f"Conv2d {c}→{o} {k}×{k} ({algorithm}) + ReLU, {hw}×{hw}"] = (
            nn.Sequential(layer, nn.ReLU()), 1, (c, hw, hw), (o, hw, hw), c > 3)
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        block = nn.Graph(inputs=["a", "b"])
        block.add("sum", nn.Add(), ["a", "b"]).add("relu", nn.ReLU(), "sum").set_output("relu")
        cases[f"Add + ReLU, {c}×{hw}×{hw}"] = (block, 2, (c, hw, hw), (c, hw, hw), True)
    return {name: (model,
                   tuple(rng.standard_normal((BATCH, *shape), dtype=np.float32)
                         for _ in range(count)),
                   rng.standard_normal((BATCH, *out), dtype=np.float32), input_grad)
            for name, (model, count, shape, out, input_grad) in cases.items()}


def pair_step(model, inputs, grad, input_grad):
    def step():
        model.forward(*inputs)
        model.zero_grad()
        model.backward(grad, input_grad=input_grad)
    return step


def network_steps() -> dict:
    from cnn import CASES, ermlab_step

    return {name: ermlab_step(name)[0] for name in CASES}


def compare(name: str, step, rounds: int, steps: int) -> None:
    for on in (False, True):
        fused(on)
        step()
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for on in ((False, True) if r % 2 else (True, False)):
            fused(on)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[on].append((time.perf_counter() - start) / steps)
    fused(True)
    apart, together = times[False], times[True]
    print(f"  {name:<48} apart {1e3 * min(apart):8.2f} ({1e3 * statistics.median(apart):.2f})"
          f"  fused {1e3 * min(together):8.2f} ({1e3 * statistics.median(together):.2f})"
          f"  ratio {statistics.median(together) / statistics.median(apart):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="ermlab's lanes and BLAS threads (default: their own)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3, help="calls per round")
    parser.add_argument("--only", choices=["pairs", "steps"], default=None)
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        os.environ["ERMLAB_NUM_THREADS"] = str(args.threads)
        threadpool_limits(args.threads)
    print(f"float32, batch {BATCH}; numpy {np.__version__}; threads "
          f"{os.environ.get('ERMLAB_NUM_THREADS', 'default')}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; ms, best (median) of "
          f"{args.rounds} alternating rounds of {args.steps} calls")
    print(f"BLAS: {blas_kernel()}")
    if args.only != "steps":
        print("\npairs, forward + bprop:")
        for name, case in pairs(np.random.default_rng(0)).items():
            compare(name, pair_step(*case), args.rounds, args.steps)
    if args.only != "pairs":
        print("\nwhole training steps:")
        for name, step in network_steps().items():
            compare(name, step, args.rounds, args.steps)


if __name__ == "__main__":
    main()
