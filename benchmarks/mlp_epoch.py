"""Seconds per training epoch of an MLP 784-512-256-10 with Adam, batch 128, float32:
ermlab vs PyTorch CPU vs scikit-learn's MLPClassifier, in the same run.

Run by hand (not a test):

    python benchmarks/mlp_epoch.py [--epochs 3] [--data fashion-mnist|synthetic]

Fashion-MNIST comes from ``ermlab.data.load`` (the Debian package
``dataset-fashion-mnist``, the cache, or a download); ``--data synthetic`` uses
random data of the same shape. Each framework trains ``--epochs`` epochs on
the same 60,000 examples with the same architecture, optimizer (Adam, lr 1e-3)
and batch size; the median epoch is reported, with test accuracy as a sanity
check, and the ratios to ermlab. The fraction of subnormal values in Adam's
first moment is printed at the end (see shared PERFORMANCE.md).

ermlab's epoch is what a user runs: ``Trainer.fit`` with Adam, batch 128 and
the 10,000 test examples as ``validation_data`` (evaluated after the epoch, as
``ermlab train`` does with its validation split), next to its own GEMM time:
the same matrix products with the same shapes and layouts — per step, x Wᵀ for
every layer, Gᵀ H for every weight gradient and G W for every input gradient
but the first layer's (ermlab skips it), then the validation forward pass in
blocks of 1024 — into preallocated outputs, nothing else. ``ermlab/GEMM`` is
the goal of issue 11 (≤ 1.25). The two alternate, round after round, and the
ratio is quoted as the median of the rounds' ratios, in wall-clock and in
process CPU time (the machine is shared: CPU time is the steadier figure at
``--threads 1``). A last, instrumented epoch says where the rest goes:
GEMMs, the rest of Linear (bias add, bias gradient), activations, loss,
optimizer step, zero_grad, batch gathering, validation, and the Trainer's
own loop and callbacks (what is left of the epoch's time). A last line gives what Adam's
steps would take with their arrays read from memory rather than the caches (28 bytes an
element at the bandwidth of a 64 MiB ``np.copyto``): where the optimizer's row nears it,
the GEMMs' traffic has pushed Adam's state out of the caches between steps.

Measured (issue 11; AMD EPYC Zen 5, 2 cores, ``--threads 2``, wall clock). This machine
runs in two states that last minutes, a fast one and one where memory-bound passes take
about twice as long and GEMMs a quarter longer; ratios are only compared within a run.
At the session start of 2026-12-01 (fast state): ermlab/GEMM 1.49 (GEMMs 0.41 s); a slow
state 1.64–1.65. After the compiled flush of the optimizers' state, the Linear + ReLU
fusion, the in-place ReLU kernels and the batch gather by ``numpy.take``: 1.37 in the fast
state (ermlab 0.56 s/epoch, GEMMs alone 0.41 s; PyTorch 1.85× ermlab's time,
scikit-learn 2.36×), 1.57–1.59 in the slow one. Where the instrumented fast epoch went:
GEMMs 0.389 s + validation GEMMs 0.024, optimizer (Adam) 0.063, Linear's bias, fused
ReLU and the rest 0.034, gathering 0.022 (then read by ``x[index]``), loss 0.019,
Trainer loop 0.015, validation's rest 0.002. Adam's fused kernel moves 28 bytes an
element (θ, g, m, v read, θ, m, v written) at one core's cache bandwidth: 0.15 ns an
element with its arrays in L2 (the same without the square root and the division), 0.17
in L3, so a 536,576-parameter step takes ~80–95 µs on one core; two lanes lose the
~40–60 µs a sleeping worker takes to wake.

2026-12-02 (same machine, after the compiled softmax cross-entropy, ``nn._softmax_kernels``):
``--threads 1`` ermlab/GEMM 1.27, 1.30, 1.34 in three runs (GEMMs alone 0.85–0.87 s; the
loss 0.070 → 0.024–0.027 s an epoch; optimizer 0.10–0.11, Linear's rest 0.04–0.05,
gathering and the Trainer's loop 0.025 each: together a quarter of the GEMM time, and
ermlab's own GEMMs run ~5 % slower than the GEMM-only loop's, whose operands stay in
cache); ``--threads 2`` 1.47–1.65 (GEMMs alone 0.49–0.51 s, the rest on one core: a second
lane for the optimizer would wake a sleeping worker on the core OpenBLAS's thread spins
on, and took 286–417 µs a step against one lane's 164–222).

2026-12-02 (later), AMD EPYC Zen 4 VM (family 25 model 17; 2 cores, 1 MiB of L2 each,
32 MiB of L3; GEMMs alone 1.33–1.44 s at 108–117 GFLOP/s), default threads, three runs:
ermlab/GEMM 1.63–1.81 (epochs 2.16–3.06 s within one run; an instrumented epoch 1.74),
PyTorch/ermlab 0.83–1.15 (PyTorch 1.9–2.9 s an epoch), scikit-learn/ermlab 1.46–1.62.
The optimizer took 0.24–0.54 s of the epoch (Adam 0.43–1.2 ms a step) where steps back
to back take 0.2 ms: after ten GEMMs of the first layer's shape Adam's step took
0.82–0.84 ms against 0.34–0.41 with nothing between (BLAS on one thread or two alike),
and 0.60–0.83 after reading 64 MB; transparent huge pages for every array changed
nothing (not the TLB). The GEMMs' own traffic pushes the 8.6 MB of θ, g, m and v out of
the caches (Zen's L3 is filled by what L2 evicts, and the GEMMs' panels pass through L2
again and again), so the step reads them from memory. PyTorch's Adam took 0.77–0.97 s
of its epochs there.

Intel Xeon VM with AMX (LLVM's ``rocketlake``; 2 cores, 2 MiB of L2 each; 512-bit kernels,
``ermlab._numba_target``), default threads, one run: ermlab/GEMM 1.52 (1.11 s an epoch;
GEMMs alone 0.73 s at 213 GFLOP/s, NumPy's GEMM peaking at 330 here), PyTorch/ermlab
1.26, scikit-learn/ermlab 2.42. Adam took 0.18 s of the epoch, 0.39 ms a step, one lane's
speed (0.33 ms back to back; two lanes 0.20): OpenBLAS's second thread spins for ~50 ms
after each GEMM (a 50 ms sleep after one GEMM cost the process 48 ms of CPU, and
threadpoolctl's limit of one thread did not stop it), so a second lane shares its core.
The Linear layers in ermlab's lanes (``lanes=True``, no BLAS threads to spin) took
1.16–1.24 s an epoch against 1.08–1.11 on BLAS's threads (three paired epochs).

2026-12-02, AMD EPYC Zen 5 VM again (family 26), default threads, two runs: ermlab/GEMM
1.93 and 1.53 (median of three rounds each; rounds 1.40–2.83 as the machine's state
moved; GEMMs alone 0.48–0.58 s), PyTorch/ermlab 1.32, scikit-learn/ermlab 1.83. Adam
took 0.186 s of an instrumented epoch in one run, the time its 7.0 GB an epoch take at
the 37 GB/s memory gives one core (0.189 s), and 0.096 s in the other: the state stays in
the caches in some states of the machine and not in others. lscpu reports 32 MiB of L3,
yet one thread summing an array read 90 GB/s up to 8 MiB, 73 at 12, 59 at 16 and 41 at
24 (memory: 38): the VM's share of the L3 is nearer 8–12 MiB, and Adam's 8.6 MB of θ, g,
m and v with the GEMMs' operands do not fit it. The instrumented epoch that took 0.096 s
for Adam still spent 0.12 s on the rest (Linear's bias and ReLU passes 0.046, the
Trainer's loop 0.026, gathering 0.026, the loss 0.020): a quarter of its 0.47 s of GEMMs
without the optimizer at all. A third run, in a fast state, after the optimizer's calling
lane began ending on a long kernel (``InPlaceOptimizer._run``): ermlab/GEMM 1.37–1.38
after the first round (0.60 s an epoch, GEMMs alone 0.43 s at 361 GFLOP/s), PyTorch/ermlab
1.98, scikit-learn/ermlab 2.42; the instrumented epoch: GEMMs 0.50 s, Adam 0.073 (0.16 ms
a step), Linear's rest 0.036, gathering 0.023, the Trainer's loop 0.018, the loss 0.013.
At ``--threads 1``, two runs at the session's end: ermlab/GEMM 1.25 and 1.24 (rounds after
the first 1.24–1.25; 0.94–0.96 s an epoch, GEMMs alone 0.76–0.77 s at 202–204 GFLOP/s,
Adam 0.077 s), PyTorch/ermlab 2.38.

Idle-machine re-measurement (1 and 2 threads):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/mlp_epoch.py --threads 1
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/mlp_epoch.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from common import blas_kernel, copy_bandwidth, limit_threads, torch_mlp

SIZES = [784, 512, 256, 10]
BATCH = 128
# Adam's fused step reads θ, g, m and v and writes θ, m and v: 28 bytes an element (float32)
ADAM_BYTES = 28


def load(kind: str):
    if kind == "synthetic":
        rng = np.random.default_rng(0)
        x = rng.random((70000, 784), dtype=np.float32)
        y = rng.integers(0, 10, 70000)
        return x[:60000], y[:60000], x[60000:], y[60000:]
    from ermlab import data

    d = data.load("fashion-mnist")
    flat = [a.reshape(len(a), -1).astype(np.float32) for a in (d.x_train, d.x_test)]
    return flat[0], d.y_train, flat[1], d.y_test


def ermlab_trainer():
    from ermlab import losses, nn, optim
    from ermlab.training import Trainer

    model = nn.mlp(SIZES, rng=0)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    return Trainer(model, losses.SoftmaxCrossEntropy(), optimizer, rng=0)


def ermlab_epoch(trainer, x, y, xt, yt) -> tuple[float, float]:
    """(wall, CPU) seconds of one ``Trainer.fit`` epoch, validation included."""
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(x, y, epochs=1, batch_size=BATCH, validation_data=(xt, yt))
    return time.perf_counter() - wall, time.process_time() - cpu


def gemm_epoch(n: int, n_val: int, val_batch: int = 1024) -> tuple[float, float]:
    """(wall, CPU) seconds of the epoch's matrix products alone, into preallocated outputs.

    Per step (⌈n / BATCH⌉ steps, the last one smaller): forward A_l = H_l W_lᵀ for every
    layer; backward ∂W_l = G_lᵀ H_l for every layer and ∂H_l = G_l W_l for all but the
    first; then the validation forward pass over ``n_val`` rows in blocks of ``val_batch``.
    The operands have ermlab's layouts (W is (out, in), C order; Wᵀ and Gᵀ are views).
    """
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((b, a), dtype=np.float32) * 0.05
               for a, b in zip(SIZES[:-1], SIZES[1:])]
    grads_w = [np.empty_like(w) for w in weights]

    def buffers(rows):
        acts = [rng.random((rows, size), dtype=np.float32) for size in SIZES]
        grads = [np.empty((rows, size), np.float32) for size in SIZES]
        return acts, grads

    sizes = [BATCH] * (n // BATCH) + ([n % BATCH] if n % BATCH else [])
    train = {rows: buffers(rows) for rows in set(sizes)}
    val_sizes = [val_batch] * (n_val // val_batch) + ([n_val % val_batch] if n_val % val_batch
                                                      else [])
    val = {rows: buffers(rows) for rows in set(val_sizes)}
    layers = range(len(weights))
    wall, cpu = time.perf_counter(), time.process_time()
    for rows in sizes:
        acts, grads = train[rows]
        for l in layers:
            np.matmul(acts[l], weights[l].T, out=acts[l + 1])
        for l in reversed(layers):
            np.matmul(acts[l + 1].T, acts[l], out=grads_w[l])  # Gᵀ H (G's values: immaterial)
            if l:
                np.matmul(acts[l + 1], weights[l], out=grads[l])
    for rows in val_sizes:
        acts, _ = val[rows]
        for l in layers:
            np.matmul(acts[l], weights[l].T, out=acts[l + 1])
    return time.perf_counter() - wall, time.process_time() - cpu


def run_ermlab(x, y, xt, yt, epochs, cpu=False):
    """ermlab's epochs alternated with GEMM-only epochs; then one instrumented epoch."""
    trainer = ermlab_trainer()
    times, gemm = [], []
    for _ in range(epochs):
        gemm.append(gemm_epoch(len(x), len(xt)))
        times.append(ermlab_epoch(trainer, x, y, xt, yt))
    parts = breakdown(trainer, x, y, xt, yt, cpu)
    n_params = sum(p.data.size for p in trainer.model.parameters())
    steps = -(-len(x) // BATCH)
    m = np.concatenate([s["exp_avg"].ravel() for s in trainer.optimizer.state.values()])
    subnormal = np.mean((m != 0) & (np.abs(m) < np.finfo(np.float32).tiny))
    accuracy = float(np.mean(trainer.predict(xt) == yt))
    return [t[0] for t in times], accuracy, {"times": times, "gemm": gemm, "parts": parts,
                                             "subnormal": subnormal,
                                             "adam_bytes": ADAM_BYTES * n_params * steps,
                                             "copy": copy_bandwidth()}


class Breakdown:
    """Exclusive (self) time per category of wrapped calls: a call's time minus the time
    of the wrapped calls inside it. Inside validation everything is validation, its GEMMs
    apart."""

    def __init__(self, clock=time.perf_counter) -> None:
        self.times: dict[str, float] = {}
        self.stack: list[list] = []
        self.clock = clock

    def wrap(self, fn, category: str):
        def timed(*args, **kwargs):
            frame = [category, 0.0]
            self.stack.append(frame)
            start = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = self.clock() - start
                self.stack.pop()
                label = category
                if any(f[0] == "validation" for f in self.stack) or category == "validation":
                    label = "validation GEMMs" if category == "GEMMs" else "validation (rest)"
                self.times[label] = self.times.get(label, 0.0) + elapsed - frame[1]
                if self.stack:
                    self.stack[-1][1] += elapsed
        return timed


class TimedRows:
    """A batch's rows timed as batch gathering, read as the Trainer reads a NumPy array's
    (``numpy.take``); the face the Trainer reads (len, shape, dtype)."""

    def __init__(self, array, clock: Breakdown) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.getitem = clock.wrap(
            lambda index: (array[index] if isinstance(index, slice)
                           else np.take(array, index, axis=0)),
            "batch gathering")

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):
        return self.getitem(index)


