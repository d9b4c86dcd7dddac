"""Training time per epoch of two CNNs, float32, batch 128: ermlab vs PyTorch CPU, same run.

Run by hand (not a test):
    python benchmarks/cnn.py [--repeats 5] [--steps 10] [--threads N] [--only lenet|vgg]
                             [--no-profile]

Networks (the same architecture in both frameworks, ReLU everywhere):
  * LeNet-5 on 28×28×1 (Fashion-MNIST, 60,000 training images → 469 batches/epoch):
    conv 5×5 6 (pad 2) → maxpool 2 → conv 5×5 16 → maxpool 2 → fc 120 → fc 84 → fc 10;
  * a small VGG-style network on 32×32×3 (CIFAR-10, 50,000 images → 391 batches/epoch):
    conv 3×3 32 → conv 3×3 32 → maxpool 2 → conv 3×3 64 → conv 3×3 64 → maxpool 2
    → fc 512 → fc 10.

One training step = forward + softmax cross-entropy + backward + SGD with momentum 0.9
(lr 0.01) on one fixed random batch (data loading is left out of both). The time per
epoch is an ESTIMATE: the median time per step over ``--repeats`` rounds of ``--steps``
timed steps (after 2 warm-up steps), times the number of batches in an epoch. Rounds
alternate between the frameworks so that machine load affects both alike. The ratio
ermlab / PyTorch is printed (< 1: ermlab faster; the goal is ≤ 1.5).

On a shared, loaded machine pass ``--threads 1``: OpenBLAS's multithreaded GEMM stalls
when the cores are oversubscribed (the weight-gradient GEMM of LeNet-5's second layer,
16×17,920 by 17,920×150, took 4.9 ms on one thread and 690 ms on two at load average 7),
which makes two-thread timings meaningless there.

With profiling on (default), a separate run then times every layer's forward and
backward pass and the optimizer step in ermlab (wall-clock timers around each call),
and prints where the time goes next to torch.profiler's view of PyTorch's step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import numpy as np
from common import time_per_step

from ermlab import optim
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.nn import zoo

BATCH = 128
CASES = {
    # name: (ermlab builder, input shape, training-set size)
    "LeNet-5 28×28×1": (lambda: zoo.lenet5(10, (1, 28, 28), rng=0), (1, 28, 28), 60_000),
    "small VGG 32×32×3": (lambda: zoo.small_vgg(10, (3, 32, 32), rng=0), (3, 32, 32), 50_000),
}


def torch_model(name: str):
    import torch.nn as nn

    if name.startswith("LeNet"):
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4096, 512), nn.ReLU(), nn.Linear(512, 10),
    )


def batch(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, *shape)).astype(np.float32), rng.integers(0, 10, BATCH)


def ermlab_step(name: str):
    build, shape, _ = CASES[name]
    model, loss = build(), SoftmaxCrossEntropy()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = batch(shape)

    def step():
        loss.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss.backward(), input_grad=False)
        opt.step()

    return step, model, opt


def torch_step(name: str):
    import torch

    torch.manual_seed(0)
    model = torch_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in batch(CASES[name][1]))

    def step():
        opt.zero_grad()
        criterion(model(x), y).backward()
        opt.step()

    return step


def profile_ermlab(name: str, steps: int) -> None:
    """Wall-clock time of each leaf layer's forward and backward, and of the optimizer step."""
    step, model, opt = ermlab_step(name)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    leaves = [(n, m) for n, m in model.named_modules() if not m._modules]

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            totals[key] += time.perf_counter() - start
            return out
        return wrapper

    for layer, module in leaves:
        label = f"{layer} ({type(module).__name__})"
        object.__setattr__(module, "forward", timed((label, "forward"), module.forward))
        object.__setattr__(module, "backward", timed((label, "backward"), module.backward))
    object.__setattr__(opt, "step", timed(("optimizer", "SGD step"), opt.step))
    step()
    totals.clear()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - start) / steps
    print(f"\n  ermlab, where the time goes ({steps} steps, ms per step; wall {wall * 1e3:.1f}):")
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    for (label, phase), seconds in rows:
        ms = seconds / steps * 1e3
        if ms >= 0.05:
            print(f"    {label:<34} {phase:<9} {ms:8.2f}  {100 * ms / (wall * 1e3):5.1f} %")
    rest = wall - sum(totals.values()) / steps
    print(f"    {'loss, zero_grad, Python glue':<44} {rest * 1e3:8.2f}  "
          f"{100 * rest / wall:5.1f} %")


def profile_torch(name: str, steps: int) -> None:
    import torch

    step = torch_step(name)
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"\n  PyTorch, top operators ({steps} steps, self CPU time):")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    print("    " + table.replace("\n", "\n    "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--only", choices=["lenet", "vgg"], default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for both frameworks (default: their own)")
    args = parser.parse_args()
    import torch

    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)

    print(f"batch {BATCH}, float32, SGD momentum 0.9; numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("epoch time = median time per step × batches per epoch (an estimate from "
          f"{args.repeats} rounds × {args.steps} timed steps)")
    for name, (_, _, n_train) in CASES.items():
        if args.only and not name.lower().startswith({"lenet": "lenet", "vgg": "small"}[
                args.only]):
            continue
        candidates = {"ermlab": ermlab_step(name)[0], "pytorch": torch_step(name)}
        times: dict[str, list[float]] = {k: [] for k in candidates}
        for _ in range(args.repeats):
            for key, step in candidates.items():
                times[key].append(time_per_step(step, args.steps, warmup=2))
        batches = -(-n_train // BATCH)
        ours, theirs = statistics.median(times["ermlab"]), statistics.median(times["pytorch"])
        print(f"\n{name}: {batches} batches per epoch of {n_train:,} images")
        for key, t in (("ermlab", ours), ("pytorch", theirs)):
            spread = f"{min(times[key]) * 1e3:.1f}–{max(times[key]) * 1e3:.1f}"
            print(f"  {key:<8} {t * 1e3:8.1f} ms/step (range {spread})  "
                  f"≈ {t * batches:6.1f} s/epoch")
        print(f"  ratio ermlab/pytorch = {ours / theirs:.2f}")
        if not args.no_profile:
            profile_ermlab(name, args.steps)
            profile_torch(name, args.steps)


if __name__ == "__main__":
    main()
