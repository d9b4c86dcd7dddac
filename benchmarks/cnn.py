"""Training time per step of CNNs, float32, batch 128: ermlab vs PyTorch CPU, same run.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cnn.py \
        [--repeats 5] [--steps 10] [--threads N] [--only lenet|vgg|resnet20|resnet18]
        [--no-profile]
        [--clock wall|cpu] [--batch 128]

Networks (the same architecture in both frameworks, ReLU everywhere):
  * LeNet-5 on 28×28×1 (Fashion-MNIST, 60,000 training images → 469 batches/epoch):
    conv 5×5 6 (pad 2) → maxpool 2 → conv 5×5 16 → maxpool 2 → fc 120 → fc 84 → fc 10;
  * a small VGG-style network on 32×32×3 (CIFAR-10, 50,000 images → 391 batches/epoch):
    conv 3×3 32 → conv 3×3 32 → maxpool 2 → conv 3×3 64 → conv 3×3 64 → maxpool 2
    → fc 512 → fc 10;
  * ResNet-20 on 32×32×3 (He et al. 2016, §4.2; ``zoo.resnet20(shortcut="A")``):
    conv 3×3 16 → BN → ReLU → 3 stages × 3 basic blocks (16, 32, 64 channels, stride 2
    at the start of stages 2 and 3; convolutions without bias, each followed by batch
    norm) with parameter-free shortcuts (option A: subsample, zero-pad the channels)
    → global average pool → fc 10 (269,722 parameters);
  * with ``--only resnet18`` (~1 s a step): the CIFAR ResNet-18 (``zoo.resnet18`` on
    32×32×3): conv 3×3 64 → BN → ReLU → 4 stages × 2 basic blocks (64, 128, 256, 512
    channels; planes of 32, 16, 8, 4), 1×1 projection shortcuts with batch norm where the
    shape changes → global average pool → fc 10 (11,173,962 parameters).

One training step = forward + softmax cross-entropy + backward + SGD with momentum 0.9
(lr 0.01) on one fixed random batch (data loading is left out of both). The time per
epoch is an ESTIMATE: the median time per step over ``--repeats`` rounds of ``--steps``
timed steps (after 2 warm-up steps), times the number of batches in an epoch. Rounds
alternate between the frameworks so that machine load affects both alike. The ratio
ermlab / PyTorch is printed (< 1: ermlab faster; the goal of issue 11 is ≤ 1.0).
``--batch`` changes the batch size (128 by default; the epoch estimate follows it).
Both frameworks run in one process, so PyTorch's steps run with the malloc thresholds
that importing ``ermlab.nn`` sets (``ermlab._malloc``) and fault fewer pages than in a
process of their own: LeNet-5's PyTorch step took 7.1–10.4 ms in three runs with
glibc's thresholds (``ERMLAB_MALLOC=0``, or before that module), 5.7–7.3 in three with
ermlab's (AMD EPYC Zen 5 VM, 2026-12-02); the ratios lean PyTorch's way.

Small batches show what the threads cost where the work is small (see
``benchmarks/small_batches.py`` for the before/after of ``Conv2d._run_lanes``' rule).
Measured here (AMD EPYC Zen 5, 2 threads), ermlab / PyTorch, LeNet-5, small VGG,
ResNet-20: batch 4 0.83, 0.94, 1.27; batch 8 0.95, 0.92, 1.31; batch 32 1.01–1.29
(LeNet-5's 1.6–2.0 ms steps move with the machine), 0.91, 1.14 (an earlier run 0.94).
The small VGG was 1.29 and 1.17 at batches 4 and 8 before ``Linear``'s lanes shared out
the features at small batches. The CIFAR ResNet-18 at batch 128: 0.75 (994 against 1331
ms a step; 1587 ms before the small-plane rules of ``Conv2d._merged`` and
``_winograd.BACKWARD_TILES_PER_CHANNEL``).

Batch 128 on an Intel Xeon VM with AMX (2 cores, 2 MiB of L2 each, LLVM's name for it
``rocketlake``, so 256-bit kernels; 2026-12-02, 2 threads), ermlab / PyTorch over this
session's runs: LeNet-5 0.85–1.15, small VGG 0.81–1.06, ResNet-20 1.03–1.21 (most runs
1.08–1.15; the machine's speed moved by 15–25 % from run to run). Since AMX marks it as
a server core (``ermlab._numba_target``), 512-bit kernels (next session, two alternating
runs each, 256 → 512 bits): ResNet-20 1.09/1.08 → 1.01/1.06, small VGG 0.90/0.86 →
0.78/0.81, LeNet-5 0.82/0.90 → 1.07/0.91 (its 7–9 ms steps move with the machine).
ResNet-20's layers
alone (forward + bprop, paired rounds, ermlab / PyTorch): 16→16 on 32×32 0.71–1.35,
32→32 on 16×16 1.13–1.26, 64→64 on 8×8 1.13–1.16, the stem 1.24–1.57, the two stride-2
layers 1.8–2.0 (16→32 1.42 after ∂L/∂x by phases, ``nn._direct``; 32→64, im2col, 1.99).

Batch 128 on an AMD EPYC Zen 4 VM (family 25 model 17; 2 cores, 1 MiB of L2 each, 32 MiB
of L3; 2026-12-03, 2 threads, one run each): LeNet-5 0.93 (11.4 against 12.3 ms), small
VGG 0.95 (159 against 168), ResNet-20 0.96 (319 against 333), CIFAR ResNet-18 0.78 (2392
against 3068). ``benchmarks/conv_layers.py`` there: 16→16 on 32×32 0.95, 16→32 stride 2
1.14, 32→32 on 16×16 1.08, 32→64 stride 2 1.64, 64→64 on 8×8 0.97; LeNet-5's C3 1.66
(its forward 1.8–2.3 ms on one thread against PyTorch's 0.75). A later session there
found LeNet-5 at 1.00–1.01 and ResNet-20 at 0.99 in some runs (small VGG 0.85); after C3's
∂L/∂W summed four samples a run (``nn._direct.GROUP_POSITIONS``) and its ∂L/∂x (the
column gradient) ran in the lanes of its ∂L/∂W, one parallel region (``Conv2d``'s
``_backward_direct``), LeNet-5 in three alternating pairs of runs 0.92, 0.92, 1.00 →
0.87, 0.84, 0.94 (C3's backward 40 % of ermlab's step before, 35 % after the first change).
2026-12-03 (a later session, same VM, after the batch norm's masked sums vectorized and
16-channel layers on small planes took Winograd): LeNet-5 0.88, small VGG 0.64, ResNet-20
0.92 (301 against 326 ms); at batch 32 ResNet-20's stride-2 layers 1.18 (16→32) and 1.67
(32→64) and 64→64 on 8×8 1.28 (paired rounds, forward + bprop).

On a shared, loaded machine pass ``--threads 1``: OpenBLAS's multithreaded GEMM stalls
when the cores are oversubscribed (the weight-gradient GEMM of LeNet-5's second layer,
16×17,920 by 17,920×150, took 4.9 ms on one thread and 690 ms on two at load average 7),
which makes two-thread timings meaningless there. With ``--threads 1 --clock cpu`` every
time (steps, layers, GEMM peak, copy) is this process's CPU time, which other processes
disturb far less than the wall clock (at load average 13 on 2 cores the wall-clock
profile put LeNet's 2×2 pooling at 12 ms per step where its CPU time is ~2 ms).

With profiling on (default), a separate run then times every layer's forward and
backward pass and the optimizer step in ermlab (wall-clock timers around each call, set on
the layers' classes: a ReLU that runs inside the layer before it (``Module.forward_relu``)
stays there, and that layer's row reads "forward+ReLU"; timers on the instances would turn
that off and time ~20 ms more of separate ReLU passes in ResNet-20's step),
and prints where the time goes next to torch.profiler's view of PyTorch's step. For
the convolutions and fully connected layers the table gives the achieved GFLOP/s, with
the FLOPs counted analytically (2 per multiply-add):

    fprop  2·N·OH·OW·O·(C/G)·K_h·K_w        (Linear: 2·N·in·out)
    bprop  the same for ∂L/∂W, and again for ∂L/∂x unless the layer is the first
           (its input gradient is skipped),

next to the GEMM peak measured in the same run: NumPy's float32 matmul at that layer's
own forward GEMM shape, (O/G × C/G·K_h·K_w) by (C/G·K_h·K_w × N·OH·OW) — what the layer
would reach if its im2col and layout changes cost nothing. For the other layers
(pooling, batch norm, ReLU, residual sums, flatten) it gives the memory traffic they
cannot avoid, (input + output) bytes per pass, in GB/s next to a copy's bandwidth
measured in the same run (2 × bytes per np.copyto of 64 MiB) — what bounds them.
Convolutions marked "Winograd" run F(2×2, 3×3) (``ermlab.nn._winograd``): 2.25× fewer
multiplications than counted above, so their "achieved" figure (the direct convolution's
FLOPs per second, as for PyTorch) can pass the GEMM peak. Those marked "direct" sum
directly (``ermlab.nn._direct``), with no GEMM: their GEMM peak is what im2col could reach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import numpy as np
from common import blas_kernel, copy_bandwidth, time_per_step, torch_cnn

from ermlab import optim
from ermlab.losses import SoftmaxCrossEntropy
from ermlab.nn import zoo

BATCH = 128
CASES = {
    # name: (ermlab builder, input shape, training-set size)
    "LeNet-5 28×28×1": (lambda: zoo.lenet5(10, (1, 28, 28), rng=0), (1, 28, 28), 60_000),
    "small VGG 32×32×3": (lambda: zoo.small_vgg(10, (3, 32, 32), rng=0), (3, 32, 32), 50_000),
    "ResNet-20 32×32×3": (lambda: zoo.resnet20(10, (3, 32, 32), shortcut="A", rng=0),
                          (3, 32, 32), 50_000),
    "ResNet-18 32×32×3": (lambda: zoo.resnet18(10, (3, 32, 32), rng=0), (3, 32, 32), 50_000),
}
ONLY = {"lenet": "LeNet", "vgg": "small VGG", "resnet20": "ResNet-20", "resnet18": "ResNet-18"}
DEFAULT = ("LeNet", "small VGG", "ResNet-20")  # ResNet-18 (~1 s a step) only with --only
CLOCK = [time.perf_counter]  # --clock cpu: time.process_time


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
    model = torch_cnn(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in batch(CASES[name][1]))

    def step():
        opt.zero_grad()
        criterion(model(x), y).backward()
        opt.step()

    return step


def layer_flops(module, x_shape: tuple[int, ...], y_shape: tuple[int, ...]):
    """(fprop FLOPs, (m, k, n) of its forward GEMM) of a Conv2d or Linear; None otherwise."""
    kind = type(module).__name__
    if kind == "Conv2d":
        n, o, oh, ow = y_shape
        k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        m = o // module.groups
        return 2 * n * oh * ow * o * k, (m, k, n * oh * ow)
    if kind == "Linear":
        return 2 * x_shape[0] * module.in_features * module.out_features, (
            x_shape[0], module.in_features, module.out_features)
    return None


def algorithm(module, x_shape) -> str:
    """", Winograd" or ", direct" for a Conv2d that runs F(2×2, 3×3) or direct summation on
    float32 inputs of ``x_shape`` (None: not a Conv2d, or not run)."""
    if type(module).__name__ != "Conv2d" or x_shape is None:
        return ""
    probe = np.zeros(x_shape, np.float32)  # the whole batch: Winograd depends on its size
    if module._winograd(probe) is not None:
        return ", Winograd"
    return ", direct" if module._direct(probe) is not None else ""


def input_shapes(model, step) -> dict:
    """The input shape of each leaf module in one training step (its first call)."""
    shapes: dict = {}
    leaves = [m for _, m in model.named_modules() if not m._modules]
    for module in leaves:
        def record(x, *args, _module=module, _forward=module.forward, **kwargs):
            shapes.setdefault(id(_module), x.shape)
            return _forward(x, *args, **kwargs)
        object.__setattr__(module, "forward", record)
    try:
        step()
    finally:
        for module in leaves:
            del module.__dict__["forward"]
    return shapes


def gemm_gflops(m: int, k: int, n: int, repeats: int = 3) -> float:
    """NumPy float32 GEMM (m × k) @ (k × n) into a preallocated output: best of ``repeats``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK[0]()
        np.matmul(a, b, out=out)
        best = min(best, CLOCK[0]() - start)
    return 2 * m * k * n / best / 1e9