def breakdown(trainer, x, y, xt, yt, cpu: bool = False) -> dict[str, float]:
    """One more epoch with every part timed (wrappers on this trainer's objects and on
    ``numpy.matmul``, removed after); ``Trainer loop, callbacks`` is the rest of the epoch.
    Wall-clock seconds, or process CPU seconds with ``cpu``."""
    from ermlab import nn

    clock = Breakdown(time.process_time if cpu else time.perf_counter)
    saved_matmul = np.matmul
    patched = []

    def patch(obj, name, category):
        patched.append((obj, name, vars(obj).get(name)))
        setattr(obj, name, clock.wrap(getattr(obj, name), category))

    # the layers' classes, not the instances: a forward set on an instance is a hook, and a
    # Linear with a hook leaves the ReLU after it to run apart (``activations.absorbs_relu``)
    for cls in {type(module) for module in trainer.model}:
        linear = issubclass(cls, nn.Linear)
        category = "Linear (bias, fused ReLU, rest)" if linear else "activations"
        for name in ("forward", "backward") + (("forward_relu",) if linear else ()):
            patch(cls, name, category)
    patch(trainer.loss, "forward", "loss")
    patch(trainer.loss, "backward", "loss")
    patch(trainer.optimizer, "step", "optimizer")
    patch(trainer.optimizer, "zero_grad", "zero_grad")
    patch(trainer, "evaluate", "validation")
    np.matmul = clock.wrap(saved_matmul, "GEMMs")
    try:
        total = ermlab_epoch(trainer, TimedRows(x, clock), TimedRows(y, clock), xt, yt)[cpu]
    finally:
        np.matmul = saved_matmul
        for obj, name, own in reversed(patched):
            if own is None:
                delattr(obj, name)
            else:
                setattr(obj, name, own)
    clock.times["Trainer loop, callbacks"] = total - sum(clock.times.values())
    clock.times["total"] = total
    return clock.times


