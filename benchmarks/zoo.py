"""Training steps of the zoo's networks against their PyTorch twins, float32, in one run.

Run by hand (not a test):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/zoo.py \\
        [--rounds 5] [--steps 5] [--only NAME ...] [--threads N]

The twins are the torch.nn networks of ``tests/nn/test_zoo_torch.py``, which that test
proves equal to ermlab's (the same scores and gradients in float64); here both train in
float32 from the same weights (ermlab's, copied across) on one fixed random batch: forward,
softmax cross-entropy, backward, SGD with momentum 0.9 (lr 0.01). Networks, inputs and
batches:

    lenet5              LeNet-5, 28×28×1, batch 128
    small_vgg           the small VGG of cnn.py, 32×32×3, batch 128
    vgg11_bn            VGG-11 with batch norm at 1/8 width, 32×32×3, batch 128
    alexnet_small       AlexNet at 1/4 width, 32×32×3, batch 128
    resnet20            ResNet-20 (option-A shortcuts), 32×32×3, batch 32
    resnext_tiny        one grouped bottleneck a stage, 64×64×3, batch 32
    googlenet_small     GoogLeNet's CIFAR variant at 1/2 width, 32×32×3, batch 32
    googlenet_stem224   GoogLeNet with its ImageNet stem at 1/8 width, 64×64×3, batch 32

Each round times ``--steps`` steps of one framework, pauses 50 ms (so that the other's
spinning threads, torch's OpenMP workers or ermlab's lanes, have stopped), then the other;
the order alternates round by round. Stepping the two in turn one step at a time biases
both: each starts while the other's threads still spin (a Winograd layer measured 2.91 ms a
forward that way, 0.91 alone). Reported: the median step of each and the median over
rounds of the rounds' ratios ermlab / PyTorch (< 1: ermlab faster). ``benchmarks/cnn.py``
times LeNet-5, the small VGG and ResNet-20 at batch 128 with profiles; this script covers
the rest of the zoo and smaller batches.

Measured (AMD EPYC Zen 4 VM, 2 cores, 2 threads, 2026-12-03, one run; ms a step, ermlab
against PyTorch 2.13): LeNet-5 8.9 / 9.8 (0.91), small VGG 128.5 / 183.9 (0.71), VGG-11-BN
28.5 / 40.7 (0.70), AlexNet 207.5 / 262.6 (0.77), ResNet-20 at batch 32 83.8 / 76.4
(1.16: at one thread 0.93, see cnn.py), ResNeXt 142.7 / 167.7 (0.85), GoogLeNet (CIFAR)
726.4 / 1029.3 (0.73), GoogLeNet (ImageNet stem) 49.9 / 57.7 (0.87). The same networks
stepped in turn one step at a time had measured VGG-11-BN at 0.96–1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from common import blas_kernel, limit_threads

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "nn"))


def cases() -> dict:
    """name → (ermlab builder, torch builder, input shape, batch)."""
    import test_zoo_torch as twins

    from ermlab.nn import zoo

    given = twins.CASES
    return {
        "lenet5": (*given["lenet5"][:2], (1, 28, 28), 128),
        "small_vgg": (*given["small_vgg"][:2], (3, 32, 32), 128),
        "vgg11_bn": (*given["vgg11_bn"][:2], (3, 32, 32), 128),
        "alexnet_small": (*given["alexnet_small"][:2], (3, 32, 32), 128),
        "resnet20": (*given["resnet20_A"][:2], (3, 32, 32), 32),
        "resnext_tiny": (*given["resnext_tiny"][:2], (3, 64, 64), 32),
        "googlenet_small": (
            lambda: zoo.build("googlenet_small", 10, (3, 32, 32), width=0.5, dropout=0, rng=0),
            lambda: twins.torch_googlenet(0.5, True, True), (3, 32, 32), 32),
        "googlenet_stem224": (*given["googlenet_stem224"][:2], (3, 64, 64), 32),
    }


def steps_of(build, build_torch, shape, batch):
    """(ermlab step, torch step) on the same batch from the same weights."""
    import torch

    from ermlab import losses, optim

    model = build()
    twin = build_torch().train()
    with torch.no_grad():
        for p, t in zip(model.parameters(), twin.parameters(), strict=True):
            t.copy_(torch.from_numpy(p.data))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss = losses.SoftmaxCrossEntropy()
    torch_optimizer = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def ermlab_step() -> None:
        model.train()
        loss.forward(model.forward(x), y)
        optimizer.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        optimizer.step()

    def torch_step() -> None:
        torch_optimizer.zero_grad()
        torch.nn.functional.cross_entropy(twin(tx), ty).backward()
        torch_optimizer.step()

    return ermlab_step, torch_step


def median_step(step, steps: int) -> float:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS, torch and ermlab threads (default: as installed)")
    args = parser.parse_args()
    limit_threads(args.threads)
    import torch

    table = cases()
    names = args.only or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown networks {unknown}; choose from {list(table)}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"BLAS: {blas_kernel()}; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"{'network':20s} {'batch':>5s} {'ermlab ms':>10s} {'torch ms':>10s} {'ratio':>6s}")
    for name in names:
        build, build_torch, shape, batch = table[name]
        ermlab_step, torch_step = steps_of(build, build_torch, shape, batch)
        for step in (ermlab_step, torch_step, ermlab_step, torch_step):  # warm up, compile
            step()
        ours, theirs, ratios = [], [], []
        for r in range(args.rounds):
            timed = {}
            for which in (("ermlab", "torch") if r % 2 == 0 else ("torch", "ermlab")):
                time.sleep(0.05)
                timed[which] = median_step(ermlab_step if which == "ermlab" else torch_step,
                                           args.steps)
            ours.append(timed["ermlab"])
            theirs.append(timed["torch"])
            ratios.append(timed["ermlab"] / timed["torch"])
        print(f"{name:20s} {batch:5d} {statistics.median(ours) * 1e3:10.1f} "
              f"{statistics.median(theirs) * 1e3:10.1f} {statistics.median(ratios):6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