def _nbytes(value) -> int:
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return getattr(value, "nbytes", 0)


def profile_ermlab(name: str, steps: int) -> None:
    """Wall-clock time of each leaf layer's forward and backward, and of the optimizer step,
    with the achieved GFLOP/s (or GB/s) next to this run's GEMM peak (or copy bandwidth).

    The timers wrap the layers' classes, not their instances: a ``forward`` set on an
    instance turns off the ReLU a layer runs in its own pass (``nn.activations.absorbs_relu``)
    and would time a step that training never runs. Such a ReLU has no time of its own; its
    layer's forward is labelled "forward+ReLU" and its bprop includes the ReLU's."""
    step, model, opt = ermlab_step(name)
    totals: dict[tuple[str, str], float] = defaultdict(float)
    work: dict[tuple[str, str], tuple[str, float]] = {}
    leaves = [(n, m) for n, m in model.named_modules() if not m._modules]
    gemm_shapes: dict[str, tuple[int, int, int]] = {}
    labels: dict[int, tuple[str, object]] = {}

    def timed(phase, fn):
        def wrapper(self, *args, **kwargs):
            entry = labels.get(id(self))
            if entry is None:
                return fn(self, *args, **kwargs)
            label, module = entry
            start = CLOCK[0]()
            out = fn(self, *args, **kwargs)
            key = (label, "forward+ReLU" if phase == "forward_relu" else phase)
            if out is None and phase == "forward_relu":  # declined: forward runs next
                return out
            totals[key] += CLOCK[0]() - start
            if key not in work and phase != "step":
                traffic = _nbytes(args) + _nbytes(out)
                flops = None
                if phase.startswith("forward"):
                    counted = layer_flops(module, args[0].shape, out.shape)
                    if counted:
                        flops, gemm_shapes[label] = counted
                elif label in gemm_shapes:
                    m, k, n = gemm_shapes[label]
                    passes = 2 if kwargs.get("input_grad", True) else 1
                    flops = passes * 2 * m * k * n * (
                        module.groups if type(module).__name__ == "Conv2d" else 1)
                work[key] = ("flop", flops) if flops else ("byte", traffic)
            return out
        return wrapper

    shapes = input_shapes(model, step)
    for layer, module in leaves:
        label = f"{layer} ({type(module).__name__}{algorithm(module, shapes.get(id(module)))})"
        labels[id(module)] = (label, module)
    labels[id(opt)] = ("optimizer", opt)
    originals = {(cls, phase): (getattr(cls, phase), cls.__dict__.get(phase))
                 for cls in {type(m) for _, m in leaves} | {type(opt)}
                 for phase in ("forward", "forward_relu", "backward", "step")
                 if hasattr(cls, phase)}
    for (cls, phase), (fn, _) in originals.items():
        setattr(cls, phase, timed(phase, fn))
    try:
        step()
        totals.clear()
        start = CLOCK[0]()
        for _ in range(steps):
            step()
        wall = (CLOCK[0]() - start) / steps
    finally:
        for (cls, phase), (_, own) in originals.items():
            if own is None:
                delattr(cls, phase)
            else:
                setattr(cls, phase, own)
    peaks = {shape: gemm_gflops(*shape) for shape in set(gemm_shapes.values())}
    bandwidth = copy_bandwidth(clock=CLOCK[0])
    print(f"\n  ermlab, where the time goes ({steps} steps, ms per step; step {wall * 1e3:.1f}; "
          f"GEMM peak = NumPy float32 matmul at the layer's forward GEMM shape, this run; "
          f"copy bandwidth {bandwidth:.1f} GB/s):")
    print(f"    {'layer':<44} {'phase':<9} {'ms':>8}  {'share':>6}  achieved   bound")
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    for (label, phase), seconds in rows:
        ms = seconds / steps * 1e3
        if ms < 0.05:
            continue
        unit, amount = work.get((label, phase), ("byte", 0))
        rate = amount / (seconds / steps) / 1e9
        if unit == "flop":
            m, k, n = gemm_shapes[label]
            speed = f"{rate:6.1f} GFLOP/s  {peaks[gemm_shapes[label]]:5.1f} ({m}×{k}×{n})"
        elif amount:
            speed = f"{rate:6.1f} GB/s     {bandwidth:5.1f}"
        else:
            speed = ""
        print(f"    {label:<44} {phase:<9} {ms:8.2f}  {100 * ms / (wall * 1e3):5.1f} %  {speed}")
    rest = wall - sum(totals.values()) / steps
    print(f"    {'loss, zero_grad, Python glue':<54} {rest * 1e3:8.2f}  "
          f"{100 * rest / wall:5.1f} %")
    kinds: dict[tuple[str, str], float] = defaultdict(float)
    for (label, phase), seconds in totals.items():
        kinds[(label.rsplit("(", 1)[-1].rstrip(")"), phase)] += seconds / steps * 1e3
    print("  by kind of layer (ms per step):")
    for (kind, phase), ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {kind:<44} {phase:<9} {ms:8.2f}  {100 * ms / (wall * 1e3):5.1f} %")


