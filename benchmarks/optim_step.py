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
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/optim_step.py --pauses 16

The gradients are fixed random arrays (no model work is timed). The machine is
shared: quote the ratios of one run, not absolute times across runs. ``bound``
is the memory-bandwidth bound: the arrays a step must read and write (θ, g and
each state array read; θ and each state array written) at the copy bandwidth
measured in the same run over the same working set (np.copyto from one array
to another, together as large as the step's arrays, so that the bound of a
rule with 9 arrays is not measured in a cache that holds 2 of them; split in
halves over two threads for the 2-thread bound). ``lanes``: how many threads
ermlab's 2-thread step used last (``optim.inplace``: below ``lane_work`` a
``threads.LaneTuner`` times one lane and two and keeps the faster).

After each block's kernel became one prepared call (``optim.inplace``'s
``fused_kernel``/``fused_arrays``), on an idle AMD EPYC (Zen 5, 2 cores, 32 MiB L3
that holds the whole working set: copy bandwidth 107–130 GB/s on 1 thread), 7 rounds;
ms per step, ratio ermlab/torch, ×bound:

                          1 thread                          2 threads
    optimizer             ermlab torch  ratio  ×bound       ermlab lanes torch  ratio  ×bound
    SGD                   0.052  0.058  0.91   0.87         0.055  1     0.041  1.32   0.73
    SGD momentum          0.071  0.141  0.51   0.87         0.072  1     0.095  0.76   0.78
    SGD nesterov          0.076  0.180  0.41   0.92         0.071  1     0.121  0.60   0.77
    Adagrad               0.073  0.409  0.18   0.89         0.074  1     0.264  0.29   0.80
    Adadelta              0.119  0.788  0.15   1.03         0.125  1     0.484  0.26   1.17
    RMSprop               0.078  0.394  0.20   0.94         0.082  1     0.252  0.33   0.89
    RMSprop centered+mom. 0.115  0.574  0.20   0.73         0.106  1     0.398  0.28   0.86
    Adam                  0.094  0.486  0.19   0.81         0.088  1     0.307  0.28   0.83
    Adam amsgrad          0.117  0.533  0.22   0.74         0.110  1     0.338  0.32   0.90
    AdamW                 0.085  0.522  0.17   0.74         0.088  1     0.349  0.26   0.83
    Adamax                0.102  0.296  0.35   0.88         0.089  1     0.200  0.43   0.84
    NAdam                 0.121  0.576  0.21   1.04         0.122  1     0.384  0.32   1.14
    HeavyBall             0.064  -      -      0.78         0.065  1     -      -      0.70
    NAGC                  0.066  -      -      0.81         0.066  1     -      -      0.71

Before that change, the same machine gave SGD 0.071 against torch's 0.060 at 1 thread
(1.19, 1.42× the bound) and Adam, AdamW, Adamax, NAdam and AMSGrad 1.24–1.54× the
bound: with the arrays in cache, ~20 µs of Python per step counted. Plain SGD at 2
threads stays on one lane: two lanes measured 57–66 µs against one lane's 58–60 and
torch's 39–41 (the worker needs the GIL for its own Python, and waits for it while the
calling thread prepares its lane).

