"""BatchNorm2d and ReLU alone at ResNet-20's shapes: ermlab (NumPy path, kernels in 1 and in 2
lanes) against PyTorch CPU at 1 and 2 threads, float32, batch 128, same run.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/norm_relu.py [--rounds 15]

Shapes: the three stages of ResNet-20 on 32×32 (16×32×32, 32×16×16, 64×8×8 channels ×
pixels). Per shape and variant: batch norm forward + bprop (training mode, one call each,
as ``native_batch_norm`` + ``native_batch_norm_backward``), ReLU forward (torch:
``relu``) and ReLU bprop (torch: ``threshold_backward``), and batch norm then ReLU, forward
+ bprop (``bn+relu``: ermlab's ``Sequential(BatchNorm2d, ReLU)``, which runs the ReLU
inside the batch norm's passes, ``BatchNorm2d.forward_relu``; torch's two modules under
autograd), in ms. Rounds alternate between
the variants so that machine load affects all alike; the best (min) and the median of
``--rounds`` are printed, with the load average. ``numpy``: ``ERMLAB_FUSED=0``;
``lanes=k``: the Numba kernels with ``threads=k`` (the 2 lanes only where each gets
``LANE_MIN_BYTES``). These passes are memory-bound: each is compared with a copy of the
same bytes (the input and output of ReLU's forward) in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from common import blas_kernel

from ermlab import nn

SHAPES = [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8)]


def ermlab_cases(x: np.ndarray, g: np.ndarray, lanes: int | None):
    """name → call, for ermlab's batch norm and ReLU (NumPy path when ``lanes`` is None)."""
    bn, relu = nn.BatchNorm2d(x.shape[1]), nn.ReLU()
    bn.threads = relu.threads = lanes or 1
    fused = "0" if lanes is None else "1"

    def run(call):
        def timed():
            os.environ["ERMLAB_FUSED"] = fused
            return call()
        return timed

    relu.forward(x)
    pair = nn.Sequential(nn.BatchNorm2d(x.shape[1]), nn.ReLU())
    pair[0].threads = pair[1].threads = lanes or 1
    return {"bn f+b": run(lambda: (bn.forward(x), bn.backward(g))),
            "relu f": run(lambda: relu.forward(x)), "relu b": run(lambda: relu.backward(g)),
            "bn+relu": run(lambda: (pair.forward(x), pair.backward(g)))}


def torch_cases(x: np.ndarray, g: np.ndarray, threads: int):
    import torch

    xt, gt = torch.from_numpy(x), torch.from_numpy(g)
    yt = torch.relu(xt)
    bn = torch.nn.BatchNorm2d(x.shape[1])
    xr = xt.clone().requires_grad_(True)

    def with_threads(call):
        def timed():
            torch.set_num_threads(threads)
            return call()
        return timed

    def bn_step():
        xr.grad = None
        bn(xr).backward(gt)

    def pair_step():
        xr.grad = None
        torch.relu(bn(xr)).backward(gt)

    return {"bn f+b": with_threads(bn_step), "relu f": with_threads(lambda: torch.relu(xt)),
            "relu b": with_threads(lambda: torch.ops.aten.threshold_backward(gt, yt, 0)),
            "bn+relu": with_threads(pair_step)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    import torch

    print(f"float32; numpy {np.__version__}, torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; ms, best (median) of "
          f"{args.rounds} alternating rounds")
    print(f"BLAS: {blas_kernel()}")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32)
        g = rng.standard_normal(shape, dtype=np.float32)
        out = np.empty_like(x)
        variants = {"numpy": ermlab_cases(x, g, None), "lanes=1": ermlab_cases(x, g, 1),
                    "lanes=2": ermlab_cases(x, g, 2), "torch 1": torch_cases(x, g, 1),
                    "torch 2": torch_cases(x, g, 2),
                    "copy": {"relu f": lambda out=out, x=x: np.copyto(out, x)}}
        times = {(v, k): [] for v, cases in variants.items() for k in cases}
        for _ in range(args.rounds):
            for v, cases in variants.items():
                for k, call in cases.items():
                    start = time.perf_counter()
                    call()
                    times[(v, k)].append(time.perf_counter() - start)
        print(f"\n{shape}  (load {os.getloadavg()[0]:.1f})")
        for k in ("bn f+b", "relu f", "relu b", "bn+relu"):
            cells = [f"{v} {1e3 * min(t):6.2f} ({1e3 * statistics.median(t):.2f})"
                     for v in variants if (t := times.get((v, k)))]
            print(f"  {k:<7} " + "  ".join(cells))
    os.environ.pop("ERMLAB_FUSED", None)


if __name__ == "__main__":
    main()