def run_torch(x, y, xt, yt, epochs):
    import torch

    torch.manual_seed(0)
    model = torch_mlp(SIZES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    xs, ys = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(xs), generator=generator)
        for i in range(0, len(xs), BATCH):
            index = order[i:i + BATCH]
            optimizer.zero_grad()
            criterion(model(xs[index]), ys[index]).backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean()
    return times, float(accuracy), None


def run_sklearn(x, y, xt, yt, epochs):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=tuple(SIZES[1:-1]), solver="adam",
                        learning_rate_init=1e-3, batch_size=BATCH, max_iter=1, alpha=0.0,
                        shuffle=True, random_state=0, warm_start=True)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(epochs):
            start = time.perf_counter()
            clf.fit(x, y)
            times.append(time.perf_counter() - start)
    return times, float(np.mean(clf.predict(xt) == yt)), None


def machine(threads: int | None) -> str:
    """CPU model, BLAS kernel and threads, load average: to tell figures apart."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"BLAS: {blas_kernel()}; --threads {threads}; load average {load}"


def report_ermlab(extra: dict, clock: str) -> None:
    wall_ratios = [t[0] / g[0] for t, g in zip(extra["times"], extra["gemm"])]
    cpu_ratios = [t[1] / g[1] for t, g in zip(extra["times"], extra["gemm"])]
    gemm_wall = statistics.median(g[0] for g in extra["gemm"])
    gemm_cpu = statistics.median(g[1] for g in extra["gemm"])
    flops = gemm_flops(60000, 10000)
    print(f"GEMMs alone {gemm_wall:6.2f} s/epoch wall, {gemm_cpu:.2f} s CPU (median; "
          f"{flops / 1e9:.0f} GFLOP, {flops / gemm_wall / 1e9:.0f} GFLOP/s wall)")
    print(f"ermlab/GEMM = {statistics.median(wall_ratios):.2f} wall, "
          f"{statistics.median(cpu_ratios):.2f} CPU (median of the rounds' ratios; "
          f"wall: {', '.join(f'{r:.2f}' for r in wall_ratios)}); goal ≤ 1.25")
    parts = dict(extra["parts"])
    total = parts.pop("total")
    print(f"where one instrumented epoch ({total:.2f} s {clock}) goes:")
    for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"  {name:26s} {seconds:6.3f} s  {seconds / total:6.1%}")
    floor = extra["adam_bytes"] / (extra["copy"] * 1e9)
    print(f"Adam with its arrays from memory, not the caches: {extra['adam_bytes'] / 1e9:.1f} GB "
          f"an epoch at {extra['copy']:.1f} GB/s (np.copyto of 64 MiB, one thread) = "
          f"{floor:.3f} s; the GEMMs and that alone: ermlab/GEMM "
          f"{(gemm_wall + floor) / gemm_wall:.2f}")
    print(f"subnormal fraction of Adam's m after training: {extra['subnormal']:.4f}")


def gemm_flops(n: int, n_val: int) -> float:
    """Multiply-adds ×2 of the epoch's GEMMs (see ``gemm_epoch``)."""
    pairs = list(zip(SIZES[:-1], SIZES[1:]))
    per_row = sum(a * b for a, b in pairs)
    backward = 2 * per_row - SIZES[0] * SIZES[1]
    return 2.0 * (n * (per_row + backward) + n_val * per_row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", choices=("fashion-mnist", "synthetic"), default="fashion-mnist")
    parser.add_argument("--only", nargs="*", default=["ermlab", "pytorch", "sklearn"],
                        choices=["ermlab", "pytorch", "sklearn"])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="the breakdown's clock: wall, or process CPU time (steadier on a "
                        "busy machine at --threads 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS, torch and ermlab optimizer threads (default: as installed)")
    args = parser.parse_args()
    import sklearn
    import torch

    limit_threads(args.threads)
    x, y, xt, yt = load(args.data)
    runners = {"ermlab": run_ermlab, "pytorch": run_torch, "sklearn": run_sklearn}
    results = {name: runners[name](x, y, xt, yt, args.epochs) for name in args.only
               if name != "ermlab"}
    if "ermlab" in args.only:
        results = {"ermlab": run_ermlab(x, y, xt, yt, args.epochs, args.clock == "cpu"),
                   **results}
    print(f"MLP {'-'.join(map(str, SIZES))}, Adam lr 1e-3, batch {BATCH}, float32, {args.data}, "
          f"{args.epochs} epochs each; numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}")
    print(machine(args.threads))
    base = statistics.median(results["ermlab"][0]) if "ermlab" in results else None
    for name, (times, accuracy, _) in results.items():
        median = statistics.median(times)
        ratio = f"  {name}/ermlab = {median / base:.2f}" if base else ""
        print(f"{name:8s} {median:6.2f} s/epoch (median; all: "
              f"{', '.join(f'{t:.2f}' for t in times)})  test accuracy {accuracy:.4f}{ratio}")
    if "ermlab" in results:
        print("ermlab's epoch includes validation on the 10,000 test examples; "
              "PyTorch's and scikit-learn's do not")
        report_ermlab(results["ermlab"][2], args.clock)


if __name__ == "__main__":
    main()
