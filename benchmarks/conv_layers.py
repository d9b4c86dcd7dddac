"""Forward + backward of single convolution and pooling layers, float32, batch 128: ermlab vs
PyTorch, plus a profile of where ermlab's time goes.

Run by hand (not a test):  python benchmarks/conv_layers.py [--repeats 7] [--steps 10]
                                                    [--threads N] [--no-profile] [--only TEXT]

3×3 stride-1 layers with enough channels run Winograd's F(2×2, 3×3) by default, layers with
fewer direct summation (``Conv2d(algorithm="auto")``, with Numba); the rows marked "the
same, im2col" run the same layer with ``algorithm="im2col"``. The profile below always shows
the im2col stages.

Cases: LeNet-5's layers on 28×28 inputs (C1 5×5 1→6 'same', S2 2×2 max, C3 5×5 6→16,
S4 2×2 max, and average pooling for the seeds' subsampling), the small VGG's 3×3 32→32
on 32×32 and 64→64 on 16×16, a VGG/ResNet-style 3×3 64→64 convolution on 32×32, the
3×3 convolutions of ResNet-20 (``benchmarks/cnn.py``: 16→16 on 32×32, 16→32 with stride 2,
32→32 on 16×16, 32→64 with stride 2, 64→64 on 8×8), a narrow layer on a small plane (16→32
on 8×8, VGG-11-BN at 1/8 width: Winograd under "auto", and direct), 3×3 max pooling with stride 2
(ResNet-18's stem) and stride 1 (an inception module's pooling branch), 3×3 average
pooling with stride 2, ResNeXt's last 1×1 shortcut (1024→2048 with stride 2 on 4×4: 2×2
outputs a sample), and depthwise 3×3 convolutions (groups = channels: 512 on 4×4, 256
with stride 2 on 16×16). The first convolution skips
its input gradient (``input_grad=False``; torch: the input does not require grad). Rounds
alternate between the two frameworks so that machine load affects both alike; medians
over rounds are printed with the ratio ermlab / PyTorch (< 1 means ermlab is faster).

The profile splits ermlab's Conv2d into its im2col stages (padding + im2col copy, forward GEMM,
output copy + bias, ∂L/∂Y layout, weight GEMM, bias sum, and column GEMM + col2im
or, for stride 1, the transposed convolution that gives ∂L/∂x) by
running the layer's own helpers one at a time on the whole batch (the layer's bprop runs
them on blocks of samples, so the sum differs from the layer's own time; stride-1 layers
with ≥ 16 input channels take the shifted-copy path instead, whose time is the layer's
own).

On a shared machine whose cores are busy, multithreaded BLAS and OpenMP spin-wait for
descheduled threads and a 2-thread GEMM can run 10–50× slower than usual; ``--threads 1``
(OpenBLAS through threadpoolctl, and torch) gives stable ratios there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from common import blas_kernel

from ermlab import nn

BATCH = 128

def conv(name: str, shape: tuple, c: int, o: int, k: int, input_grad: bool = True,
         also: str | None = None, **options) -> list:
    """The case of ``nn.Conv2d(c, o, k, **options)`` on inputs of ``shape`` (its torch op from
    the same options) and, with ``also``, the row after it: the same layer with
    ``algorithm=also``."""
    op = dict(kind="conv", padding=options.get("padding", 0),
              **{key: options[key] for key in ("stride", "groups") if key in options})
    rows = [(name, lambda: nn.Conv2d(c, o, k, rng=0, **options), shape, input_grad, op)]
    if also is not None:
        rows.append((f"  the same, {also}",
                     lambda: nn.Conv2d(c, o, k, rng=0, algorithm=also, **options), shape,
                     input_grad, op))
    return rows


# name, layer factory, input shape (without batch), input_grad, torch op
CASES = [
    *conv("C1 conv 5x5 1->6 pad 2, 28x28", (1, 28, 28), 1, 6, 5, input_grad=False,
          also="im2col", padding=2),
    ("S2 maxpool 2x2, 6x28x28", lambda: nn.MaxPool2d(2), (6, 28, 28), True,
     dict(kind="max", kernel=2)),
    ("S2 avgpool 2x2, 6x28x28", lambda: nn.AvgPool2d(2), (6, 28, 28), True,
     dict(kind="avg", kernel=2)),
    *conv("C3 conv 5x5 6->16, 14x14", (6, 14, 14), 6, 16, 5),
    ("S4 maxpool 2x2, 16x10x10", lambda: nn.MaxPool2d(2), (16, 10, 10), True,
     dict(kind="max", kernel=2)),
    *conv("conv 3x3 32->32 pad 1, 32x32 (small VGG)", (32, 32, 32), 32, 32, 3, also="im2col",
          padding=1),
    *conv("conv 3x3 64->64 pad 1, 16x16 (small VGG)", (64, 16, 16), 64, 64, 3, also="im2col",
          padding=1),
    *conv("conv 3x3 64->64 pad 1, 32x32", (64, 32, 32), 64, 64, 3, also="im2col", padding=1),
    *conv("conv 3x3 16->16 pad 1, 32x32 (ResNet-20)", (16, 32, 32), 16, 16, 3, also="im2col",
          padding=1),
    *conv("conv 3x3 16->32 s2 pad 1, 32x32 (ResNet-20)", (16, 32, 32), 16, 32, 3, stride=2,
          padding=1),
    *conv("conv 3x3 32->32 pad 1, 16x16 (ResNet-20)", (32, 16, 16), 32, 32, 3, padding=1),
    *conv("conv 3x3 32->64 s2 pad 1, 16x16 (ResNet-20)", (32, 16, 16), 32, 64, 3, stride=2,
          padding=1),
    *conv("conv 3x3 64->64 pad 1, 8x8 (ResNet-20)", (64, 8, 8), 64, 64, 3, padding=1),
    *conv("conv 3x3 16->32 pad 1, 8x8 (VGG-11-BN at 1/8 width)", (16, 8, 8), 16, 32, 3,
          also="direct", padding=1),
    ("maxpool 3x3 s2 p1, 64x32x32", lambda: nn.MaxPool2d(3, 2, 1), (64, 32, 32), True,
     dict(kind="max", kernel=3, stride=2, padding=1)),
    ("maxpool 3x3 s1 p1, 96x32x32 (inception branch)", lambda: nn.MaxPool2d(3, 1, 1),
     (96, 32, 32), True, dict(kind="max", kernel=3, stride=1, padding=1)),
    ("avgpool 3x3 s2 p1, 64x32x32", lambda: nn.AvgPool2d(3, 2, 1), (64, 32, 32), True,
     dict(kind="avg", kernel=3, stride=2, padding=1)),
    *conv("conv 1x1 1024->2048 s2, 4x4 (ResNeXt's last shortcut)", (1024, 4, 4), 1024, 2048,
          1, stride=2),
    *conv("depthwise 3x3 512 pad 1, 4x4 (MobileNet's last)", (512, 4, 4), 512, 512, 3,
          also="im2col", padding=1, groups=512),
    *conv("depthwise 3x3 256 s2 pad 1, 16x16", (256, 16, 16), 256, 256, 3, also="im2col",
          stride=2, padding=1, groups=256),
]


def ermlab_step(factory, shape, input_grad, rng):
    layer = factory()
    x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    g = rng.standard_normal(layer.forward(x).shape).astype(np.float32)

    def step():
        layer.forward(x)
        layer.zero_grad()
        layer.backward(g, input_grad=input_grad)

    return step


def torch_step(layer, shape, input_grad, spec, rng):
    import torch

    F = torch.nn.functional
    x = torch.from_numpy(rng.standard_normal((BATCH, *shape)).astype(np.float32))
    x.requires_grad_(input_grad)
    if spec["kind"] == "conv":
        w = torch.from_numpy(layer.weight.data.copy()).requires_grad_()
        b = torch.from_numpy(layer.bias.data.copy()).requires_grad_()

        def op(t):
            return F.conv2d(t, w, b, stride=spec.get("stride", 1), padding=spec["padding"],
                            groups=spec.get("groups", 1))

        params = [w, b]
    else:
        pool = F.max_pool2d if spec["kind"] == "max" else F.avg_pool2d
        kw = dict(stride=spec.get("stride"), padding=spec.get("padding", 0))

        def op(t):
            return pool(t, spec["kernel"], **kw)

        params = []
    g = torch.randn(op(x).shape)

    def step():
        for p in [*params, x]:
            p.grad = None
        op(x).backward(g)

    return step


def median_time(step, steps: int) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per call."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps


def selected(only: str | None) -> list:
    """The cases whose name holds ``only`` (any case), each with its "the same, …" rows;
    all of them for None."""
    if only is None:
        return CASES
    chosen, keep = [], False
    for case in CASES:
        if not case[0].startswith("  "):  # a layer, not a variant of the one above
            keep = only.lower() in case[0].lower()
        if keep:
            chosen.append(case)
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no case; the cases: "
                         + "; ".join(c[0] for c in CASES if not c[0].startswith("  ")))
    return chosen


def compare(cases: list, repeats: int, steps: int) -> None:
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; batch {BATCH}, "
          f"float32, forward + backward, ms per call (median of {repeats} rounds), wall "
          f"clock and process CPU time; load average {os.getloadavg()[0]:.1f}")
    print(f"BLAS: {blas_kernel()}")
    print(f"{'layer':40s} {'ermlab':>9s} {'torch':>9s} {'ratio':>7s} {'CPU ms':>9s} "
          f"{'torch':>9s} {'ratio':>7s}")
    for name, factory, shape, input_grad, spec in cases:
        rng = np.random.default_rng(0)
        ours = ermlab_step(factory, shape, input_grad, rng)
        theirs = torch_step(factory(), shape, input_grad, spec, rng)
        ours(), theirs()
        t_ours, t_theirs = [], []
        for _ in range(repeats):
            t_ours.append(median_time(ours, steps))
            t_theirs.append(median_time(theirs, steps))
        a, b = (statistics.median(t[0] for t in ts) for ts in (t_ours, t_theirs))
        c, d = (statistics.median(t[1] for t in ts) for ts in (t_ours, t_theirs))
        print(f"{name:40s} {1e3 * a:9.2f} {1e3 * b:9.2f} {a / b:7.2f} {1e3 * c:9.2f} "
              f"{1e3 * d:9.2f} {c / d:7.2f}")


def profile_conv(name, factory, shape, input_grad, repeats: int) -> None:
    """Time each stage of Conv2d's forward and backward, using the layer's own helpers."""
    layer = factory()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
    y = layer.forward(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    n = x.shape[0]
    state = {}

    def im2col():
        state["cols"] = layer._im2col(np, x)

    _, _, oh, ow, cw = layer._layout(x.shape)

    def gemm():
        state["y"] = np.matmul(layer._weight_matrix(), state["cols"])

    def output():
        out = np.empty((n, layer.out_channels, oh, ow), np.float32)
        y_cols = state["y"].reshape(n, layer.out_channels, oh, cw)[..., :ow]
        np.add(y_cols, layer.bias.data[:, None, None], out=out)

    def grad_columns():
        state["g"] = layer._grad_columns(np, g, 0, n, n)

    def weight_gemm():
        np.matmul(state["cols"], state["g"].transpose(0, 1, 3, 2)).sum(axis=0)

    def bias_sum():
        np.sum(g, axis=(0, 2, 3))

    def column_gemm():
        state["d"] = np.matmul(layer._weight_matrix().transpose(0, 2, 1), state["g"])

    hp, wp = layer._layout(x.shape)[:2]
    slack = (layer.kernel_size[1] - 1) * layer.dilation[1]

    def col2im():
        grad = np.zeros(n * x.shape[1] * hp * wp + slack, np.float32)
        layer._col2im(np, state["d"], grad, 0, n, x.shape)

    def transposed_conv():
        layer._transposed(g).forward(g)

    def step():
        layer.forward(x)
        layer.zero_grad()
        layer.backward(g, input_grad=input_grad)

    stages = [("pad + im2col copy", im2col), ("forward GEMM", gemm),
              ("output copy + bias", output), ("dL/dY layout", grad_columns),
              ("weight GEMM", weight_gemm), ("bias sum", bias_sum)]
    if input_grad and layer._transposed(g) is not None:
        stages += [("dL/dx: transposed conv", transposed_conv)]
    elif input_grad:
        stages += [("column GEMM", column_gemm), ("col2im", col2im)]
    times = {}
    for label, fn in stages:
        fn()
        times[label] = statistics.median(_once(fn) for _ in range(repeats))
    total = sum(times.values())
    step()
    whole = statistics.median(_once(step) for _ in range(repeats))
    print(f"\nprofile: {name} (stages sum to {1e3 * total:.2f} ms; the layer's forward + "
          f"backward takes {1e3 * whole:.2f} ms, its bprop in blocks of samples)")
    for label, t in times.items():
        print(f"  {label:26s} {1e3 * t:8.2f} ms  {100 * t / total:5.1f} %")


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for OpenBLAS and torch, and ermlab's lanes "
                             "(ERMLAB_NUM_THREADS; default: leave as they are)")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="only the layers whose name holds TEXT (e.g. 'ResNet-20', "
                             "'s2', 'C3'), with their im2col rows")
    args = parser.parse_args()
    cases = selected(args.only)
    if args.threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        os.environ["ERMLAB_NUM_THREADS"] = str(args.threads)  # ermlab's lanes (ermlab.threads)
        threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)
    compare(cases, args.repeats, args.steps)
    if not args.no_profile:
        for name, factory, shape, input_grad, spec in cases:
            if spec["kind"] == "conv":
                profile_conv(name, factory, shape, input_grad, args.repeats)


if __name__ == "__main__":
    main()