2026-12-02, a Zen 5 VM again (after the pool's CPU steering, ``threads._cpu``): plain
SGD at 2 threads 1.03, 1.07, 1.19 and 1.12× torch in four runs (0.058–0.077 ms against
0.054–0.059), every other rule 0.16–0.70×. Timed inside two-lane replayed steps (2000
steps): the worker began its lane 5–6 µs after the region did (the handoff), the
calling thread ran its half (117,120 + 131,072 + small) in 28 µs, and the worker its
284,288 in 45–57 µs in most runs, 27–31 µs in others, whichever CPU each was on: so
the lane tuner mostly kept one lane (0.058 ms). The calling thread then ran its small
blocks last, and their Python held the GIL as the worker's kernel ended: the worker slept
on the GIL. With the small blocks between the caller's two large ones
(``InPlaceOptimizer._run``), the worker's lane took 26 µs, and three alternating runs of
``--only SGD Adam`` gave plain SGD at 2 threads 1.38, 0.69, 1.33× torch before and 1.02,
0.99, 0.93× after (Adam 0.27–0.29 and 0.22–0.31×).

Steps back to back find their arrays in the caches (this machine's L3 holds them
all). In training, a forward and a backward pass come between two steps, and there
(``--gap 1``: 1 ms of busy waiting, touching no memory, before each step; the
bound's copies likewise) the arrays had left the shared L3 more often than not: the
same Adam kernels over the MLP took 100 µs back to back and 205 µs after a 1 ms
pause of pure Python or a 1 ms sleep, 100 µs after 0.2 ms. Two runs of
``--gap 1`` on the Zen 5 machine above, ratio ermlab/torch at 1 thread and at 2
(×bound, of the bound measured with the same gap, in brackets):

    optimizer          1 thread                    2 threads
    SGD                0.97 (0.84), 0.92 (0.99)    1.18 (0.64), 1.27 (0.54)
    SGD momentum       0.64 (0.83), 0.71 (0.88)    1.02 (1.08), 0.90 (0.75)
    SGD nesterov       0.57, 0.48                  0.80, 0.71
    Adam               0.25 (0.69), 0.27 (0.72)    0.40 (1.35), 0.43 (0.94)
    NAdam              0.24 (0.88), 0.24 (0.67)    0.39 (1.59), 0.37 (0.83)
    other rules        0.17–0.38                   0.30–0.61

(the first run's 2-thread bound was 57–99 GB/s, the second's 42–59: the host's
other tenants set what a core gets from memory). Two lanes instead of one, same
gap, alternating: Adam 0.94, NAdam 0.80, Adagrad 0.96, SGD 1.19; back to back
Adam 0.90, NAdam 0.82, SGD 1.04. But whole epochs of the MLP benchmark's Adam
(``mlp_epoch.py``, 6 alternating rounds) took 1.018 s with two lanes against
1.013 s with one, as the last machine measured (1.013×), so ``lane_work`` stays.

Lanes chosen by timing (``threads.LaneTuner``, 2026-12-01), on an Intel Xeon VM
("Intel(R) Xeon(R) Processor", 2 cores, copy bandwidth 24–26 GB/s on 1 thread, 40–41
on 2), 7 rounds; 2 threads, ms per step (lanes), ratio ermlab/torch, ×bound:

    optimizer             one lane fixed (before)      timed (after)
    SGD                   0.271 (1) 1.44  1.58         0.200 (2) 0.98  1.25
    SGD momentum          0.380 (1) 1.03  1.39         0.246 (2) 0.79  0.95
    SGD nesterov          0.311 (1) 0.84  1.14         0.228 (2) 0.58  0.88
    Adam                  0.445 (1) 0.49  1.26         0.274 (2) 0.33  0.75
    Adam amsgrad          0.518 (1) 0.54  1.23         0.337 (2) 0.37  0.72
    other rules                                        0.29–0.42, 0.73–1.09

At 1 thread every rule was 0.27–0.88× torch. Plain SGD is the close one: two lanes
against one measured anywhere from 0.6× to even on this machine from minute to minute,
so a probe may keep one lane (three runs of ``--only SGD``: one lane 1.48× torch's
0.169 ms; two lanes 1.24× and 1.22×, torch taking 0.153 and 0.213 ms).

Fused kernels (Intel Xeon @ 2.80GHz, 2 cores, OpenBLAS 0.3.31 SkylakeX,
numba 0.68.1; shared machine, load average 3–4 during the run, 7 rounds).
ms per step; ratio = ermlab/torch (wall, CPU); ×bound at the copy bandwidth
over the same working set (23–28 GB/s on 1 thread, 21–24 GB/s on 2):

                          1 thread                                   2 threads
    optimizer             fused NumPy torch  ratio       ×bound     fused lanes torch ratio ×bound
    SGD                   0.288 0.266 0.309  0.94, 0.94  1.20       0.298 1     0.209 1.36  1.02
    SGD momentum          0.340 0.673 0.763  0.50, 0.54  0.88       0.346 1     0.481 0.66  0.76
    SGD nesterov          0.445 0.906 1.196  0.38, 0.43  1.16       0.556 2     0.692 0.80  1.23
    Adagrad               0.400 1.803 2.188  0.19, 0.19  1.04       0.509 2     4.759 0.11  1.12
    Adadelta              0.743 4.544 4.551  0.18, 0.20  1.26       0.924 2     21.41 0.04  1.40
    RMSprop               0.567 2.175 2.348  0.24, 0.28  1.47       0.682 2     8.100 0.12  1.50
    RMSprop centered+mom. 0.838 3.532 3.370  0.26, 0.28  1.01       1.031 2     8.219 0.13  1.11
    Adam                  0.511 2.309 2.590  0.18, 0.24  0.86       0.731 2     6.017 0.14  1.11
    Adam amsgrad          0.819 3.104 3.068  0.27, 0.30  0.98       0.903 2     2.080 0.37  0.98
    AdamW                 0.652 2.433 3.031  0.22, 0.24  1.10       0.668 2     2.085 0.32  1.01
    Adamax                0.523 2.021 2.166  0.25, 0.30  0.89       0.618 2     1.095 0.56  0.94
    NAdam                 0.681 3.837 2.974  0.22, 0.26  1.15       0.653 2     1.715 0.37  0.99
    HeavyBall             0.357 1.439 -      -           0.93       0.454 2     -     -     1.00
    NAGC                  0.375 1.677 -      -           0.98       0.531 2     -     -     1.17

At 1 thread every rule is ≤ 1.0× torch (wall 0.18–0.94, CPU time 0.19–0.94)
and the fused steps are 0.86–1.47× the bound (the NumPy path was 2.3–7×);
SGD, whose NumPy path was already one BLAS ?axpy pass, is the same pass. At 2
threads torch's OpenMP team was still disturbed by the other jobs (up to 20 ms
per step where it takes 0.2–0.7 ms), the 2-thread copy was no faster than the
1-thread one, and ermlab's second lane did not pay either (handing a lane to a
worker costs ~50 µs; cheap rules, SGD with or without momentum over 0.5M
floats, stay on one lane): the one comparison that looks sound, plain SGD,
is 1.36× torch's 2-thread step. Under a saturated machine (load 27–29) the
same table gave 1-thread ratios 0.03–0.69 and 1.0–2.0× the bound. Settling
the 2-thread comparison needs an idle machine (the commands above).

