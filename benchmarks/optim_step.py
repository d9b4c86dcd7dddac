"""Time one optimizer update over the parameters of the 784-512-256-10 MLP (float32).

ermlab's optimizers against torch.optim with ``foreach=True`` in the same run,
at 1 and at 2 threads, and against the memory-bandwidth bound. For each
optimizer the variants (ermlab and torch, 1 and 2 threads; ``--numpy-path``
adds ermlab's NumPy path, ``opt.fused = False``, the figure before the fused
kernels) are timed in rounds: each round times ``--steps`` steps of every
variant (median per variant), the order reversed every other round, with a
20 ms pause after each variant so torch's OpenMP workers stop spinning before
the next one is timed. Ratios are the median over rounds of the round's
ratio (the two were timed next to each other); ``cpu`` is the same ratio in
process CPU time at 1 thread (the steadier figure on a busy machine). The
kernel in use is printed: the fused Numba kernels (``ermlab.optim._kernels``)
or, with ``ERMLAB_FUSED=0`` or without Numba, NumPy ufuncs + BLAS ``?axpy``;
and the BLAS (threadpoolctl). Run by hand, with the OpenBLAS overrides of
these machines unset (see PERFORMANCE.md):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/optim_step.py --numpy-path
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ERMLAB_FUSED=0 python benchmarks/optim_step.py

The gradients are fixed random arrays (no model work is timed). The machine is
shared: quote the ratios of one run, not absolute times across runs. ``bound``
is the memory-bandwidth bound: the arrays a step must read and write (θ, g and
each state array read; θ and each state array written) at the copy bandwidth
measured in the same run (np.copyto over arrays of the model's size, split in
halves over two threads for the 2-thread bound). ``lanes``: how many threads
ermlab's 2-thread step used (``optim.inplace`` keeps cheap steps on one).

Fused kernels (Intel Xeon @ 2.80GHz, 2 cores, OpenBLAS 0.3.31 SkylakeX,
numba 0.68.1; the machine was saturated by other jobs, load average 27–29
on 2 cores, so absolute times are several times the idle ones and the
2-thread columns measure the scheduler, not the code). ms per step, 1 thread:

    optimizer                fused  NumPy path  torch   ratio (wall, cpu)  ×bound
    SGD                      0.267  0.279       0.307   0.69, 0.73         1.02
    SGD momentum             0.616  1.013       1.521   0.39, 0.48         1.42
    SGD nesterov             0.719  1.744       3.280   0.25, 0.45         1.66
    Adagrad                  0.681  18.68       19.66   0.04, 0.24         1.57
    Adadelta                 1.139  41.13       39.39   0.03, 0.20         1.88
    RMSprop                  0.703  11.41       8.788   0.08, 0.28         1.62
    RMSprop centered+mom.    1.265  29.98       20.49   0.05, 0.29         1.62
    Adam                     1.028  18.80       12.48   0.07, 0.30         1.69
    Adam amsgrad             1.241  6.961       17.81   0.11, 0.32         1.59
    AdamW                    0.939  18.14       8.437   0.12, 0.24         1.55
    Adamax                   0.939  7.596       7.742   0.13, 0.29         1.55
    NAdam                    1.220  24.94       22.49   0.07, 0.28         2.01
    HeavyBall                0.515  4.509       -       -                  1.19
    NAGC                     0.485  3.179       -       -                  1.12

Every rule ≤ 1.0× torch at 1 thread in wall and CPU time (CPU-time ratios
0.20–0.73: the fused step does one pass where NumPy made 3–12 and torch's
foreach 3–10). Against the bound the fused steps measured 1.0–2.0× under this
load; the NumPy path's passes are 3–40× here (each pass a multi-MB sweep
competing for the cache with the other jobs). At 2 threads torch's OpenMP
team took 20–400 ms per step under this load (threads spinning at barriers on
oversubscribed cores) and ermlab's second lane 0.3–5 ms, so no 2-thread ratio
from this run means anything; the 2-thread comparison needs an idle machine
(the commands above).

Before the fused kernels, the NumPy path (AMD EPYC class, 2 cores, OpenBLAS
SkylakeX kernel; the machine was heavily loaded, load average 4–7 on 2 cores,
so absolute times are 2–5× the idle ones and the 2-thread torch column is the
least reliable).
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
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import blas_kernel

from ermlab import optim
from ermlab.nn.models import mlp

SIZES = [784, 512, 256, 10]
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


def ermlab_optimizer(name, options, grads, threads: int, fused: bool):
    params = mlp(SIZES, rng=0, dtype=np.float32).parameters()
    for p, g in zip(params, grads):
        p.grad[...] = g
    opt = getattr(optim, name)(params, **options)
    opt.threads, opt.fused = threads, fused
    return opt


def torch_optimizer(torch, name, options, arrays, grads):
    if not hasattr(torch.optim, name):
        return None
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    return getattr(torch.optim, name)(tensors, foreach=True, **options)


def timed_steps(step, steps: int) -> tuple[float, float]:
    """Median wall seconds of one ``step()`` over ``steps`` calls (after 3 untimed), and
    process CPU seconds per step over them."""
    for _ in range(3):
        step()
    times = []
    cpu = time.process_time()
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (time.process_time() - cpu) / steps


def copy_bandwidth(n_floats: int, threads: int, repeats: int) -> float:
    """STREAM-like copy bandwidth, bytes/s (read + write), over ``n_floats`` float32, the
    arrays split in ``threads`` equal parts copied at once (np.copyto releases the GIL)."""
    src, dst = np.ones(n_floats, np.float32), np.empty(n_floats, np.float32)
    cuts = np.linspace(0, n_floats, threads + 1).astype(int)
    parts = [(dst[a:b], src[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    pool = ThreadPoolExecutor(max(1, threads - 1))

    def copy() -> None:
        futures = [pool.submit(np.copyto, *part) for part in parts[1:]]
        np.copyto(*parts[0])
        for future in futures:
            future.result()

    seconds, _ = timed_steps(copy, repeats)
    pool.shutdown()
    return 2 * src.nbytes / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--numpy-path", action="store_true",
                        help="also time ermlab's NumPy path (opt.fused = False), 1 thread")
    parser.add_argument("--only", nargs="*", help="optimizer names to time (default: all)")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    arrays = [p.data for p in mlp(SIZES, rng=0, dtype=np.float32).parameters()]
    grads = [(1e-3 * rng.standard_normal(a.shape)).astype(np.float32) for a in arrays]
    total = sum(a.size for a in arrays)
    kernels = optim.inplace._fused_kernels()
    if kernels is not None:
        import numba

        kernel = f"fused Numba kernels (numba {numba.__version__}, optim._kernels)"
    else:
        kernel = "NumPy ufuncs + BLAS ?axpy (no Numba, or ERMLAB_FUSED=0)"
    print(f"one step over {len(arrays)} float32 tensors, {total:,} parameters; ermlab: "
          f"{kernel}; torch {torch.__version__ if torch else '-'} foreach=True; median of "
          f"{args.steps} steps per round, {args.rounds} rounds alternating in order")
    print(f"BLAS: {blas_kernel()}")
    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"(shared machine: noisy)")
    variants = [("ermlab", 1), ("torch", 1), ("ermlab", 2), ("torch", 2)]
    if args.numpy_path:
        variants.append(("numpy-path", 1))
    bandwidth = {n: copy_bandwidth(total, n, 200) for n in (1, 2)}
    cases = [c for c in CASES if not args.only or c[0] in args.only]
    rows = []
    for name, options, n_arrays in cases:
        opts = {}
        for who, n in variants:
            if who == "torch":
                opt = torch_optimizer(torch, name, options, arrays, grads) if torch else None
            else:
                opt = ermlab_optimizer(name, options, grads, n, who == "ermlab")
            if opt is not None:
                opts[who, n] = opt
        times = {key: [] for key in opts}
        cpu = {key: [] for key in opts}
        for r in range(args.rounds):
            order = list(opts) if r % 2 == 0 else list(opts)[::-1]
            for who, n in order:
                if who == "torch":
                    torch.set_num_threads(n)
                wall, per_step_cpu = timed_steps(opts[who, n].step, args.steps)
                times[who, n].append(wall)
                cpu[who, n].append(per_step_cpu)
                time.sleep(0.02)  # let torch's OpenMP workers stop spinning before the next
        lanes = sum(1 for lane in opts["ermlab", 2]._cached_layout[1] if lane)
        rows.append((name, options, n_arrays, times, cpu, lanes))
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    print_table(rows, bandwidth, total, args.numpy_path)
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    subnormal_table(arrays, grads, args.steps)


def _ratio(ours: list[float], theirs: list[float] | None) -> str:
    """Median over rounds of the round's ratio (the two were timed next to each other)."""
    if not theirs:
        return f"{'-':>6}"
    return f"{statistics.median(a / b for a, b in zip(ours, theirs)):6.2f}"


