"""ermlab's pool of threads in whole training steps: hand-offs, spinning, and Linear's lanes.

Run by hand (not a test):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/pool.py \
        [--threads 2] [--rounds 10] [--only lenet vgg resnet20]

The networks and steps of ``benchmarks/cnn.py`` (batch 128, SGD with momentum). Every
comparison is paired: the variants alternate within one process, round after round, and
the ratio printed is the median over rounds of (variant's median step) / (reference's),
so that the machine's drifting speed touches both alike. Parts:

1. Hand-off per parallel region (LeNet-5): ``ermlab.threads.run_lanes`` is wrapped to
   time, per region, how long after the region began the worker started its lane, and
   how long after the last lane ended the caller went on; the pool asleep between lanes
   (``SPIN_SECONDS = 0``) against awake (the default). With ResNet-20 among ``--only``,
   its regions too, by the function of the calling lane (the layer code that made it).
2. Whole steps, pool asleep → awake, for each network.
3. LeNet-5 with its ``Linear`` layers on BLAS's own threads (``lanes=False``, a hand-built
   network's default): asleep, awake, and awake without ``threads.rest()`` (OpenBLAS's
   threads spin after each GEMM too).
4. The small VGG's ``Linear`` layers on BLAS's own threads against in lanes (the zoo's
   choice).

Measured (AMD EPYC Zen 5 VM, 2 vCPUs, Linux's ``haltpoll`` idle driver polling 50 µs,
2026-12-02), ResNet-20's 98 regions a step: the worker started its lane 30–100 µs after
the region began in one run (median 89; convolutions 60–100, batch norm 37–48; 5.8 ms a
step in all) and 52–145 µs in a slower state of the machine (10 ms a step): the caller's
Python before its kernel (the layer's wrapper, Numba's dispatch of 10–20 arguments),
then the worker's wait for the GIL, asleep. Handing the worker its lane from inside the
batch-norm kernels (``threads.Handoff``, as the optimizers do) took their regions' starts
from 48 to 39 µs and from 37 to 28: the rest is the Python on both sides of the hand-off,
so it was not kept. Nor for the convolutions: from inside Winograd's and the direct
forward kernels the hand-off took their starts from 62–86 to 36–67 µs, but the direct
forward's calling lane ran ~240 µs longer with it (2.42–2.48 → 2.66–2.69 ms; its kernel
alone, one thread, 1–3 % slower compiled with the hand-off's arguments), and the step's
regions summed to the same time (two alternating runs each). Part 3 there: LeNet-5 with
its ``Linear`` layers spinning on BLAS's threads and the pool spinning too (no ``rest()``)
took 1.97× the time; part 4, the small VGG's heads in lanes 0.68× BLAS's threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common import blas_kernel

NETWORKS = {"lenet": "LeNet-5 28×28×1", "vgg": "small VGG 32×32×3",
            "resnet20": "ResNet-20 32×32×3"}
STEPS = {"lenet": 20, "vgg": 4, "resnet20": 3}


def paired(step, variants: dict, rounds: int, steps: int) -> dict:
    """name → median over rounds of the variant's median step time (s), and the ratios
    to the first variant (median of the per-round ratios). ``variants``: name → a call
    that switches the variant on."""
    names = list(variants)
    for name in names:
        variants[name]()
        for _ in range(2):
            step()
    times: dict = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 else names[::-1]):
            variants[name]()
            samples = []
            for _ in range(steps):
                start = time.perf_counter()
                step()
                samples.append(time.perf_counter() - start)
            times[name].append(statistics.median(samples))
    base = times[names[0]]
    return {name: (statistics.median(t), statistics.median(a / b for a, b in zip(t, base)))
            for name, t in times.items()}


def show(title: str, results: dict) -> None:
    print(f"  {title}: " + "  ".join(f"{name} {t * 1e3:.1f} ms ({ratio:.3f})"
                                     for name, (t, ratio) in results.items()))


def lane_kind(call) -> str:
    """The function a lane's call runs (the layer's code that made it), for the table."""
    for cell in call.__closure__ or ():
        value = cell.cell_contents
        value = getattr(value, "func", value)
        if callable(value) and hasattr(value, "__qualname__"):
            return value.__qualname__
    return getattr(call, "__qualname__", "?")


def handoffs(threads_module, conv_module, linear_module, step, steps: int,
             kinds: dict | None = None) -> tuple:
    """(worker start, caller tail) medians in µs over the parallel regions of ``steps``
    steps, and the regions per step; ``kinds``: filled with each kind of region's
    (worker start, region) seconds, by the function of its calling lane (``lane_kind``)."""
    real = threads_module.run_lanes
    marks: list = []
    kinds = {} if kinds is None else kinds

    def timed(calls, blas=True, awake=True):
        if len(calls) == 1 or threads_module.in_worker():
            return real(calls, blas, awake)
        ends: dict = {}

        def wrap(k, call):
            def run():
                ends[k, 0] = time.perf_counter()
                out = call()
                ends[k, 1] = time.perf_counter()
                return out
            return run

        begin = time.perf_counter()
        out = real([wrap(k, call) for k, call in enumerate(calls)], blas, awake)
        end = time.perf_counter()
        marks.append((ends[1, 0] - begin, end - max(ends[k, 1] for k in range(len(calls)))))
        kinds.setdefault(lane_kind(calls[0]), []).append((ends[1, 0] - begin, end - begin))
        return out

    modules = (threads_module, conv_module, linear_module)
    for module in modules:
        module.run_lanes = timed
    try:
        for _ in range(3):
            step()
        marks.clear()
        kinds.clear()
        for _ in range(steps):
            step()
    finally:
        for module in modules:
            module.run_lanes = real
    late = statistics.median(m[0] for m in marks) * 1e6
    tail = statistics.median(m[1] for m in marks) * 1e6
    return late, tail, len(marks) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", nargs="*", choices=list(NETWORKS), default=list(NETWORKS))
    args = parser.parse_args()
    os.environ["ERMLAB_NUM_THREADS"] = str(args.threads)
    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)

    from cnn import ermlab_step

    from ermlab import nn, threads
    from ermlab.nn import conv, linear

    spin = threads.SPIN_SECONDS
    print(f"{args.threads} threads, {args.rounds} paired rounds; SPIN_SECONDS {spin}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"BLAS: {blas_kernel()}")

    def spinning(seconds):
        return lambda: setattr(threads, "SPIN_SECONDS", seconds)

    step, _, _ = ermlab_step(NETWORKS["lenet"])
    print("1. hand-off per parallel region, LeNet-5 (µs, median over the regions):")
    for label, seconds in (("asleep", 0.0), ("awake", spin)):
        threads.SPIN_SECONDS = seconds
        late, tail, regions = handoffs(threads, conv, linear, step, 40)
        print(f"  pool {label}: the worker starts {late:.0f} after the region begins, "
              f"the caller goes on {tail:.0f} after the last lane ends "
              f"({regions:.0f} regions per step)")
    threads.SPIN_SECONDS = spin
    if "resnet20" in args.only:
        step, _, _ = ermlab_step(NETWORKS["resnet20"])
        kinds: dict = {}
        late, tail, regions = handoffs(threads, conv, linear, step, 5, kinds)
        print(f"  ResNet-20, pool awake: the worker starts {late:.0f} after the region begins, "
              f"the caller goes on {tail:.0f} after ({regions:.0f} regions per step); by the "
              "calling lane's function, per step: regions, median start (µs), Σ starts, "
              "Σ regions (ms)")
        for kind, rows in sorted(kinds.items(), key=lambda item: -sum(r[1] for r in item[1])):
            starts, spans = [r[0] for r in rows], [r[1] for r in rows]
            print(f"    {kind[:48]:48s} {len(rows) / 5:4.0f} "
                  f"{statistics.median(starts) * 1e6:7.1f} {sum(starts) / 5 * 1e3:7.2f} "
                  f"{sum(spans) / 5 * 1e3:8.2f}")

    print("2. whole steps, pool asleep → awake (ratio to asleep):")
    for key in args.only:
        step, _, _ = ermlab_step(NETWORKS[key])
        show(NETWORKS[key], paired(step, {"asleep": spinning(0.0), "awake": spinning(spin)},
                                   args.rounds, STEPS[key]))
    threads.SPIN_SECONDS = spin

    print("3. LeNet-5, Linear layers on BLAS's own threads (ratio to asleep):")
    step, model, _ = ermlab_step(NETWORKS["lenet"])
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.lanes = False
    real_rest = threads.rest

    def variant(seconds, rest):
        def switch():
            threads.SPIN_SECONDS = seconds
            conv.rest = linear.rest = rest
        return switch

    show("LeNet-5", paired(step, {"asleep": variant(0.0, real_rest),
                                  "awake": variant(spin, real_rest),
                                  "awake, no rest()": variant(spin, lambda: None)},
                           args.rounds, STEPS["lenet"]))
    conv.rest = linear.rest = real_rest
    threads.SPIN_SECONDS = spin

    print("4. small VGG, Linear layers on BLAS's own threads → in lanes (ratio to BLAS's):")
    step, model, _ = ermlab_step(NETWORKS["vgg"])
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]

    def lanes(on):
        return lambda: [setattr(m, "lanes", on) for m in heads]

    show("small VGG", paired(step, {"BLAS's threads": lanes(False), "lanes": lanes(True)},
                             args.rounds, STEPS["vgg"]))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