2026-12-02 (later), Intel Xeon VM ("Intel(R) Xeon(R) Processor", AVX-512 and AMX, which
LLVM names ``rocketlake``; 2 cores, 2 MiB of L2 each; copy bandwidth 27–29 GB/s on 1
thread, 24–49 on 2), after the lane tuner's warm-up, wake-up runs, lower median and early
re-check (``threads.LaneTuner``): at 1 thread every rule ≤ 1.0× torch (SGD 0.84–0.88,
momentum 0.54, Adam 0.29–0.31, NAdam 0.33–0.35) and 0.65–0.97× the bound. At 2 threads
the tuner had kept one lane for most rules (SGD 2.03× torch, momentum 1.06, Adam 0.43;
×bound up to 1.67), its first probe timing the process's first two-lane runs (cold state
arrays, the pool starting, stalls of 2.5–9 ms); now two lanes for every rule in two
runs, all ≤ 1.0× torch (momentum 0.74–0.82, Adam 0.31–0.32, NAdam 0.35) but plain SGD
(1.16 and 1.38: 0.14–0.19 ms against torch's 0.10–0.17), and 0.62–1.17× the bound.

2026-12-02, AMD EPYC Zen 5 VM (AVX-512, 2 cores, OpenBLAS SkylakeX; copy bandwidth
94–108 GB/s on 1 thread, 74–139 on 2), 5 rounds, after the hand-off of a lane by the
first kernel (``threads.Handoff``) and the 4 MiB blocks of fused steps: at 1 thread every
rule ≤ 1.0× torch (SGD 0.98, momentum 0.57, Adagrad 0.18, Adam 0.21, NAdam 0.23) and
0.82–1.20× the bound; at 2 threads every rule ≤ 1.0× torch but plain SGD, 1.22–1.55 over
three runs (torch's two OpenMP threads 0.049–0.067 ms, ermlab 0.071–0.076 on one lane or
two: ~20 µs of Python come before the lanes start), and ≤ 1.2× the bound but AMSGrad
(1.29). The machine's speed moved by 20–40 % between runs minutes apart.

2026-12-02 (third machine that day), AMD EPYC VM (family 25 model 17: Zen 4; AVX-512,
2 cores; copy bandwidth 21–79 GB/s on 1 thread, 51–94 on 2: the host's other tenants),
after replayed steps (``optim.prepared``: the last step's kernel calls made again where
nothing they came from changed, no layout, no per-block Python; paired, 1 thread, the
same step on the full path: SGD 0.76×, Adam 0.72×, NAdam 0.85×). Two runs: at 1 thread
every rule ≤ 1.0× torch (SGD 0.78–0.80, momentum 0.45–0.49, Adam 0.17–0.21, NAdam
0.23–0.28) and 0.28–1.45× the bound (the rules with a square root and a division per
element, Adagrad, Adadelta, RMSprop, NAdam, 1.25–1.45: their kernels are not memory
bound here); at 2 threads every rule ≤ 1.0× torch but plain SGD (1.01 where the tuner
kept one lane, 0.085 ms against torch's 0.083; 1.41 where its probe chose two, 0.130).
Before the replay, that machine gave plain SGD 1.60 at 2 threads (two lanes, 0.122 ms
against 0.107) and 0.80 at 1. Steps of plain SGD in a row there, 2 threads: 77–95 µs on
one lane (its kernels alone 64–70), 105–140 on two; the tuner's probes saw two lanes at
57–92 µs against one lane's 58–113 and kept two in about half of them. The 2-thread
copy is hardly faster than the 1-thread one on this machine, so a second lane has
little to gain for a one-pass rule. ``--only SGD Adam NAdam``, 1 thread, ratio to torch,
two runs with replayed steps against one with ``--no-replay`` between them: SGD 0.68, 0.73
against 0.82; Adam 0.17, 0.21 against 0.21; NAdam 0.22, 0.23 against 0.24.

The Intel Xeon VM with AMX again (LLVM's ``rocketlake``, 2 MiB of L2 a core), replayed
steps, 512-bit kernels against 256 (``ERMLAB_WIDE_VECTORS=0``), one run each: the same
within noise (the steps are memory-bound). At 1 thread every rule ≤ 1.0× torch (SGD
0.79–0.81, Adam 0.28–0.29, NAdam 0.29–0.30) and 0.58–0.84× the bound; at 2 threads every
rule ≤ 1.0× torch but plain SGD (1.28–2.28 over four runs: ermlab 0.13–0.19 ms on one
lane or two, torch 0.083–0.143) and momentum SGD in one run of four (1.10–1.13 where the
tuner kept one lane), all ≤ 1.0× the bound. Torch's two OpenMP threads each update the
same half of every tensor at every step, which stays in that core's 2 MiB L2 (0.083 ms
is 77 GB/s, above the 2-thread copy bandwidth of 33–44). Plain SGD in a row, paired in one
process (µs): two lanes forced 84–107 (the worker's one block, 284,288 values, one kernel
call), the tuner's choice 104–110, one lane 150–178, torch 88–90; over 4-value tensors
(no work) one lane's replay takes 14 µs and two lanes' 49 (the caller waits ~23 µs in
``Worker.finish`` for a lane that ran one tiny kernel: the worker's Python waits for the
GIL).

Then found: Linux often woke the pool's worker on the calling thread's CPU (after a pause,
or after torch's rounds, whose OpenMP threads spin for a while), and the two stayed there,
each waiting awake up to 2 ms for the other: two-lane SGD steps took 2.2 ms in 10 of 16
rounds of 30 steps after 0.3 s pauses, 75 µs in the rest. With the worker moved off the
caller's CPU (``threads._cpu``) and the waits giving way every 20 µs (``ermlab._spin``),
75–93 µs in all rounds (``--pauses 16`` in the same session, the tree before against
after: 0.075–2.22 ms a step, above 0.2 ms in 12 of 16 rounds, against 0.071–0.080),
and this script at 2 threads, four runs: plain SGD 0.83–0.91×
torch (0.079–0.084 ms against 0.090–0.093), every rule ≤ 0.91× torch and ≤ 0.88× the
bound; at 1 thread unchanged (≤ 0.79× torch, ≤ 0.94× the bound).

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
    opt.threads, opt.fused, opt.replay = threads, fused, REPLAY
    return opt


def torch_optimizer(torch, name, options, arrays, grads):
    if not hasattr(torch.optim, name):
        return None
    tensors = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g)
    return getattr(torch.optim, name)(tensors, foreach=True, **options)


GAP = 0.0  # seconds of other work between timed steps (--gap)
REPLAY = True  # whether ermlab's steps replay the last step's calls (--no-replay: off)


def timed_steps(step, steps: int, gap: float | None = None) -> tuple[float, float]:
    """Median wall seconds of one ``step()`` over ``steps`` calls (after 3 untimed), and
    process CPU seconds per step over them (``gap``, default ``GAP``, included: it is
    spent busy in this process). Before each step the thread spins for ``gap`` seconds,
    touching no memory, as a training step's forward and backward pass would take that
    long: long enough for the step's arrays to leave the caches."""
    gap = GAP if gap is None else gap
    for _ in range(3):
        step()
    times = []
    cpu = time.process_time()
    for _ in range(steps):
        if gap:
            busy = time.perf_counter() + gap
            while time.perf_counter() < busy:
                pass
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (time.process_time() - cpu) / steps - gap


def after_pauses(rounds: int, steps: int, pause: float = 0.3) -> None:
    """Median ms of two-lane plain-SGD steps in each of ``rounds`` rounds of ``steps``, each
    round after ``pause`` seconds asleep (the pool's worker goes to sleep, and Linux may
    wake it on the calling thread's CPU)."""
    rng = np.random.default_rng(0)
    params = mlp(SIZES, rng=0, dtype=np.float32).parameters()
    grads = [(1e-3 * rng.standard_normal(p.data.shape)).astype(np.float32) for p in params]
    opt = ermlab_optimizer("SGD", dict(lr=1e-9), grads, 2, True)
    opt.lane_work = 1  # two lanes, not the tuner's choice
    for _ in range(50):
        opt.step()
    medians = []
    for _ in range(rounds):
        time.sleep(pause)
        medians.append(timed_steps(opt.step, steps)[0])
    print(f"plain SGD on two lanes, {steps} steps after each {pause:g} s pause, median ms per "
          f"round: {', '.join(f'{1e3 * m:.3f}' for m in medians)}")


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
    parser.add_argument("--gap", type=float, default=0.0, metavar="MS",
                        help="milliseconds of busy waiting before each timed step (and each "
                        "copy of the bound): the arrays leave the caches, as between the "
                        "steps of a training run (default 0: steps back to back)")
    parser.add_argument("--no-replay", action="store_true",
                        help="every ermlab step on its full path (opt.replay = False, "
                        "optim.prepared), for the figure without replayed steps")
    parser.add_argument("--pauses", type=int, default=0, metavar="N",
                        help="only this: N rounds of plain SGD on two lanes, each round's "
                        "steps after a 0.3 s pause (where the pool's worker may wake on "
                        "the calling thread's CPU: threads._cpu)")
    args = parser.parse_args()
    global GAP, REPLAY
    GAP, REPLAY = args.gap / 1e3, not args.no_replay
    if args.pauses:
        after_pauses(args.pauses, args.steps)
        return
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
          f"{args.steps} steps per round, {args.rounds} rounds alternating in order"
          + (f"; {args.gap:g} ms busy before each step" if args.gap else "")
          + ("; steps not replayed (--no-replay)" if args.no_replay else ""))
    print(f"BLAS: {blas_kernel()}")
    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
          f"(shared machine: noisy)")
    variants = [("ermlab", 1), ("torch", 1), ("ermlab", 2), ("torch", 2)]
    if args.numpy_path:
        variants.append(("numpy-path", 1))
    cases = [c for c in CASES if not args.only or c[0] in args.only]
    bandwidth = {(k, n): copy_bandwidth(k * total // 2, n, 100)
                 for k in sorted({c[2] for c in cases}) for n in (1, 2)}
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


def _range(bandwidth: dict, threads: int) -> str:
    values = [v / 1e9 for (_, n), v in bandwidth.items() if n == threads]
    return f"{min(values):.1f}–{max(values):.1f}"


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
            bound = n_arrays * 4 * total / bandwidth[n_arrays, n]
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
          f"step must read and write at the copy bandwidth measured here over the same "
          f"working set (np.copyto: {_range(bandwidth, 1)} GB/s on 1 thread, "
          f"{_range(bandwidth, 2)} GB/s on 2); lanes: the threads ermlab's 2-thread step used "
          f"(below lane_work timed: threads.LaneTuner)")


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