def print_table(rows, bandwidth, total: int, numpy_path: bool) -> None:
    print(f"\n{'optimizer':<40} {'1 thread: ermlab':>16} {'cpu':>6} {'torch':>7} {'ratio':>6} "
          f"{'bound':>6} {'×bound':>6} | {'2 threads: ermlab':>17} {'lanes':>5} {'torch':>7} "
          f"{'ratio':>6} {'bound':>6} {'×bound':>6}" + (" | numpy-path 1thr" if numpy_path else ""))
    ms = statistics.median
    for name, options, n_arrays, times, cpu, lanes in rows:
        label = name + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options
                        else "")
        cells = []
        for n in (1, 2):
            ours, theirs = times["ermlab", n], times.get(("torch", n))
            bound = n_arrays * 4 * total / bandwidth[n]
            torch_ms = f"{1e3 * ms(theirs):7.3f}" if theirs else f"{'-':>7}"
            extra = f" {lanes:5d}" if n == 2 else ""
            if n == 1:
                extra = f" {_ratio(cpu['ermlab', 1], cpu.get(('torch', 1)))}"
            cells.append(f"{1e3 * ms(ours):{16 if n == 1 else 17}.3f}{extra} {torch_ms} "
                         f"{_ratio(ours, theirs)} {1e3 * bound:6.3f} {ms(ours) / bound:6.2f}")
        line = f"{label:<40} {cells[0]} | {cells[1]}"
        if numpy_path:
            line += f" | {1e3 * ms(times['numpy-path', 1]):7.3f}"
        print(line)
    print(f"times in ms (median of the rounds' medians); ratio: ermlab/torch, median of the "
          f"rounds' ratios (cpu: of process CPU time per step, 1 thread); bound: the arrays a "
          f"step must read and write at the copy bandwidth measured here (np.copyto: "
          f"{bandwidth[1] / 1e9:.1f} GB/s on 1 thread, "
          f"{bandwidth[2] / 1e9:.1f} GB/s on 2); lanes: the threads ermlab's 2-thread step used "
          f"(cheap rules stay on one, see optim.inplace)")


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
        ms = 1e3 * timed_steps(opt.step, repeats)[0]
        fractions = []
        for key in ("exp_avg", "exp_avg_sq"):
            x = np.concatenate([opt.state[p][key].ravel() for p in params])
            fractions.append(np.mean((x != 0) & (np.abs(x) < tiny)))
        print(f"{eps:<6g} {flush_every:<12} {ms:9.3f} {fractions[0]:28.3f} {fractions[1]:6.3f}")


if __name__ == "__main__":
    main()
