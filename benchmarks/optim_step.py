"""Time one optimizer update over the parameters of the 784-512-256-10 MLP (float32).

ermlab's optimizers against torch.optim with ``foreach=True`` in the same run;
prints the median time of one ``step()`` over repeated runs and the ratio
ermlab / torch: ermlab on its default threads (``ERMLAB_NUM_THREADS`` or the
CPU count; see ``ermlab.optim.inplace``) against torch on its default threads,
and ermlab with ``threads=1`` against torch on one thread. ermlab runs first,
before torch starts its thread pool (whose idle threads spin for a while).
Run by hand:

    python benchmarks/optim_step.py [--repeats 50]

The gradients are fixed random arrays (no model work is timed). The machine is
shared: quote the ratios of one run, not absolute times across runs. ``bound``
is the memory-bandwidth bound: the arrays a step must read and write (θ, g and
each state array read; θ and each state array written) at the copy bandwidth
measured in the same run (np.copyto, one thread).

Measured (AMD EPYC class, 2 cores, OpenBLAS SkylakeX kernel; the machine was
heavily loaded, load average 4–7 on 2 cores, so absolute times are 2–5× the
idle ones and the 2-thread torch column is the least reliable).
Before/after the BLAS ``?axpy`` change (``optim.inplace.axpy_``: y ← y + a·x
in one pass, one rounding, as torch's ``add_(x, alpha=a)``), one process,
1 thread, old and new steps interleaved 300× (ms, medians; torch foreach
1 thread in the same loop):

    SGD               new 0.468–0.631  old 0.737–0.943  torch 0.634–0.905  new/old 0.64–0.67
    SGD momentum      new 1.02–1.23    old 1.30–1.46    torch 1.31–1.63    new/old 0.79–0.84
    SGD nesterov      new 1.47         old 2.09         torch 2.02         new/old 0.70
    Adam              new 3.37–4.13    old 3.63–4.93    torch 3.80–5.44    new/old 0.79–0.93
    NAdam             new 5.09–6.23    old 6.09–7.43    torch 4.37–4.62    new/old 0.84
    Adamax            new 3.08         old 3.32         torch 3.46         new/old 0.93

This script after the change (load 4.4): ermlab 1 thread / torch 1 thread =
SGD 0.71, momentum 0.76, nesterov 0.71, Adam 0.69, NAdam 1.01, all others
0.70–0.94; at 2 threads 0.75–1.67 (torch's 2-thread pass ran under different
load). Against the bound (27.1 GB/s copy): SGD 0.89×, momentum 1.32×,
nesterov 1.77×, Adam 3.7×, NAdam 6.8× — the adaptive rules are still 3–7×
the bound: NumPy has no fused multiply-add of two arrays or fused
sqrt/divide, so they make 8–12 passes where the bound counts 5–9 arrays.
Tried and not kept: the ?axpy ending for Adagrad, Adadelta and RMSprop (no
measurable win), ``?rot`` for v ← β₂v + t (not in place through SciPy, 2×
slower), g·g before the (1 − β₂) factor (underflows tiny float32 gradients).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ermlab import optim
from ermlab.nn.models import mlp

# (optimizer, options, arrays of the parameter's size a step must at least read + write:
# θ, g and each state array read, θ and each state array written)
CASES = [
    ("SGD", dict(lr=0.01), 3),
    ("SGD", dict(lr=0.01, momentum=0.9), 5),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True), 5),
    ("Adagrad", dict(), 5),
    ("Adadelta", dict(), 7),
    ("RMSprop", dict(), 5),
    ("RMSprop", dict(momentum=0.9, centered=True), 9),
    ("Adam", dict(), 7),
    ("Adam", dict(amsgrad=True), 9),
    ("AdamW", dict(), 7),
    ("Adamax", dict(), 7),
    ("NAdam", dict(), 7),
    ("HeavyBall", dict(lr=0.01), 5),
    ("NAGC", dict(lr=0.01), 5),
]


def median_step_ms(opt, repeats: int) -> float:
    for _ in range(10):  # warm up: first steps allocate state, lay out blocks, start threads
        opt.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def torch_step_ms(torch, name, options, arrays, grads, repeats: int) -> float:
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    return median_step_ms(getattr(torch.optim, name)(tensors, foreach=True, **options), repeats)


def copy_bandwidth(n_floats: int, repeats: int) -> float:
    """STREAM-like copy bandwidth, bytes/s (read + write), over ``n_floats`` float32, one thread."""
    src = np.ones(n_floats, np.float32)
    dst = np.empty_like(src)
    times = []
    for _ in range(10 + repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times[10:])


def _ms(value: float) -> str:
    return f"{value:10.3f}" if value == value else f"{'-':>10}"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:7.2f}" if theirs == theirs else f"{'-':>7}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    arrays = [p.data for p in mlp([784, 512, 256, 10], rng=0, dtype=np.float32).parameters()]
    grads = [(1e-3 * rng.standard_normal(a.shape)).astype(np.float32) for a in arrays]
    total = sum(a.size for a in arrays)
    threads = torch.get_num_threads() if torch else "-"
    print(f"one step over {len(arrays)} float32 tensors, {total:,} parameters; median of "
          f"{args.repeats}; ermlab {optim.inplace.default_threads()} threads; torch "
          f"foreach=True, {threads} threads; shared machine: noisy")
    print(f"{'optimizer':<42} {'ermlab ms':>10} {'torch ms':>10} {'ratio':>7} "
          f"{'ermlab 1thr':>11} {'torch 1thr':>10} {'ratio':>7} {'bound ms':>9} {'1thr/bound':>10}")
    ours, ours_one = {}, {}
    for table, n_threads in ((ours, None), (ours_one, 1)):
        for name, options, _ in CASES:
            params = mlp([784, 512, 256, 10], rng=0, dtype=np.float32).parameters()
            for p, g in zip(params, grads):
                p.grad[...] = g
            opt = getattr(optim, name)(params, **options)
            opt.threads = n_threads or opt.threads
            table[name, str(options)] = median_step_ms(opt, args.repeats)
    theirs, one_thread = {}, {}
    for table, n_threads in ((theirs, threads), (one_thread, 1)):
        if torch is None:
            break
        torch.set_num_threads(n_threads)  # one pass per setting: the pool is not rebuilt per case
        for name, options, _ in CASES:
            if hasattr(torch.optim, name):
                table[name, str(options)] = torch_step_ms(torch, name, options, arrays, grads,
                                                          args.repeats)
    if torch is not None:
        torch.set_num_threads(threads)
    bandwidth = copy_bandwidth(total, args.repeats)
    for name, options, n_arrays in CASES:
        key, nan = (name, str(options)), float("nan")
        label = name + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")
        t2, t1 = theirs.get(key, nan), one_thread.get(key, nan)
        bound = 1e3 * n_arrays * 4 * total / bandwidth
        print(f"{label:<42} {ours[key]:10.3f} {_ms(t2)} {_ratio(ours[key], t2)} "
              f"{ours_one[key]:11.3f} {_ms(t1)} {_ratio(ours_one[key], t1)} {bound:9.3f} "
              f"{ours_one[key] / bound:10.2f}")
    print(f"bound: the arrays a step must read and write at the copy bandwidth measured here "
          f"(np.copyto, one thread): {bandwidth / 1e9:.1f} GB/s")
    subnormal_table(arrays, grads, args.repeats)


def subnormal_table(arrays, grads, repeats: int) -> None:
    """Adam with half the units dead (zero gradient, subnormal m and v): flush off vs on.

    The flush zeroes subnormals only (``ermlab.optim.inplace``); with the default
    ε = 1e-8 it may zero v as well, with ε = 0 only m (v still sets the step)."""
    print("\nAdam, half of each tensor's gradient zero and its m, v subnormal (1e-39):")
    print(f"{'eps':<6} {'flush_every':<12} {'ms/step':>9} {'subnormal fraction after: m':>28} "
          f"{'v':>6}")
    tiny = np.finfo(np.float32).tiny
    for eps, flush_every in ((1e-8, 0), (1e-8, 16), (1e-8, 1), (0.0, 16)):
        model = mlp([784, 512, 256, 10], rng=0, dtype=np.float32)
        params = model.parameters()
        opt = optim.Adam(params, eps=eps, flush_every=flush_every)
        for p, g in zip(params, grads):
            p.grad[...] = g
        opt.step()
        for p in params:
            half = p.data.size // 2
            p.grad.reshape(-1)[:half] = 0
            for key in ("exp_avg", "exp_avg_sq"):
                opt.state[p][key].reshape(-1)[:half] = 1e-39
        ms = median_step_ms(opt, repeats)
        fractions = []
        for key in ("exp_avg", "exp_avg_sq"):
            x = np.concatenate([opt.state[p][key].ravel() for p in params])
            fractions.append(np.mean((x != 0) & (np.abs(x) < tiny)))
        print(f"{eps:<6g} {flush_every:<12} {ms:9.3f} {fractions[0]:28.3f} {fractions[1]:6.3f}")


if __name__ == "__main__":
    main()
