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
shared: quote the ratios of one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ermlab import optim
from ermlab.nn.models import mlp

CASES = [
    ("SGD", dict(lr=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.9)),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)),
    ("Adagrad", dict()),
    ("Adadelta", dict()),
    ("RMSprop", dict()),
    ("RMSprop", dict(momentum=0.9, centered=True)),
    ("Adam", dict()),
    ("Adam", dict(amsgrad=True)),
    ("AdamW", dict()),
    ("Adamax", dict()),
    ("NAdam", dict()),
    ("HeavyBall", dict(lr=0.01)),
    ("NAGC", dict(lr=0.01)),
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
          f"{'ermlab 1thr':>11} {'torch 1thr':>10} {'ratio':>7}")
    ours, ours_one = {}, {}
    for table, n_threads in ((ours, None), (ours_one, 1)):
        for name, options in CASES:
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
        for name, options in CASES:
            if hasattr(torch.optim, name):
                table[name, str(options)] = torch_step_ms(torch, name, options, arrays, grads,
                                                          args.repeats)
    if torch is not None:
        torch.set_num_threads(threads)
    for name, options in CASES:
        key, nan = (name, str(options)), float("nan")
        label = name + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")
        t2, t1 = theirs.get(key, nan), one_thread.get(key, nan)
        print(f"{label:<42} {ours[key]:10.3f} {_ms(t2)} {_ratio(ours[key], t2)} "
              f"{ours_one[key]:11.3f} {_ms(t1)} {_ratio(ours_one[key], t1)}")
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
