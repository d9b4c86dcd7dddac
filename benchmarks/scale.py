"""Time per training step of an MLP 784-w-w-10 as the batch and the width grow: ermlab vs PyTorch.

Run by hand (not a test):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/scale.py

One step is what a user's training loop does per mini-batch: forward, softmax
cross-entropy, backward, optimizer update (``Trainer.train_step`` for ermlab;
``zero_grad``, forward, loss, ``backward``, ``step`` for PyTorch), float32, on a
batch already in memory. Two sweeps: batch size 32 … 1024 at width 1024, and
width 256 … 4096 at batch 128, each at 1 and 2 threads (NumPy's BLAS and
ermlab's optimizer lanes, ``torch.set_num_threads``). Both frameworks run in
the same process, alternating round by round (``--rounds``, each round at
least ``--min-time`` seconds of steps), and the median per step is reported
with the ratio ermlab / PyTorch (< 1: ermlab is faster). The table is printed
and drawn to ``docs/images/scale.png`` (two panels, log axes, the ratio written
at each point of ermlab's curves). The CPU model, BLAS kernel and load average
are printed with the table, since machines of this kind differ.

Measured for issue 11 (Intel Xeon @ 2.8 GHz, 2 cores shared with other jobs at
load average ~21, so ``--threads 1`` only and the times are ~10x an idle
machine's; the ratios come from alternated rounds), ermlab / PyTorch: batch 32
… 1024 at width 1024: 0.62, 0.78, 0.84, 0.97, 1.10, 1.17 (ermlab wins up to
batch 256, PyTorch's MKL from 512); width 256 … 4096 at batch 128: 0.83,
0.75, 0.84, 0.69, 0.43. On the idle machine (load average 1.7, Adam, 3
alternated rounds; the committed docs/images/scale.png is this run), 1 / 2
threads: batch 32 … 1024: 0.61/0.62, 0.70/0.58, 0.81/0.79, 0.98/0.59,
1.01/0.82, 1.10/1.12; width 256 … 4096: 0.73/0.56, 0.81/0.68, 0.81/0.79,
0.72/0.77, 0.58/0.63 — ermlab faster everywhere but at batch ≥ 512 on one
thread and batch 1024 on two. On the AMD EPYC Zen 5 machine (2 cores, load average 1.4,
3 alternated rounds, Adam; the committed docs/images/scale.png is this run, 2026-12-01,
after the Linear + ReLU fusion), 1 / 2 threads: batch 32 … 1024: 0.43/0.44, 0.37/0.34,
0.39/0.27, 0.44/0.37, 0.46/0.34, 0.44/0.37; width 256 … 4096: 0.47/0.40, 0.45/0.40,
0.39/0.27, 0.36/0.34, 0.34/0.32 — ermlab 2.1–3.7× faster everywhere (NumPy's OpenBLAS
runs these GEMMs 2–3× faster than PyTorch's MKL on this processor). Regenerate it with
the default (1 and 2 threads):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/scale.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from common import blas_kernel, torch_mlp
from threadpoolctl import threadpool_limits

BATCHES = [32, 64, 128, 256, 512, 1024]
WIDTHS = [256, 512, 1024, 2048, 4096]
WIDTH_FOR_BATCHES, BATCH_FOR_WIDTHS = 1024, 128
IMAGE = Path(__file__).resolve().parent.parent / "docs" / "images" / "scale.png"


def sizes_of(width: int) -> list[int]:
    return [784, width, width, 10]


def ermlab_step(width: int, batch: int, optimizer: str):
    from ermlab import losses, nn, optim
    from ermlab.training import Trainer

    rng = np.random.default_rng(0)
    model = nn.mlp(sizes_of(width), rng=0)
    opt = (optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam"
           else optim.SGD(model.parameters(), lr=0.01))
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), opt, rng=0)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    def step(threads: int) -> None:
        opt.threads = threads
        trainer.train_step(x, y)

    return step


def torch_step(width: int, batch: int, optimizer: str):
    import torch

    torch.manual_seed(0)
    model = torch_mlp(sizes_of(width))
    opt = (torch.optim.Adam(model.parameters(), lr=1e-3) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.01))
    criterion = torch.nn.CrossEntropyLoss()
    x = torch.rand(batch, 784)
    y = torch.randint(0, 10, (batch,))

    def step(threads: int) -> None:
        opt.zero_grad()
        criterion(model(x), y).backward()
        opt.step()

    return step


def timed_round(step, threads: int, min_time: float) -> float:
    """Seconds per step over at least ``min_time`` seconds (and two steps)."""
    count, start = 0, time.perf_counter()
    while True:
        step(threads)
        count += 1
        elapsed = time.perf_counter() - start
        if count >= 2 and elapsed >= min_time:
            return elapsed / count


def measure(width: int, batch: int, threads_list: list[int], args) -> dict[int, tuple]:
    """{threads: (ermlab s/step, torch s/step)}: medians of alternated rounds."""
    import torch

    steps = {"ermlab": ermlab_step(width, batch, args.optimizer),
             "pytorch": torch_step(width, batch, args.optimizer)}
    results = {}
    for threads in threads_list:
        torch.set_num_threads(threads)
        with threadpool_limits(threads):
            for step in steps.values():  # warm-up: first allocations, optimizer state
                step(threads)
                step(threads)
            times = {name: [] for name in steps}
            for _ in range(args.rounds):
                for name, step in steps.items():
                    times[name].append(timed_round(step, threads, args.min_time))
        results[threads] = (statistics.median(times["ermlab"]),
                            statistics.median(times["pytorch"]))
    return results


def machine() -> str:
    """CPU model, BLAS kernel, load average: to tell figures apart."""
    return f"BLAS {blas_kernel()}; load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}"


def plot(table: dict, threads_list: list[int], optimizer: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    sweeps = [("batch", BATCHES, f"batch size (width {WIDTH_FOR_BATCHES})"),
              ("width", WIDTHS, f"width w of 784-w-w-10 (batch {BATCH_FOR_WIDTHS})")]
    colours = {1: ("tab:blue", "tab:orange"), 2: ("tab:green", "tab:red")}
    for ax, (kind, values, label) in zip(axes, sweeps):
        for threads in threads_list:
            ours = [table[kind, v][threads][0] * 1e3 for v in values]
            theirs = [table[kind, v][threads][1] * 1e3 for v in values]
            c_ours, c_theirs = colours.get(threads, ("tab:purple", "tab:brown"))
            ax.plot(values, ours, "o-", color=c_ours, label=f"ermlab, {threads} thread(s)")
            ax.plot(values, theirs, "s--", color=c_theirs, label=f"PyTorch, {threads} thread(s)")
            for v, a, b in zip(values, ours, theirs):
                ax.annotate(f"{a / b:.2f}", (v, a), textcoords="offset points",
                            xytext=(0, 6 if threads == threads_list[0] else -12),
                            ha="center", fontsize=7, color=c_ours)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(values, [str(v) for v in values])
        ax.set_xlabel(label)
        ax.set_ylabel("ms per step")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MLP training step (forward, backward, {optimizer}), float32: "
                 "ermlab vs PyTorch CPU; numbers: ermlab / PyTorch", fontsize=10)
    fig.text(0.5, 0.005, title, ha="center", fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.25,
                        help="seconds of steps per round (default 0.25)")
    parser.add_argument("--output", type=Path, default=IMAGE, help="the PNG to write")
    args = parser.parse_args()
    import torch

    start = time.perf_counter()
    configs = ([("batch", b, WIDTH_FOR_BATCHES, b) for b in BATCHES]
               + [("width", w, w, BATCH_FOR_WIDTHS) for w in WIDTHS])
    table, done = {}, {}
    for kind, value, width, batch in configs:
        if (width, batch) not in done:
            done[width, batch] = measure(width, batch, args.threads, args)
        table[kind, value] = done[width, batch]
    about = (f"numpy {np.__version__}, torch {torch.__version__}; {machine()}; "
             f"{args.rounds} alternated rounds, medians")
    print(f"MLP 784-w-w-10 step (forward, backward, {args.optimizer}), float32; {about}")
    print(f"{'sweep':6s} {'width':>6s} {'batch':>6s} {'threads':>7s} {'ermlab ms':>10s} "
          f"{'torch ms':>9s} {'ratio':>6s}")
    for kind, value, width, batch in configs:
        for threads, (ours, theirs) in table[kind, value].items():
            print(f"{kind:6s} {width:6d} {batch:6d} {threads:7d} {ours * 1e3:10.2f} "
                  f"{theirs * 1e3:9.2f} {ours / theirs:6.2f}")
    plot(table, args.threads, args.optimizer, about, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB) in "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