def profile_torch(name: str, steps: int) -> None:
    import torch

    step = torch_step(name)
    step()
    plain = time_per_step(step, steps, warmup=0, clock=CLOCK[0])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = CLOCK[0]()
        for _ in range(steps):
            step()
        profiled = (CLOCK[0]() - start) / steps
    print(f"\n  PyTorch, top operators ({steps} steps, self CPU time; the profiler's own cost: "
          f"{profiled * 1e3:.1f} ms a profiled step against {plain * 1e3:.1f} without, so "
          "compare shares, not times):")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    print("    " + table.replace("\n", "\n    "))


def main() -> None:
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (with --threads 1, far less "
                             "sensitive to other processes than wall time)")
    parser.add_argument("--only", choices=sorted(ONLY), default=None)
    parser.add_argument("--batch", type=int, default=BATCH, help="batch size (default 128)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for both frameworks, and ermlab's lanes "
                             "(ERMLAB_NUM_THREADS; default: their own)")
    args = parser.parse_args()
    BATCH = args.batch
    CLOCK[0] = time.process_time if args.clock == "cpu" else time.perf_counter
    import torch

    if args.threads:
        from threadpoolctl import threadpool_limits

        os.environ["ERMLAB_NUM_THREADS"] = str(args.threads)  # ermlab's lanes (ermlab.threads)
        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)

    print(f"batch {BATCH}, float32, SGD momentum 0.9; numpy {np.__version__}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"{args.clock} clock")
    print(f"BLAS: {blas_kernel()}")
    print("epoch time = median time per step × batches per epoch (an estimate from "
          f"{args.repeats} rounds × {args.steps} timed steps)")
    for name, (_, _, n_train) in CASES.items():
        if not name.startswith(ONLY[args.only] if args.only else DEFAULT):
            continue
        candidates = {"ermlab": ermlab_step(name)[0], "pytorch": torch_step(name)}
        times: dict[str, list[float]] = {k: [] for k in candidates}
        for _ in range(args.repeats):
            for key, step in candidates.items():
                times[key].append(time_per_step(step, args.steps, warmup=2, clock=CLOCK[0]))
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
