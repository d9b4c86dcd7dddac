"""Peak resident memory of a training run, ermlab vs PyTorch CPU, each in a fresh process.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/memory.py \\
        [--models mlp,vgg] [--batches 64,128,256] [--steps 20 | --epoch] [--threads N]

Workloads (float32, the architectures of benchmarks/mlp_epoch.py and benchmarks/cnn.py):
  * MLP 784-512-256-10 with Adam (lr 1e-3) on a Fashion-MNIST-sized training set
    (60,000 × 784, random values);
  * the small VGG of benchmarks/cnn.py with SGD + momentum 0.9 (lr 0.01) on a
    CIFAR-10-sized training set (50,000 × 3 × 32 × 32, random values);
  * with ``--models resnet18``, the CIFAR ResNet-18 of ``cnn.py --only resnet18``, the same
    way (~1 s a step at batch 128).

Each (model, batch size, framework) runs in its own subprocess, so one run's peak never
hides another's. The child imports its framework, builds the data (the same values for
both), the model and the optimizer, then records its resident set size (RSS, from
/proc/self/statm) as the *baseline*; it then trains: ermlab through ``Trainer.fit`` (one
epoch over the first ``steps × batch`` examples, or over all of them with ``--epoch``),
PyTorch through the usual loop (a random permutation, ``x[index]`` batches, zero_grad,
forward, cross-entropy, backward, step) over the same examples. Reported:

    peak     ru_maxrss at the end (the process's high-water mark, MiB)
    growth   peak − baseline: what training adds on top of the data and the model

and, over the batch sizes, the per-example slope of the growth (least squares, MiB per
example in the batch) — the activations, caches and scratch buffers that scale with the
batch — and its intercept (what does not). With a fixed number of steps the peak is the
steady state: every step allocates the same buffers, and the child checks that the RSS
after the last step has not grown past the RSS after the second one by more than 5 %
(printed "steady" or "STILL GROWING").

Threads: OpenBLAS and oneDNN keep per-thread buffers; pass ``--threads`` to compare at
the same count (default: each framework's own).

Measured (Intel Xeon @ 2.80GHz, 2 cores, ``--steps 6 --threads 1``, working tree of
06:40 UTC 30 Nov 2026 with helper C's conv changes in progress; MiB):

    MLP    batch 64/128/256  ermlab peak 356/357/359, growth 128/129/131
                             PyTorch peak 587/588/590, growth 24/24/27
           growth ≈ 127.1 + 0.013/example (ermlab), 22.4 + 0.017/example (PyTorch)
    VGG    batch 64/128/256  ermlab peak 875/953/1093, growth 229/306/447
                             PyTorch peak 1099/1187/1298, growth 123/211/322
           growth ≈ 158.5 + 1.131/example (ermlab), 67.5 + 1.012/example (PyTorch)

ermlab's peaks are lower (0.61× and 0.80–0.84×: importing torch alone costs ~330 MiB
more than importing ermlab), its growth is not: ~100 MiB of the fixed part is the first
optimizer step compiling the Numba kernels (``ERMLAB_FUSED=0``: the step adds 26 MiB,
SciPy's BLAS, instead of 127), and the small VGG's per-example slope is 1.13 MiB against
PyTorch's 1.01 (the issue measured 3.5 against 1.0 before the conv changes).

CIFAR ResNet-18 (AMD EPYC Zen 5, 2 threads, ``--models resnet18 --batches 128``, 2026-12-01;
MiB, 586 of them the data): ermlab peak 2366–2367 (8 and 16 steps: the same; the check
says "STILL GROWING" because the RSS after the second step was below the later steps'),
PyTorch 1908–1934: 1.22–1.24×, growths 1629 against 984–1011. Before Winograd's work
arrays were kept per thread (``conv.THREAD_WORK``): 2681, 1.39×.

AMD EPYC Zen 4, 2 threads, ``--steps 4``, 2026-12-03 (MiB), after three changes: caches
let go as bprop passes them and as the next forward starts (``ermlab.nn.module``), the
fused ReLU's bprop taken inside Winograd's and direct's ∂L/∂W kernels (no masked copy of
∂L/∂y: ``Conv2d._relu_in_kernels``), and the thread pool's workers no longer holding their
last lane (its arrays) until the next one:

    small VGG  batch 64/128/256/512/1024  ermlab 837/871/945/1145/1404
                                          PyTorch 1007/1089/1174/1360/1658: 0.80–0.85×
               growth ≈ 146.8 + 0.602/example (PyTorch 107.1 + 0.662); before the
               changes, at 256/512/1024: 1059/1252/1711 against 1166/1369/1688 (1.01×
               at 1024), 0.856/example
    ResNet-18  batch 128: 1728 against 1884 (0.92×; 1971, 1.06×, before);
               batch 1024: 5895 against 5728 (1.03×)
    MLP        0.71–0.72× at every batch (unchanged: its caches are small)

With ``ermlab._malloc``'s trim threshold raised to 256 MiB afterwards (freed caches kept
for the next step): small VGG 882/1405 at batches 128/1024, ResNet-18 1727/5892: the same.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

MIB = 2**20
SIZES = (784, 512, 256, 10)
ROWS = {"mlp": 60_000, "vgg": 50_000, "resnet18": 50_000}
SHAPES = {"mlp": (784,), "vgg": (3, 32, 32), "resnet18": (3, 32, 32)}


def rss() -> int:
    """Current resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """The process's peak resident set size in bytes (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dataset(model: str) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs of the dataset's size, built in place (no float64 temporary)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS[model], *SHAPES[model]), dtype=np.float32)
    return x, rng.integers(0, 10, ROWS[model])


def child_ermlab(model: str, x, y, batch: int, rows: int, record) -> None:
    from ermlab import losses, optim
    from ermlab.nn import mlp, zoo
    from ermlab.training import Callback, Trainer

    if model == "mlp":
        net = mlp(SIZES, rng=0)
        optimizer = optim.Adam(net.parameters(), lr=1e-3)
    else:
        build = zoo.small_vgg if model == "vgg" else zoo.resnet18
        net = build(10, SHAPES[model], rng=0)
        optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    trainer = Trainer(net, losses.SoftmaxCrossEntropy(), optimizer, rng=0)

    class AfterEachStep(Callback):
        def on_batch_end(self, trainer, logs=None) -> None:
            record()

    trainer.callbacks.append(AfterEachStep())
    yield_baseline()
    trainer.fit(x[:rows], y[:rows], epochs=1, batch_size=batch)


def child_torch(model: str, x, y, batch: int, rows: int, record) -> None:
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import torch_cnn, torch_mlp, torch_resnet18

    torch.manual_seed(0)
    if model == "mlp":
        net = torch_mlp(SIZES)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    else:
        net = torch_cnn("small VGG") if model == "vgg" else torch_resnet18()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x[:rows]), torch.from_numpy(y[:rows].astype(np.int64))
    yield_baseline()
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(0))
    for i in range(0, rows, batch):
        index = order[i:i + batch]
        optimizer.zero_grad()
        criterion(net(xs[index]), ys[index]).backward()
        optimizer.step()
        record()


_BASELINE: dict[str, int] = {}


def yield_baseline() -> None:
    """Record the RSS once data, model and optimizer exist, just before training."""
    _BASELINE["rss"], _BASELINE["peak"] = rss(), peak_rss()


def child(framework: str, model: str, batch: int, steps: int | None, threads: int | None):
    if threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
        if framework == "pytorch":
            import torch

            torch.set_num_threads(threads)
    x, y = dataset(model)
    rows = len(x) if steps is None else min(len(x), steps * batch)
    after: list[int] = []
    start = time.perf_counter()
    run = child_ermlab if framework == "ermlab" else child_torch
    run(model, x, y, batch, rows, lambda: after.append(rss()))
    seconds = time.perf_counter() - start
    peak = peak_rss()
    steady = len(after) < 3 or after[-1] <= 1.05 * after[1]
    print(json.dumps({
        "baseline": _BASELINE["rss"], "baseline_peak": _BASELINE["peak"], "peak": peak,
        "steps": len(after), "steady": steady, "seconds": seconds,
    }))


def run_child(framework: str, model: str, batch: int, args) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", framework, model,
               str(batch), "0" if args.epoch else str(args.steps), str(args.threads or 0)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{framework} {model} batch {batch} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(batches: list[int], growth: list[float]) -> tuple[float, float]:
    """Least-squares (MiB per example, MiB at batch 0) of growth against batch size."""
    per_example, intercept = np.polyfit(np.asarray(batches, float), np.asarray(growth), 1)
    return float(per_example), float(intercept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,vgg")
    parser.add_argument("--batches", default="64,128,256")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epoch", action="store_true", help="train one whole epoch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        framework, model, batch, steps, threads = args.child
        child(framework, model, int(batch), int(steps) or None, int(threads) or None)
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import blas_kernel

    batches = [int(b) for b in args.batches.split(",")]
    print(f"peak resident memory of training, float32, "
          f"{'one epoch' if args.epoch else f'{args.steps} steps'} per run, each run in a "
          f"fresh process; threads {args.threads or 'default'}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"BLAS: {blas_kernel()}")
    for model in args.models.split(","):
        title = {"mlp": "MLP 784-512-256-10, Adam", "vgg": "small VGG 32×32×3, SGD momentum",
                 "resnet18": "CIFAR ResNet-18 32×32×3, SGD momentum"}[model]
        print(f"\n{title} ({ROWS[model]:,} examples in memory: "
              f"{ROWS[model] * np.prod(SHAPES[model]) * 4 / MIB:.0f} MiB)")
        print(f"  {'batch':>5}  {'framework':<8} {'baseline':>9} {'peak':>9} {'growth':>9}"
              f"  steps  state      ratio of peaks, of growths")
        growth: dict[str, list[float]] = {"ermlab": [], "pytorch": []}
        for batch in batches:
            results = {fw: run_child(fw, model, batch, args) for fw in ("ermlab", "pytorch")}
            for fw, r in results.items():
                grown = (r["peak"] - r["baseline"]) / MIB
                growth[fw].append(grown)
                ratio = ""
                if fw == "pytorch":
                    ours = results["ermlab"]
                    theirs_growth = max(1, r["peak"] - r["baseline"])
                    ratio = (f"{ours['peak'] / r['peak']:.2f}, "
                             f"{(ours['peak'] - ours['baseline']) / theirs_growth:.2f}")
                print(f"  {batch:5d}  {fw:<8} {r['baseline'] / MIB:8.0f}M {r['peak'] / MIB:8.0f}M "
                      f"{grown:8.0f}M  {r['steps']:5d}  "
                      f"{'steady' if r['steady'] else 'STILL GROWING':<10} {ratio}")
        if len(batches) >= 2:
            for fw in growth:
                per_example, fixed = slope(batches, growth[fw])
                print(f"  {fw:<8} growth ≈ {fixed:6.1f} MiB + {per_example:.3f} MiB per example "
                      "in the batch")


if __name__ == "__main__":
    main()
